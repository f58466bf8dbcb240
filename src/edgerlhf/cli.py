"""``edgerlhf`` command line: argument parsing only; each subcommand calls one stage function."""

from __future__ import annotations

import argparse
import os
import sys

from edgerlhf.config import STAGE_CONFIGS, ConfigError, config_help, load_config

# Presets: named sets of overrides, applied before the YAML file and the key=value overrides.
PRESETS: dict[str, dict[str, dict]] = {
    "sft": {
        # the demo: SmolLM2-135M on the built-in review task, a few minutes on 2 CPU cores
        "demo": {"model": "default", "max_steps": 40, "per_device_train_batch_size": 8, "learning_rate": 3e-4,
                 "logging_steps": 5, "max_eval_samples": 64},
        "smoke": {"model": "tiny", "max_steps": 4, "per_device_train_batch_size": 4, "max_eval_samples": 8,
                  "logging_steps": 1, "report_to": ["none"], "sample_max_new_tokens": 8, "gold_eval_prompts": 8},
    },
}


def _stage_parser(sub, stage: str, help_text: str, positional: tuple[str, str] | None = None):
    p = sub.add_parser(stage, help=help_text, description=help_text)
    if positional:  # before the key=value list, which takes every remaining word
        p.add_argument(positional[0], nargs="?", help=positional[1])
    p.add_argument("--config", "-c", help="YAML file of config keys")
    p.add_argument("--preset", choices=sorted(PRESETS.get(stage, {})), help="named settings applied before --config")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and help")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. learning_rate=1e-4")
    return p


def _load(stage: str, args) -> object:
    cls = STAGE_CONFIGS[stage]
    base = dict(PRESETS.get(stage, {}).get(args.preset, {})) if args.preset else {}
    return load_config(cls, args.config, args.overrides, base=base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgerlhf", description="RLHF (SFT -> reward model -> PPO) on one small machine.")
    sub = parser.add_subparsers(dest="command", required=True)
    _stage_parser(sub, "sft", "supervised fine-tuning with LoRA (stage 1)")
    _stage_parser(sub, "prefs", "preference pairs: sample k responses per prompt and label them with the gold scorer, or read a file (stage 2)")
    _stage_parser(sub, "reward", "reward model: Bradley-Terry training of a score head with LoRA (stage 3)")
    p = _stage_parser(sub, "rm-eval", "reward-model precision table: size, memory, latency, agreement with fp32",
                      positional=("rm_dir", "reward run folder (same as rm=...)"))
    p.add_argument("--precisions", help="comma-separated, e.g. fp32,bf16,int8,int4 (default: device-aware)")
    p = sub.add_parser("quantize", help="write a reward model quantized to a precision, that reloads as stored")
    p.add_argument("rm_dir", help="reward run folder")
    p.add_argument("--precision", required=True, help="fp32 | bf16 | fp16 | int8 | int4")
    p.add_argument("--out", help="output folder (default: <rm run>/rm-<precision>)")
    p.add_argument("--device", default="cpu")
    sub.add_parser("demo", help="the main job on the embedded default model and built-in task")
    # key=value words may come after options (e.g. `rm-eval RUN --precisions int8 batch_size=8`), which
    # argparse cannot match to a positional list once an option intervened: collect them here
    args, extra = parser.parse_known_args(argv)
    stray = [w for w in extra if "=" not in w or w.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command == "demo":
            from edgerlhf.stages import sft

            cfg = load_config(STAGE_CONFIGS["sft"], None, [], base=PRESETS["sft"]["demo"])
            sft.run(cfg)
            return 0
        if args.command == "quantize":
            from edgerlhf.models.precision import check_precision
            from edgerlhf.stages.rm_eval import quantize

            check_precision(args.precision)
            quantize(args.rm_dir, args.precision, args.out, args.device)
            return 0
        if args.command == "rm-eval" and not args.help_config:
            if args.rm_dir:
                args.overrides.append(f"rm={args.rm_dir}")
            if args.precisions:
                args.overrides.append(f"precisions={args.precisions}")
        if getattr(args, "help_config", False):
            print(config_help(STAGE_CONFIGS[args.command]))
            return 0
        cfg = _load(args.command, args)
        import importlib

        importlib.import_module(f"edgerlhf.stages.{args.command.replace('-', '_')}").run(cfg)
        return 0
    except ConfigError as e:
        print(f"edgerlhf {args.command}: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"edgerlhf {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nedgerlhf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
