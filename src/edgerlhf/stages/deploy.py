"""What an exported file keeps of the alignment gain: the last step of ``edgerlhf export --gguf TYPE`` (on unless
``--no-check``) and ``edgerlhf export --gguf all DIR`` (every type, the policy's LoRA as an adapter on a Q8_0 and a
Q4_0 base, and one table). Measured as ``edgerlhf eval FILE.gguf`` measures it: the held-out prompts and gold of
the run, the policy and its SFT baseline sampled once, each file sampled with the same seed, and the share of the
policy's gold gain the file keeps with a 95% bootstrap interval over prompts. Not a registered stage: it writes
files, not a run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

from edgerlhf.config.stages import EvalConfig
from edgerlhf.data.taskfile import held_out_prompts
from edgerlhf.models.adapters import load_policy
from edgerlhf.models.export import CHECK_PROMPTS, export_gguf, export_gguf_adapter, load_for_export
from edgerlhf.models.gguf_adapter import file_loader, llamacpp_samples, load_gguf_model
from edgerlhf.models.gguf_export import GGUF_TYPES, check_gguf
from edgerlhf.rewards.gold import gold_eval, make_gold
from edgerlhf.rewards.metrics import delta_kept
from edgerlhf.runfolder import RunFolder, find_artifact, is_run_folder, read_artifact_meta
from edgerlhf.stages.evaluate import file_vs_policy
from edgerlhf.tracking.run import atomic_write_text

KEEP_WARN = 0.9  # below this share of the policy's gain, the export warns
ADAPTER_BASES = ("q8_0", "q4_0")  # the bases `--gguf all` puts the policy's LoRA on


def gain_setup(policy: str | Path, num_prompts: int = 0) -> tuple[dict | None, str]:
    """(what the gain check samples, "") for a policy run with an SFT baseline, held-out prompts and a gold, or
    (None, why not). ``num_prompts``: the first N held-out prompts (0: as many as the run's own gold evaluation,
    else eval's default)."""
    try:
        art = find_artifact(Path(policy).expanduser())
    except FileNotFoundError:
        return None, f"{policy} is not a policy run (no baseline and gold recorded)"
    meta = read_artifact_meta(art)
    if not meta.get("sft"):
        return None, f"{policy} ({meta.get('stage')}) has no SFT policy it started from to measure a gain over"
    run = art.parent if is_run_folder(art.parent) else None
    cfg = RunFolder(run).config if run is not None else {}
    gold = cfg.get("gold", "vader")
    prompts = cfg.get("eval_prompts", "")
    if gold == "none":
        return None, f"{run or art} was trained without a gold scorer (gold=none): no gain to measure"
    own_data = any(cfg.get(k, "builtin") not in ("", "builtin") for k in ("prompts", "dataset"))
    if not prompts and own_data:
        return None, (f"{run or art} trained on its own data and names no held-out eval_prompts; measure the file "
                      "with `edgerlhf eval FILE.gguf prompts=HELD_OUT gold=GOLD`")
    ev = EvalConfig(policy=str(art))  # the eval stage's sampling settings
    return {"art": art, "meta": meta, "gold": gold, "prompts_file": prompts,
            "prompts": held_out_prompts(prompts, num_prompts or int(cfg.get("gold_eval_prompts") or ev.num_prompts)),
            "sample": dict(temperature=ev.temperature, max_new_tokens=ev.max_new_tokens, seed=ev.seed,
                           batch_size=ev.batch_size)}, ""


def _samples(draw, k: int, seed: int) -> tuple[list[str], list[float]]:
    """``k`` responses per prompt (sampling seeds ``seed`` .. ``seed + k - 1``): all texts, seed-major, and each
    prompt's mean gold over its ``k``."""
    texts, golds = [], []
    for j in range(k):
        t, g = draw(seed + j)
        texts += t
        golds.append(g)
    return texts, [sum(col) / k for col in zip(*golds)]


def measure_gain(policy: str | Path, files: list[tuple[Path, Path | None]], *, loader: str = "auto",
                 samples: int = 1, num_prompts: int = 0, progress: bool = True) -> tuple[list[dict], str]:
    """For each (file, adapter or None): the share of the policy's gold gain it keeps (``eval/gain_kept`` and its
    95% CI over prompts) and its share of identical responses, the policy and its baseline sampled once for all;
    ``samples`` responses per prompt from each (seeds seed .. seed + samples - 1), a prompt's score their mean.
    Returns ([] , why) when the run allows no such check."""
    if samples < 1:
        raise ValueError(f"samples={samples}: at least one response per prompt")
    setup, why = gain_setup(policy, num_prompts)
    if setup is None:
        return [], why
    loader = file_loader(loader)
    gold, prompts, sample = make_gold(setup["gold"]), setup["prompts"], dict(setup["sample"])
    seed = sample.pop("seed")
    art, meta = setup["art"], setup["meta"]

    def by_torch(model, tok):
        def draw(s):
            res = gold_eval(model, tok, prompts, **sample, seed=s, progress=progress, gold=gold)
            return res["responses"], res["gold"]
        return draw

    model, tok, _ = load_policy(art)
    src_texts, src_g = _samples(by_torch(model, tok), samples, seed)
    del model
    base, btok, _ = load_policy(art / meta["sft"])
    _, base_g = _samples(by_torch(base, btok), samples, seed)
    del base
    rows = []
    for file, adapter in files:
        if loader == "llama.cpp":
            def draw(s, file=file, adapter=adapter):
                t = llamacpp_samples(file, adapter, tok, prompts, chat=bool(meta.get("use_chat_template", True)),
                                     temperature=sample["temperature"], max_new_tokens=sample["max_new_tokens"], seed=s)
                return t, gold(prompts, t)
            texts, g = _samples(draw, samples, seed)
        else:
            texts, g = _samples(by_torch(load_gguf_model(file, adapter), tok), samples, seed)
        row = file_vs_policy({"responses": src_texts, "gold": src_g}, texts, g, base_g,
                             f"{file} + {adapter}" if adapter else file, art)
        row["file_loader"] = loader if loader == "llama.cpp" else row["file_loader"]
        row.update({"prompts": len(prompts), "samples_per_prompt": samples, "gold": setup["gold"],
                    "scores": {"file": g, "policy": src_g, "baseline": base_g}})  # per prompt (mean of samples)
        rows.append(row)
    return rows, ""


def _say_gain(row: dict) -> None:
    if "eval/gain_kept" not in row:
        print(f"[export] gain kept: not measured ({row.get('why', 'no gold')})")
        return
    kept, lo, hi = row["eval/gain_kept"], row["eval/gain_kept_ci95_low"], row["eval/gain_kept_ci95_high"]
    per = f", {row['samples_per_prompt']} samples each" if row.get("samples_per_prompt", 1) > 1 else ""
    print(f"[export] gain kept: {kept:.1%} (95% CI {lo:.1%} .. {hi:.1%} over {row['prompts']} held-out prompts{per}) "
          f"of the policy's gold gain {row['source/gold_gain']:+.3f} ({row['gold']}), sampled by {row['file_loader']}; "
          f"same responses as the policy for {row['eval/same_responses']:.0%} of samples")
    if math.isnan(kept):
        print("[export] the policy gained nothing over its SFT policy on these prompts: there is no gain to keep")
    elif kept < KEEP_WARN:
        print(f"[export] WARNING: the file keeps less than {KEEP_WARN:.0%} of the alignment gain; write q8_0 or f16, "
              "or the policy's LoRA as an adapter on a 4-bit base (--gguf-adapter)")


def export_gguf_checked(policy: str | Path, kind: str, out: str | Path, *, check: bool = True, progress: bool = True,
                        system: str | None = None, mixed_keep: int = 2, loader: str = "auto", samples: int = 1,
                        num_prompts: int = 0) -> dict:
    """``export_gguf``, then (``check``) the share of the policy's alignment gain the file keeps, warned about below
    90%. Returns everything measured."""
    res = export_gguf(policy, kind, out, check=check, progress=progress, system=system, mixed_keep=mixed_keep)
    if check:
        rows, why = measure_gain(policy, [(Path(out), None)], loader=loader, samples=samples, num_prompts=num_prompts,
                                 progress=progress)
        if rows:
            res.update(rows[0])
            _say_gain(rows[0])
        else:
            print(f"[export] gain kept: not measured: {why}")
    return res


def export_all(policy: str | Path, out_dir: str | Path, *, check: bool = True, progress: bool = True,
               system: str | None = None, mixed_keep: int = 2, loader: str = "auto", samples: int = 1,
               num_prompts: int = 0) -> list[dict]:
    """Every GGUF type of the policy into ``out_dir`` (``<type>.gguf`` with its Modelfile), and for a LoRA policy with
    an SFT policy its LoRA as an F16 adapter (``adapter.gguf``) on that SFT policy written at Q8_0 and Q4_0
    (``base-<type>.gguf``); then one table: size, greedy next token kept, answers identical, gain kept, and for
    q8_0 / q4_0 and the adapter on them the gain kept over the SFT policy at that type (measured too, as control
    rows: what quantisation alone does to the gold). Written to ``out_dir/table.md`` and ``out_dir/results.json``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another folder (nothing was overwritten)")
    art = find_artifact(Path(policy).expanduser())
    meta = read_artifact_meta(art)
    with_adapter = meta.get("kind") == "lora" and bool(meta.get("sft"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in GGUF_TYPES:
        r = export_gguf(policy, kind, out_dir / f"{kind}.gguf", check=check, progress=progress, system=system,
                        mixed_keep=mixed_keep)
        rows.append({"type": kind, "file": out_dir / f"{kind}.gguf", "adapter": None, "mib": r["file_bytes"] / 2**20,
                     **{k: r[k] for k in ("top1_agreement", "greedy_identical") if k in r}})
    if with_adapter:
        ad = export_gguf_adapter(policy, out_dir / "adapter.gguf", base_file=f"base-{ADAPTER_BASES[-1]}.gguf",
                                 base_type=ADAPTER_BASES[-1])
        model, tok, _ = load_for_export(policy) if check else (None, None, None)
        chat = bool(meta.get("use_chat_template", True))
        for kind in ADAPTER_BASES:
            base = out_dir / f"base-{kind}.gguf"
            b = export_gguf(art / meta["sft"], kind, base, check=False, progress=progress, system=system)
            row = {"type": f"adapter on {kind}", "file": base, "adapter": out_dir / "adapter.gguf",
                   "mib": (b["file_bytes"] + ad["file_bytes"]) / 2**20}
            if check:  # the same greedy check as the files', with the adapter applied on the base
                c = check_gguf(base, model, tok, CHECK_PROMPTS, chat_template=chat,
                               reloaded=load_gguf_model(base, out_dir / "adapter.gguf"))
                row.update({"top1_agreement": c.top1_agreement, "greedy_identical": c.greedy_identical})
            rows.append(row)
        del model
    if check:
        # with an adapter: its two bases too, the SFT policy alone at q8_0 / q4_0 (what quantisation does without RL)
        controls = [out_dir / f"base-{k}.gguf" for k in ADAPTER_BASES] if with_adapter else []
        gains, why = measure_gain(policy, [(r["file"], r["adapter"]) for r in rows] + [(c, None) for c in controls],
                                  loader=loader, samples=samples, num_prompts=num_prompts, progress=progress)
        if not gains:
            print(f"[export] gain kept: not measured: {why}")
        else:
            for k in ADAPTER_BASES[: len(controls)]:
                rows.append({"type": f"control: SFT policy at {k}", "file": out_dir / f"base-{k}.gguf",
                             "adapter": None, "mib": (out_dir / f"base-{k}.gguf").stat().st_size / 2**20})
            for r, g in zip(rows, gains):
                r.update({k: g[k] for k in g if k.startswith(("eval/", "source/")) or k in (
                    "file_loader", "prompts", "samples_per_prompt", "scores")})
            delta_kept_rows(rows)
    table = gguf_table(rows)
    atomic_write_text(out_dir / "table.md", table + "\n")
    atomic_write_text(out_dir / "results.json", json.dumps(
        [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for r in rows], indent=1) + "\n")
    print(f"\n[export] {policy} -> {out_dir}: every type\n\n{table}\n")
    return rows


def delta_kept_rows(rows: list[dict]) -> None:
    """For each file of a type whose SFT control was measured (q8_0, q4_0 and the adapter on them): the share of
    the policy's gain it keeps over that control (``rewards.metrics.delta_kept``), as ``delta_kept`` (+ CI)."""
    controls = {r["type"].removeprefix("control: SFT policy at "): r for r in rows
                if r["type"].startswith("control:") and "scores" in r}
    for r in rows:
        kind = r["type"].removeprefix("adapter on ")
        c = controls.get(kind)
        if c is None or "scores" not in r:
            continue
        s = r["scores"]
        r["delta_kept"], r["delta_kept_ci95_low"], r["delta_kept_ci95_high"] = delta_kept(
            s["file"], c["scores"]["file"], s["policy"], s["baseline"])


def gguf_table(rows: list[dict]) -> str:
    """The ``--gguf all`` table in Markdown: one row per file (or adapter on a base)."""
    lines = ["| file | size | greedy next token kept | greedy answers identical | gain kept (95% CI over prompts) "
             "| over the SFT policy at its type (95% CI) | same responses |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        def pct(key, r=r):
            v = r.get(key)
            return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"
        def with_ci(key, r=r, pct=pct):
            v = pct(key)
            if v and not math.isnan(r.get(f"{key}_ci95_low", math.nan)):
                v += f" ({pct(f'{key}_ci95_low')} .. {pct(f'{key}_ci95_high')})"
            return v
        lines.append(f"| {r['type']} | {r['mib']:.1f} MiB | {pct('top1_agreement')} | {pct('greedy_identical')} | "
                     f"{with_ci('eval/gain_kept') or 'not measured'} | {with_ci('delta_kept')} | "
                     f"{pct('eval/same_responses')} |")
    src = next((r for r in rows if "source/gold_gain" in r), None)
    if src is not None:
        lines.append(f"\nThe policy's gold gain over its SFT policy: {src['source/gold_gain']:+.3f} on "
                     f"{src['prompts']} held-out prompts x {src.get('samples_per_prompt', 1)} samples (one sampling "
                     f"seed per sample, shared by the policy, its SFT policy and every file); files sampled by "
                     f"{src['file_loader']}. Gain kept: mean(file - SFT) / mean(policy - SFT). Over the SFT policy at "
                     "its type: mean(file - the SFT policy written at the file's type, or the adapter's base) / "
                     "mean(policy - SFT): what the RL delta still adds once quantisation's own effect (the control "
                     "rows) is taken out.")
    return "\n".join(lines)
