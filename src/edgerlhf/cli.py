"""``edgerlhf`` command line: argument parsing only; each subcommand calls one stage function."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys

import torch

from edgerlhf import registry
from edgerlhf.config import ConfigError, UserCodeError, config_help, load_config, parse_overrides
from edgerlhf.distributed import LaunchError, require_one_process
from edgerlhf.models.export import export_gguf_adapter, export_policy, load_for_export
from edgerlhf.models.generation import generate
from edgerlhf.models.precision import check_precision
from edgerlhf.rewards.serving import load_reward_spec
from edgerlhf.stages.bon import best_of
from edgerlhf.stages.deploy import export_all, export_gguf_checked
from edgerlhf.stages.online import resume_base
from edgerlhf.stages.rm_eval import quantize
from edgerlhf.study import plan
from edgerlhf.study.pipeline import run_study
from edgerlhf.study.power_plan import plan_power
from edgerlhf.study.sequential import run_sequential
from edgerlhf.study.stats import DEFAULT_MARGIN
from edgerlhf.tracking.listing import compare_table, runs_table


def _stage_parser(sub, stage: registry.Stage):
    p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
    if stage.positional:  # before the key=value list, which takes every remaining word
        p.add_argument(stage.positional[0], nargs="?", help=stage.positional[2])
    p.add_argument("--config", "-c", help="YAML file of config keys")
    if stage.presets:  # only where the stage has presets
        p.add_argument("--preset", choices=sorted(stage.presets), help="named settings applied before --config "
                       "(smoke: the tiny random model, seconds)")
    p.add_argument("--task", help="task file (YAML): data, gold, response length (same as task=FILE); 'builtin' is the "
                                  "shipped default")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and help")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. learning_rate=1e-4")
    return p


def _load(stage: registry.Stage, args) -> object:
    preset = getattr(args, "preset", None)
    base = dict(stage.presets.get(preset, {})) if preset else {}
    if stage.online:  # `edgerlhf ppo resume=RUN` continues RUN with its stored config
        resume = parse_overrides(list(args.overrides)).get("resume")
        if resume:
            base = {**resume_base(str(resume)), **base}
    overrides = list(args.overrides) + ([f"task={args.task}"] if args.task else [])
    return load_config(stage.config, args.config, overrides, base=base)


def _is_override(word: str) -> bool:
    """``key=value`` (a config override) rather than a folder name: a key-like word before the first '='."""
    return re.match(r"^[A-Za-z_][A-Za-z0-9_-]*=", word) is not None


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: use comma-separated integers, e.g. {flag} 1,2,3") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgerlhf", description="RLHF (SFT -> reward model -> PPO / GRPO / RLOO) on "
                                                                  "one small machine.")
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in registry.STAGES:
        p = _stage_parser(sub, stage)
        if stage.name == "rm-eval":
            p.add_argument("--precisions", help="comma-separated, e.g. fp32,bf16,int8,int4 (default: device-aware)")
    p = sub.add_parser("quantize", help="write a reward model quantized to a precision, that reloads as stored")
    p.add_argument("rm_dir", help="reward run folder")
    p.add_argument("--precision", required=True, help="fp32 | bf16 | fp16 | int8 | int4")
    p.add_argument("--out", help="output folder (default: <rm run>/rm-<precision>)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ensemble", default="auto", help="an ensemble RM: warm (its weight-averaged model) or member-N")
    sub.add_parser("demo", help="the main job: `edgerlhf run --preset quick` on the embedded default model and task")
    p = sub.add_parser("run", help="the precision study end to end: SFT -> prefs -> RM -> RM at each precision -> each "
                                   "algorithm per precision and seed -> eval -> report (finished stages are reused)")
    p.add_argument("--preset", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--precisions", help="comma-separated RM precisions (default: fp32,int8,int4 on CPU, bf16,int8,int4 "
                                        "on GPU)")
    p.add_argument("--model", help="base model (default: the preset's: embedded SmolLM2-135M, or tiny for smoke)")
    p.add_argument("--seed", type=int, default=42, help="base seed: SFT, preference pairs, the RM and every "
                                                        "evaluation's "
                                                        "sampling (so evaluations are paired by prompt)")
    p.add_argument("--seeds", help="comma-separated seeds that replicate each configuration's training, e.g. 1,2,3 "
                                   "(default: the base seed only; the base seed's runs keep their names, so a study "
                                   "extended by seeds reuses them); auto: seeds added in rounds until every "
                                   "comparison is decided (a group-sequential design), at most --max-seeds")
    p.add_argument("--max-seeds", type=int, default=5, metavar="M",
                   help="--seeds auto: the most seeds it may add up to (default 5)")
    p.add_argument("--algorithms", default="ppo", help=f"comma-separated: {', '.join(registry.algorithms())}; an "
                                                       "RM-based "
                                                       "one may name its own precisions, e.g. ppo,grpo@fp32,dpo "
                                                       "(default: ppo)")
    p.add_argument("--rm-per-seed", action="store_true", help="also retrain the reward model with each seed (the "
                                                              "precision question's other source of variance)")
    p.add_argument("--no-bon", action="store_true", help="skip the best-of-n stage (N candidates per held-out prompt "
                                                         "from the SFT policy, ranked by the RM at each precision)")
    p.add_argument("--bon-precisions", help="comma-separated precisions best-of-n ranks with (default: every precision "
                                            "of the study; each must be one of them)")
    p.add_argument("--reward-ensemble", type=int, default=0, metavar="K",
                   help="also train an RM ensemble of K members (member 0 = the study's RM) for arms that name one: "
                        "--algorithms ppo,ppo@int4~uwo (ways: mean, min, uwo, warm); best-of-n ranks with it too")
    p.add_argument("--executor", default="local", metavar="local|ray[:ADDRESS]",
                   help="local (default): one stage after the other; ray: every stage a Ray task as soon as its inputs "
                        "exist, on a local Ray cluster or the one at ADDRESS (pip install 'edgerlhf[ray]'; the study "
                        "folder on storage every worker sees)")
    p.add_argument("--max-parallel", type=int, default=0, metavar="N",
                   help="--executor ray: at most N stages at once (0: as many as the cluster's resources take; on one "
                        "machine each stage then gets its CPUs / N)")
    p.add_argument("--stage-threads", type=int, default=0, metavar="N",
                   help="torch threads per stage (0: all cores under --executor local, CPUs / --max-parallel under "
                        "ray); float sums depend on the split over threads, so two executors give bit-identical "
                        "numbers at the same N (otherwise the same study statistically)")
    p.add_argument("--plan-power", nargs="?", const="", default=None, metavar="STUDY",
                   help="instead of running: from a pilot study (2+ seeds; default: the last under studies/), the "
                        "seeds each comparison needs at 80%% power to detect --detect or to certify equivalence "
                        "within the margin, and the hours they take here at --max-parallel stages at a time")
    p.add_argument("--detect", type=float, default=None, metavar="D",
                   help="--plan-power: the difference to detect, in gold units (default: each comparison's margin)")
    p.add_argument("--equivalence-margin", default=DEFAULT_MARGIN,
                   help="margin of the equivalence verdicts (TOST), fixed before the study: a number in gold units "
                        f"(0.05) or a share of the reference configuration's gain (default "
                        f"{DEFAULT_MARGIN.replace('%', '%%')})")  # argparse %-formats help: 10%% prints 10%
    p.add_argument("--task", help="task file (YAML) naming SFT data, preference pairs or prompts to sample them for, "
                                  "RL and evaluation prompts, the gold scorer and the response length (README: "
                                  "'Your own task'); default: the built-in review task")
    p.add_argument("--out", help="study folder (default: studies/<preset>[-<task>]-<model>-seed<seed>; rerun to reuse)")
    p.add_argument("--device", default="auto")
    p.add_argument("--report-to", default="tensorboard", help="comma-separated: none | tensorboard | mlflow | wandb")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p = sub.add_parser("plan", help="predict each stage's peak memory before running it, and what fits a budget")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="settings, applied to every stage that has the key")
    p.add_argument("--model", default="default", help="default | tiny | a model folder | a hub id")
    p.add_argument("--vram", help="GPU memory budget (e.g. 8GB): plans for a CUDA device, bf16")
    p.add_argument("--ram", help="CPU memory budget (e.g. 16GB): plans for the CPU, fp32")
    p.add_argument("--stage", default="", help="comma-separated stages to plan (default: every planned one: "
                   f"{', '.join(plan.PLANNED_STAGES)})")
    p.add_argument("--preset", default="quick", help="study preset whose settings to plan (default: quick, the demo)")
    p.add_argument("--task", help="task file: its settings, and its data's longest prompt and answer")
    p.add_argument("--prompt-tokens", type=int, help="longest prompt in tokens (default: measured on the task's data)")
    p.add_argument("--response-tokens", type=int,
                   help="longest answer in tokens (default: measured on the task's data)")
    p.add_argument("--validate", metavar="STUDY", help="instead: predict every finished stage under STUDY from its "
                   "config.yaml and compare with the peak it measured")
    p = sub.add_parser("runs", help="list run folders: stage, status, wall time, peak memory, key metrics")
    p.add_argument("root", nargs="?", default=".", help="folder to search (default: here; e.g. runs/ or a study)")
    p = sub.add_parser("compare", help="side-by-side table of runs: differing config keys and every summary number")
    p.add_argument("run_dirs", nargs="+")
    p = sub.add_parser("export", help="write a policy (LoRA merged) as a Hugging Face model folder or a GGUF file")
    p.add_argument("policy_dir", help="PPO / GRPO / RLOO / DPO or SFT run folder, a folder written by --merge, or "
                   "a base model name (default, tiny) to export the base unchanged")
    p.add_argument("--merge", metavar="OUT", help="output folder: a plain Hugging Face model (safetensors)")
    p.add_argument("--gguf", nargs=2, metavar=("TYPE", "OUT.gguf"),
                   help="one GGUF file for llama.cpp / Ollama / LM Studio, TYPE f16 | q8_0 | q4_0 | q4_1 | q4_mixed "
                   "(q4_1 with the most sensitive tensor kinds at q8_0), with an Ollama Modelfile beside it "
                   "(OUT.Modelfile); then the share of the policy's gold gain the file keeps is measured (--no-check "
                   "skips it). `--gguf all DIR`: every type, the policy's LoRA as an adapter on a q8_0 and a q4_0 "
                   "base, and one table of sizes, agreement and gains kept")
    p.add_argument("--gguf-adapter", metavar="OUT.gguf",
                   help="the policy's own LoRA (its RL / DPO delta, not merged) as a llama.cpp GGUF adapter at F16, "
                   "for a base file of any type (the run's SFT policy exported with --gguf); Ollama: ADAPTER")
    p.add_argument("--mixed-keep", type=int, default=2, metavar="N",
                   help="q4_mixed: how many tensor kinds (attn_q, ffn_down, ...) to keep at q8_0, the ones the policy "
                   "is most sensitive to, measured before writing (default 2)")
    p.add_argument("--no-check", action="store_true", help="--gguf: skip reloading the file to measure it against "
                   "the policy (greedy agreement, and the gain kept on the run's held-out prompts and gold)")
    p.add_argument("--loader", default="auto", choices=("auto", "transformers", "llama.cpp"),
                   help="--gguf: what samples the file for the gain kept (auto: llama.cpp when llama-cpp-python is "
                   "installed, else transformers' GGUF loader)")
    p.add_argument("--check-samples", type=int, default=1, metavar="N",
                   help="--gguf: responses per held-out prompt for the gain kept (one sampling seed each, the same for "
                   "the policy, its SFT policy and the file): more narrows the interval (default 1)")
    p.add_argument("--check-prompts", type=int, default=0, metavar="N",
                   help="--gguf: held-out prompts for the gain kept (default: as many as the run's own gold "
                   "evaluation)")
    p.add_argument("--system", default=None, metavar="TEXT",
                   help="the system message the export carries (default: the one the policy was trained with, "
                   "recorded in its run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for name, text in (("generate", "sample a response from a policy"), ("chat", "chat with a policy (empty line or "
                                                                                 "Ctrl-D ends)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("policy_dir", help="PPO / GRPO / RLOO / DPO or SFT run folder, or an exported model folder")
        if name == "generate":
            p.add_argument("prompt")
        p.add_argument("--max-new-tokens", type=int, default=96)
        p.add_argument("--temperature", type=float, default=0.7, help="0: greedy")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--best-of", type=int, default=1, metavar="N", help="sample N responses and keep the one the "
                       "reward model scores highest (needs reward=RM[:precision])")
        p.add_argument("--reward", default="", metavar="RM[:precision]",
                       help="with --best-of (also written reward=RM[:precision]): a reward run folder or quantized RM "
                            "folder, optionally :fp32 | bf16 | int8 | int4")
        p.add_argument("--ensemble", default="auto", help="with --best-of and an RM ensemble: mean | min | uwo | "
                       "warm | member-N (auto: mean)")
    # key=value words may come after options (e.g. `rm-eval RUN --precisions int8 batch_size=8`), which
    # argparse cannot match to a positional list once an option intervened: collect them here
    args, extra = parser.parse_known_args(argv)
    if args.command in ("generate", "chat"):  # `generate RUN PROMPT --best-of 8 reward=RM:int4`
        words = [w for w in extra if w.startswith("reward=")]
        extra = [w for w in extra if w not in words]
        args.reward = words[-1].removeprefix("reward=") if words else args.reward
    stray = [w for w in extra if "=" not in w or w.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command not in registry.data_parallel_stages():  # under a launcher: the training stages only
            require_one_process(f"edgerlhf {args.command}", registry.data_parallel_stages())
        if args.command == "run" and args.plan_power is not None:
            print(plan_power(args.plan_power or None, detect=args.detect, parallel=max(args.max_parallel, 1)))
            return 0
        if args.command in ("demo", "run"):
            if args.command == "demo":
                run_study("quick")
            else:
                auto = args.seeds == "auto"
                runner = functools.partial(run_sequential, max_seeds=args.max_seeds) if auto else run_study
                seeds = {} if auto else {"seeds": _int_list(args.seeds, "--seeds")}
                runner(args.preset, precisions=args.precisions.split(",") if args.precisions else None,
                       model=args.model, seed=args.seed, **seeds,
                       algorithms=args.algorithms, rm_per_seed=args.rm_per_seed, task=args.task, out=args.out,
                       device=args.device, progress=not args.no_progress, report_to=args.report_to.split(","),
                       bon=not args.no_bon,
                       bon_precisions=args.bon_precisions.split(",") if args.bon_precisions else None,
                       equivalence_margin=args.equivalence_margin, reward_ensemble=args.reward_ensemble,
                       executor=args.executor, max_parallel=args.max_parallel, stage_threads=args.stage_threads)
            return 0
        if args.command == "plan":
            return _plan(args, parser)
        if args.command == "runs":
            print(runs_table(args.root))
            return 0
        if args.command == "compare":
            print(compare_table(args.run_dirs))
            return 0
        if args.command == "export":
            if not (args.merge or args.gguf or args.gguf_adapter):
                parser.error("export needs --merge OUT (a Hugging Face folder), --gguf TYPE OUT.gguf or --gguf-adapter "
                             "OUT.gguf (or several)")
            if args.merge:
                export_policy(args.policy_dir, args.merge, system=args.system)
            if args.gguf:
                how = dict(check=not args.no_check, progress=not args.no_progress, system=args.system,
                           mixed_keep=args.mixed_keep, loader=args.loader, samples=args.check_samples,
                           num_prompts=args.check_prompts)
                if args.gguf[0] == "all":
                    export_all(args.policy_dir, args.gguf[1], **how)
                else:
                    export_gguf_checked(args.policy_dir, args.gguf[0], args.gguf[1], **how)
            if args.gguf_adapter:
                export_gguf_adapter(args.policy_dir, args.gguf_adapter)
            return 0
        if args.command in ("generate", "chat"):
            return _talk(args)
        if args.command == "quantize":
            check_precision(args.precision)
            quantize(args.rm_dir, args.precision, args.out, args.device, args.ensemble)
            return 0
        stage = registry.get(args.command)
        if stage.positional:
            pos, key, _ = stage.positional
            value = getattr(args, pos, None)
            if value and not args.help_config:  # the folder, or (no folder given) the first key=value
                args.overrides.insert(0, value if _is_override(value) else f"{key}={value}")
        if args.command == "rm-eval" and not args.help_config:
            if args.precisions:
                args.overrides.append(f"precisions={args.precisions}")
        if getattr(args, "help_config", False):
            print(config_help(stage.config))
            return 0
        stage.runner()(_load(stage, args))
        return 0
    except ConfigError as e:
        print(f"edgerlhf {args.command}: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError, LaunchError) as e:
        print(f"edgerlhf {args.command}: {e}", file=sys.stderr)
        return 2
    except UserCodeError as e:  # the user's gold / reward code raised: its frames, not ours
        print(f"edgerlhf {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nedgerlhf {args.command}: interrupted", file=sys.stderr)
        return 130


def _plan(args, parser) -> int:
    if args.validate:
        L = plan.task_lengths(args.task, args.model)
        checks = plan.validate(args.validate, runtime=plan.runtime_bytes(),
                               prompt_tokens=args.prompt_tokens or L.prompt,
                               response_tokens=args.response_tokens or L.answer,
                               sft_tokens=None if (args.prompt_tokens or args.response_tokens) else L.sft_row)
        if not checks:
            print(f"edgerlhf plan: no finished stage run with a measured peak under {args.validate}", file=sys.stderr)
            return 2
        print(plan.format_checks(checks))
        return 0
    if args.vram and args.ram:
        parser.error("plan takes --vram (a GPU) or --ram (the CPU), not both")
    stages = [s.strip() for s in args.stage.split(",") if s.strip()] or list(plan.PLANNED_STAGES)
    bad = [s for s in stages if s not in plan.PLANNED_STAGES]
    if bad:
        parser.error(f"--stage: no memory plan for {', '.join(bad)}; planned: {', '.join(plan.PLANNED_STAGES)}")
    budget = plan.parse_size(args.vram or args.ram) if (args.vram or args.ram) else None
    print(plan.plan_study(args.model, device="cuda" if args.vram else "cpu", budget=budget, stages=stages,
                          preset=args.preset, task=args.task, overrides=parse_overrides(args.overrides or []),
                          prompt_tokens=args.prompt_tokens, response_tokens=args.response_tokens))
    return 0


def _best_of_reward(args):
    """``--best-of N reward=RM[:precision]``: the RM loaded as a scorer, or None without --best-of."""
    spec = args.reward
    if args.best_of < 1:
        raise ValueError(f"--best-of {args.best_of}: N must be at least 1")
    if args.best_of == 1:
        if spec:
            raise ValueError("a reward is only used with --best-of N (N >= 2): add --best-of 8, or drop the reward")
        return None
    if args.temperature <= 0:
        raise ValueError("--best-of needs sampling: a --temperature above 0 (greedy decoding makes every sample the "
                         "same)")
    return load_reward_spec(spec, ensemble=args.ensemble)


def _talk(args) -> int:
    """``generate`` and ``chat``: the policy as a chat model (the same template it was trained with)."""
    rm = _best_of_reward(args)  # checked before the policy loads
    model, tok, _ = load_for_export(args.policy_dir)  # a policy run, an exported folder, or a base model name

    def reply(messages) -> str:
        if rm is not None:
            text, score, cands = best_of(model, tok, [messages], args.best_of, rm, temperature=args.temperature,
                                         max_new_tokens=args.max_new_tokens, seed=args.seed)[0]
            scores = ", ".join(f"{s:+.2f}" for _, s in cands)
            print(f"[best-of-{args.best_of}] RM scores {scores}; kept {score:+.2f}", file=sys.stderr)
            return text
        torch.manual_seed(args.seed)
        return generate(model, tok, [messages], max_new_tokens=args.max_new_tokens, temperature=args.temperature)[0][0]

    if args.command == "generate":
        print(reply(args.prompt))
        return 0
    history: list[dict] = []
    print("chat: type a message; an empty line or Ctrl-D ends")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        history.append({"role": "user", "content": line})
        text = reply(history)
        history.append({"role": "assistant", "content": text})
        print(f"bot> {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
