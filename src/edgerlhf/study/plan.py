"""The memory planner (``edgerlhf plan``): each stage's peak predicted from the model's shape and the stage's
settings, before anything runs, and the settings that fit a budget. The terms and their byte counts are
:mod:`edgerlhf.study.memory_model` (its docstring says what each counts); which terms a stage has at its peak
follows the stage's kind in :mod:`edgerlhf.registry` (supervised, sampling, reward, online, pairs, evaluate), so a
new online algorithm is planned without a change here. Validated against the measured peaks of a study's stages
by :func:`validate` (``edgerlhf plan --validate STUDY``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

from edgerlhf import registry
from edgerlhf.config import ConfigError, unknown_key_message
from edgerlhf.config.refs import ensemble_meta, lora_shape
from edgerlhf.data.formatting import completion_text, encode_prompt
from edgerlhf.data.loaders import load_preference_rows, load_prompt_rows, load_sft_rows
from edgerlhf.data.task import eval_prompts, train_rows
from edgerlhf.data.taskfile import load_task
from edgerlhf.data.taskfile import stage_settings as task_settings
from edgerlhf.models.loading import load_tokenizer, resolve_model_path, tiny_config
from edgerlhf.presets import STAGE_PRESETS, STUDY_PRESETS
from edgerlhf.runfolder import RunFolder, find_artifact
from edgerlhf.study.memory_model import (
    CUDA_CONTEXT,
    PRECISION_BYTES,
    GiB,
    MiB,
    Shape,
    StagePlan,
    Term,
    activation_bytes,
    base_weights,
    chunk_logits_bytes,
    decode_logits_bytes,
    full_logits_bytes,
    kv_bytes,
    lora_params,
    pair_terms,
    phase_max,
    prompt_answer,
    shape_from_config,
    train_terms,
    weight_bytes,
    with_kept,
)

# every stage the planner has a memory model for (all but the RM precision table, which measures instead)
PLANNED_STAGES = tuple(s.name for s in registry.STAGES if s.kind != "measure")


def model_shape(model: str) -> Shape:
    """The shape of ``model`` (default, tiny, a folder or hub id) from its config, without loading weights."""
    if model == "tiny":
        return shape_from_config(tiny_config(len(load_tokenizer("tiny"))))
    from transformers import AutoConfig  # noqa: PLC0415 - transformers: heavy, and only for a real model's shape

    return shape_from_config(AutoConfig.from_pretrained(resolve_model_path(model)))


def runtime_bytes() -> int:
    """This process's resident size with the libraries every stage imports loaded: the runtime a stage starts
    from on this machine (measured, Linux; 0 where /proc is missing)."""
    # imported here on purpose: the point is to measure the process with the heavy libraries loaded
    import peft  # noqa: F401, PLC0415 - loaded here to be measured
    import torch  # noqa: F401, PLC0415 - loaded here to be measured
    import transformers  # noqa: F401, PLC0415 - loaded here to be measured

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Lengths(NamedTuple):
    """The longest prompt and answer of a task's data, in tokens as the stages encode them."""

    prompt: int
    answer: int
    sft_row: int  # the longest SFT row, prompt and completion together (what SFT's batches are padded to at worst)
    rows: int  # rows read


def task_lengths(task: str | None, model: str) -> Lengths:
    """Read a task's data (a task file, or the built-in task for None / 'builtin') and measure its longest prompt
    (chat-formatted, generation prompt included) and longest answer (a completion, chosen or rejected, with its
    end-of-turn): what a batch is padded to at worst."""
    t = load_task(task or "builtin")
    tok = load_tokenizer(model, t.chat_template)
    pairs: list[tuple[object, object]] = []  # (prompt, answer or None)
    sft_rows: list[tuple[object, object]] = []

    def rows_of(src: str, kind: str) -> list[dict]:
        if src == "builtin":
            return train_rows() if kind != "eval" else eval_prompts()
        if kind == "prefs":
            return load_preference_rows(src)[0]
        if kind == "sft":
            return load_sft_rows(src)[0]
        return [{"prompt": p} for p in load_prompt_rows(src)[0]]

    for src, kind in ((t.sft if not t.sft_from else "", "sft"), (t.prefs if t.prefs != "generate" else "", "prefs"),
                      (t.prompts, "prompts"), (t.eval_prompts, "eval")):
        if not src:
            continue
        for r in rows_of(src, kind):
            answers = [r[k] for k in ("completion", "chosen", "rejected") if k in r and kind in ("sft", "prefs")]
            pairs += [(r["prompt"], a) for a in answers] or [(r["prompt"], None)]
            if kind == "sft" or (kind == "prefs" and t.sft_from):
                sft_rows.append((r["prompt"], r["completion" if kind == "sft" else "chosen"]))

    def answer_tokens(prompt, answer) -> int:
        return len(tok(completion_text(tok, prompt, answer, t.chat_template), add_special_tokens=False)["input_ids"])

    P = A = S = 0
    for prompt, answer in pairs:
        P = max(P, len(encode_prompt(tok, prompt, t.chat_template)))
        if answer is not None:
            A = max(A, answer_tokens(prompt, answer))
    for prompt, answer in sft_rows:
        S = max(S, len(encode_prompt(tok, prompt, t.chat_template)) + answer_tokens(prompt, answer))
    if t.prefs == "generate" or not A:  # answers the SFT policy samples: the response budget
        A = max(A, t.response_length)
    return Lengths(P, A, S or P + A, len(pairs))


def _gold_rm(cfg, stage: str) -> bool:
    """Does the stage load a reward model as its gold (``gold`` = a reward run folder) at its peak? Online RL scores
    every rollout with it, eval scores the answers, SFT only for its after-training gold evaluation."""
    gold = str(getattr(cfg, "gold", "") or "")
    if not gold or gold in ("vader", "none", "auto") or ":" in gold.split("/")[-1]:
        return False
    kind = registry.get(stage).kind
    if kind == "supervised":
        return getattr(cfg, "gold_eval_prompts", 0) > 0
    return kind in ("online", "evaluate", "sampling")


def plan_stage(stage: str, cfg, s: Shape, *, device: str = "cpu", runtime: float = 0.0,
               prompt_tokens: int = 64, response_tokens: int = 48, sft_tokens: int | None = None) -> StagePlan:
    """The predicted peak of ``stage`` run with ``cfg`` on ``device`` (cpu | cuda): the terms of its largest phase.
    ``prompt_tokens`` / ``response_tokens``: the data's longest prompt (chat-formatted) and response in tokens.
    The settings bound them only loosely (``max_length`` caps a training row, ``response_length`` / ``max_new_tokens``
    a generated answer, nothing a prompt), and a batch is padded to its longest row, not to ``max_length``; the
    defaults are near the built-in task's (its prompts are up to 45 tokens with the chat template, answers 48);
    ``sft_tokens``: the longest SFT row (prompt and completion; default their sum)."""
    P, R = prompt_tokens, response_tokens
    gpu = device.startswith("cuda")
    cdt = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}.get(getattr(cfg, "dtype", "auto"), 2.0 if gpu else 4.0)
    base = [Term("CUDA context (outside allocated)", CUDA_CONTEXT)] if gpu else [Term("runtime (measured)", runtime)]
    W = weight_bytes(s, "fp32" if cdt == 4.0 else "bf16", cdt)
    kind = registry.get(stage).kind if stage in registry.names() else ""
    if kind == "supervised":
        # stages/sft.py: one model, LoRA (all blocks unless lora_layers), transformers' loss on full logits
        rows, T = cfg.per_device_train_batch_size, min(cfg.max_length, sft_tokens or P + R)
        blocks = cfg.lora_layers or s.layers
        phase, terms = "train step", [Term("policy weights", W),
                                      *train_terms(s, cfg, rows, T, cdt, blocks,
                                                   lora_params(s, cfg.lora_r, cfg.lora_layers)),
                                      Term("logits (full)", full_logits_bytes(s, rows, T))]
    elif kind == "sampling":
        # stages/prefs.py: the SFT policy samples rollout_batch_size sequences at a time
        rows, T = cfg.rollout_batch_size, P + cfg.max_new_tokens
        phase, terms = "generation", [Term("policy weights", W), Term("KV cache", kv_bytes(s, rows, T, cdt)),
                                      Term("decode logits", decode_logits_bytes(s, rows))]
    elif kind == "reward":
        # stages/reward.py: chosen and rejected of per_device_train_batch_size pairs, graph in the top lora_layers
        # (models/logprobs.py: the prompt once per pair, its KV cache copied to both answers)
        pairs, Lp, Lc = cfg.per_device_train_batch_size, *prompt_answer(cfg, P, R)
        blocks = cfg.lora_layers or s.layers
        phase, terms = "train step", [Term("RM weights", base_weights(s, cfg.base_precision, cdt)),
                                      *pair_terms(s, cfg, pairs, Lp, Lc, cdt, blocks)]
    elif kind == "online":
        # stages/online.py + models/roles.py: one base serves policy / reference / value, the RM at its precision
        # (its embedding shared with the policy's when the bytes are the same); rollouts, then the update
        Wp = base_weights(s, cfg.base_precision, cdt)
        rp = cfg.reward_precision.split(":")[0]
        Wr = weight_bytes(s, rp, cdt)
        ens = ensemble_meta(cfg.reward) if cfg.reward not in ("", "none", "random") else None
        way = getattr(cfg, "ensemble", "auto")
        if ens is not None and way not in ("warm",) and not way.startswith("member-"):
            # rewards/ensemble.py: K members on one base (their LoRA and heads in fp32) or K merged models; an
            # ensemble shares no weight with the policy
            k = len(ens["members"])
            shape = lora_shape(find_artifact(cfg.reward) / ens["members"][0]["name"])
            extra = (lora_params(s, shape.get("r") or 16, len(shape.get("layers") or []) or 0) + s.hidden) * 4.0
            Wr = Wr + k * extra if getattr(cfg, "ensemble_layout", "shared") == "shared" else k * Wr
        elif (PRECISION_BYTES[rp] if rp in ("fp32", "bf16", "fp16") else cdt) == cdt:
            Wr -= s.embed_params * cdt  # share_identical_weights: the RM uses the policy's embedding
        if cfg.reward == "none":  # the planner's word for a callable reward (online.run(reward_fn=...)): no RM
            Wr = 0.0
        T = P + cfg.response_length
        blocks = cfg.lora_layers or s.layers
        resident = [Term("policy / reference weights", Wp), Term("RM weights", Wr),
                    Term("LoRA + AdamW state", lora_params(s, cfg.lora_r, cfg.lora_layers) * 16.0
                         * (2 if getattr(cfg, "value_model", "head") == "adapter" else 1))]
        phase, terms = phase_max({
            "rollout": resident + [Term("KV cache", kv_bytes(s, cfg.rollout_batch_size, T, cdt)),
                                   Term("decode logits", decode_logits_bytes(s, cfg.rollout_batch_size))],
            "update": resident + with_kept([Term("activations", activation_bytes(
                s, cfg.mini_batch_size, T, blocks, cdt, cfg.lora_dropout, cfg.gradient_checkpointing)),
                Term("logits (chunk)", chunk_logits_bytes(s))], gpu or getattr(cfg, "lean_update", False)),
        })
    elif kind == "pairs":
        # stages/dpo.py: one base (the reference is the adapter switched off), chosen + rejected in the graph
        pairs, Lp, Lc = cfg.per_device_train_batch_size, *prompt_answer(cfg, P, R)
        blocks = cfg.lora_layers or s.layers
        phase, terms = "train step", [Term("policy / reference weights", W),
                                      *pair_terms(s, cfg, pairs, Lp, Lc, cdt, blocks)]
    elif kind == "evaluate":
        # stages/evaluate.py: CPU fp32 always; the policy and the baseline side by side while sampling, then the
        # policy and the RM
        Wf = weight_bytes(s, "fp32", 4.0)
        T = P + cfg.max_new_tokens
        two = cfg.baseline != "none"
        phase, terms = phase_max({
            "sampling": [Term("policy weights", Wf)] + ([Term("baseline weights", Wf)] if two else []) +
                        [Term("KV cache", kv_bytes(s, cfg.batch_size, T, 4.0)),
                         Term("decode logits", decode_logits_bytes(s, cfg.batch_size))],
            "scoring": [Term("policy weights", Wf)] + ([Term("RM weights", Wf)] if cfg.reward != "none" else []),
        })
        base = [Term("runtime (measured)", runtime)]
        device = "cpu"
    else:
        raise ValueError(f"no memory plan for stage {stage!r}; planned: {', '.join(PLANNED_STAGES)}")
    if kind in ("supervised", "reward", "pairs"):
        terms = with_kept(list(terms), gpu)
    if _gold_rm(cfg, stage):  # rewards/gold.py: an fp32 reward model beside everything else
        terms = list(terms) + [Term("gold RM weights", weight_bytes(s, "fp32", 4.0))]
    return StagePlan(stage, device, tuple(base + list(terms)), phase)


def _batch_key(stage: str) -> str:
    return {"prefs": "rollout_batch_size", "eval": "batch_size"}.get(
        stage, "mini_batch_size" if registry.get(stage).online else "per_device_train_batch_size")


def fits(stage: str, cfg, s: Shape, budget: float, **kw) -> list[str]:
    """What to change for ``stage`` to fit ``budget`` bytes: the largest micro-batch that fits with gradient
    checkpointing off and on (training stages), and the RM / base precisions that fit (online RL)."""
    def replace(c, **kw):
        return SimpleNamespace(**{**vars(c), **kw})

    key = _batch_key(stage)
    lines = []
    for ckpt in ((False, True) if hasattr(cfg, "gradient_checkpointing") and stage not in ("prefs", "eval")
                 else (None,)):
        best = 0
        b = 1
        while b <= 1024:
            c = replace(cfg, **{key: b}, **({} if ckpt is None else {"gradient_checkpointing": ckpt}))
            if plan_stage(stage, c, s, **kw).peak <= budget:
                best = b
            b *= 2
        what = "" if ckpt is None else f" (gradient_checkpointing={'true' if ckpt else 'false'})"
        lines.append(f"largest {key} that fits{what}: {best if best else 'none (even 1 is over)'}")
    if registry.get(stage).online:
        ok = [p for p in ("fp32", "bf16", "int8", "int4")
              if plan_stage(stage, replace(cfg, reward_precision=p), s, **kw).peak <= budget]
        lines.append(f"reward_precision that fits at these settings: {', '.join(ok) or 'none'}")
        okb = [p for p in ("fp32", "int8", "int4")
               if plan_stage(stage, replace(cfg, base_precision=p), s, **kw).peak <= budget]
        lines.append(f"base_precision that fits at these settings: {', '.join(okb) or 'none'}")
    return lines


def parse_size(text: str) -> float:
    """'8GB', '8GiB', '7.5G', '800MB' -> bytes (GB and GiB both read as 2**30: what a device reports)."""
    t = text.strip().upper().replace("IB", "B")
    for unit, mult in (("TB", 2**40), ("GB", GiB), ("MB", MiB), ("T", 2**40), ("G", GiB), ("M", MiB)):
        if t.endswith(unit):
            try:
                return float(t[: -len(unit)]) * mult
            except ValueError:
                break
    raise ValueError(f"cannot read the memory size {text!r}; write e.g. 8GB, 7.5GiB or 800MB")


def format_plan(plans: list[StagePlan], budget: float | None = None) -> str:
    lines = []
    for p in plans:
        verdict = "" if budget is None else ("  fits" if p.peak <= budget else "  OVER by "
                                                                               f"{(p.peak - budget) / MiB:,.0f} MiB")
        lines.append(f"{p.stage:<7} {p.device:<4} peak {p.peak / MiB:8,.0f} MiB ({p.phase}){verdict}")
        lines += [f"          {t.name:<34} {t.nbytes / MiB:8,.0f} MiB" for t in p.terms if t.nbytes]
    return "\n".join(lines)


def stage_settings(stage: str, *, preset: str = "quick", task: str | None = None, overrides: dict | None = None):
    """A stage's settings as a study would run it: the config's defaults < the task file's settings < the study
    preset's (and the stage preset it names) < ``overrides`` (applied to every stage that has the key). Unvalidated:
    the runs it would read need not exist yet."""
    cls = registry.get(stage).config
    raw: dict = {}
    if task:
        raw.update(task_settings(load_task(task), cls))
    study = dict(STUDY_PRESETS.get(preset, {}).get(stage, {}))
    if study.get("preset"):
        raw.update(STAGE_PRESETS.get(stage, {}).get(study.pop("preset"), {}))
    raw.update(study)
    raw.update(overrides or {})
    return _settings(cls, raw)


def check_override_keys(overrides: dict, stages) -> None:
    """Every key=value must name a setting of at least one planned stage, else a ConfigError with the config's own
    unknown-key message ("did you mean", keys renamed in other tools)."""
    configs = [registry.get(st).config for st in stages]
    known = sorted({f.name for c in configs for f in dataclasses.fields(c)})
    renamed = {k: v for c in configs for k, v in (getattr(c, "RENAMED", None) or {}).items()}
    bad = [unknown_key_message(k, known, ", ".join(stages), renamed) for k in overrides if k not in known]
    if bad:
        raise ConfigError(bad, "the plan's settings")


def plan_study(model: str = "default", *, device: str = "cpu", budget: float | None = None, stages=PLANNED_STAGES,
               preset: str = "quick", task: str | None = None, overrides: dict | None = None,
               prompt_tokens: int | None = None, response_tokens: int | None = None,
               sft_tokens: int | None = None) -> str:
    """``edgerlhf plan``: every stage's predicted peak at the study's settings, and, with a budget, what fits."""
    overrides = dict(overrides or {})
    check_override_keys(overrides, stages)
    if "model" in overrides:
        model = overrides.pop("model")
    shape = model_shape(model)
    if prompt_tokens is None or response_tokens is None:
        L = task_lengths(task, model)
        prompt_tokens = L.prompt if prompt_tokens is None else prompt_tokens
        response_tokens = L.answer if response_tokens is None else response_tokens
        sft_tokens = L.sft_row if sft_tokens is None else sft_tokens
        how = f"measured on the task's {L.rows:,} rows"
    else:
        how = "as given"
    gpu = device.startswith("cuda")
    runtime = 0.0 if gpu else runtime_bytes()
    kw = dict(device=device, runtime=runtime, prompt_tokens=prompt_tokens, response_tokens=response_tokens,
              sft_tokens=sft_tokens)
    plans, advice = [], []
    for st in stages:
        cfg = stage_settings(st, preset=preset, task=task, overrides=overrides)
        p = plan_stage(st, cfg, shape, **kw)
        plans.append(p)
        if budget is not None and p.peak > budget:
            advice.append(f"{st}: " + "; ".join(fits(st, cfg, shape, budget, **kw)))
    head = [f"memory plan: {model} ({shape.params / 1e6:,.0f} M parameters, {shape.layers} blocks, vocabulary "
            f"{shape.vocab:,}) on "
            f"{'a GPU (max_memory_allocated + the CUDA context)' if gpu else 'the CPU (resident set)'}"
            f", study preset {preset!r}{', task ' + task if task else ''}",
            f"longest prompt {prompt_tokens} tokens, longest answer {response_tokens}, longest SFT row "
            f"{sft_tokens or prompt_tokens + response_tokens} ({how})"
            + ("" if gpu else f"; runtime {runtime / MiB:,.0f} MiB measured here "
                              "(Python + torch + transformers + peft)")]
    if budget is not None:
        head.append(f"budget {budget / GiB:.2f} GiB: {sum(p.peak <= budget for p in plans)} of {len(plans)} stages fit")
    out = "\n".join(head) + "\n\n" + format_plan(plans, budget)
    if advice:
        out += "\n\nto fit the budget:\n" + "\n".join(f"  {a}" for a in advice)
    return out


class Check(NamedTuple):
    run: str
    stage: str
    predicted_mb: float
    measured_mb: float

    @property
    def error(self) -> float:
        return self.predicted_mb / self.measured_mb - 1


def _settings(cls, raw: dict):
    """A stage's recorded settings (its config.yaml) over the config class's defaults, unvalidated: the paths it
    names may be gone, only the numbers matter here."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    values.update({k: v for k, v in raw.items() if k in values})
    return SimpleNamespace(**values)


def validate(root: str | Path, *, runtime: float, prompt_tokens: int = 64, response_tokens: int = 48,
             sft_tokens: int | None = None) -> list[Check]:
    """Predict the peak of every finished stage run under ``root`` from its config.yaml and compare it with the
    ``memory/peak_mb`` it measured (the kernel's high-water mark on a CPU; max_memory_allocated on a GPU)."""
    out, shapes = [], {}
    for summary in sorted(Path(root).rglob("summary.json")):
        run = RunFolder(summary.parent)
        try:
            s = run.summary
        except ValueError:
            continue
        stage, measured = s.get("stage"), s.get("memory/peak_mb")
        if stage not in PLANNED_STAGES or s.get("status") != "finished" or not isinstance(measured, (int, float)):
            continue
        raw = run.config
        cfg = _settings(registry.get(stage).config, raw)
        model = raw.get("model", "default")
        if model not in shapes:
            shapes[model] = model_shape(model)
        device = "cuda" if str(s.get("device", "cpu")).startswith("cuda") else "cpu"
        p = plan_stage(stage, cfg, shapes[model], device=device, runtime=runtime, prompt_tokens=prompt_tokens,
                       response_tokens=response_tokens, sft_tokens=sft_tokens)
        predicted = p.peak - (p.term("CUDA context (outside allocated)") if device == "cuda" else 0)
        out.append(Check(run.name, stage, predicted / MiB, float(measured)))
    return out


def format_checks(checks: list[Check]) -> str:
    lines = ["| run | stage | predicted MiB | measured MiB | error |", "|---|---|---|---|---|"]
    lines += [f"| {c.run} | {c.stage} | {c.predicted_mb:,.0f} | {c.measured_mb:,.0f} | {c.error:+.1%} |"
              for c in checks]
    if checks:
        worst = max(checks, key=lambda c: abs(c.error))
        within = sum(abs(c.error) <= 0.20 for c in checks)
        lines.append(f"\n{within} of {len(checks)} within ±20%; largest error {worst.error:+.1%} ({worst.run}); "
                     f"mean |error| {sum(abs(c.error) for c in checks) / len(checks):.1%}")
    return "\n".join(lines)
