"""The study report: ``report.md``, a ``report.html`` that opens from disk, PNG charts, and ``report.json``
(every number in the tables with the summary file and key it came from, so the report can be checked)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from edgerlhf.rewards import mean_ci95

BUDGET_MB = 8 * 1024  # the edge budget: a consumer GPU with 8 GB, or 8 GB of RAM


def _summary(path: Path) -> dict:
    return json.loads((Path(path) / "summary.json").read_text())


def _metrics(path: Path) -> list[dict]:
    f = Path(path) / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


def _responses(path: Path) -> list[dict]:
    f = Path(path) / "responses.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


def _fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return spec.format(v)


class _Table:
    """Rows of cells that remember where each number came from."""

    def __init__(self, headers: list[str]):
        self.headers, self.rows, self.sources = headers, [], []

    def add(self, cells: list):
        """Each cell is a plain string, or (summary folder, key, format, value)."""
        row = []
        for c in cells:
            if isinstance(c, tuple):
                folder, key, spec, value = c
                text = _fmt(value, spec)
                row.append(text)
                if text != "–":
                    self.sources.append({"file": str(Path(folder).name) + "/summary.json",
                                         "key": list(key) if isinstance(key, (list, tuple)) else [key],
                                         "format": spec, "text": text})
            else:
                row.append(str(c))
        self.rows.append(row)

    def md(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows])

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _peak(rec) -> float | None:
    """A stage's peak memory; rm-eval measures each precision in its own process: the largest of those."""
    if rec.summary.get("memory/peak_mb") is not None:
        return rec.summary["memory/peak_mb"]
    peaks = [v.get("memory/peak_mb") for v in rec.summary.get("precisions", {}).values() if v.get("memory/peak_mb")]
    return max(peaks) if peaks else None


def _cell(folder: Path, summary: dict, key: str, spec: str, *, sub: tuple[str, ...] = ()):
    v = summary
    for k in sub:
        v = v.get(k, {})
    return (folder, sub + (key,), spec, v.get(key))


# -- charts ---------------------------------------------------------------------------------------------

def _charts(study: Path, ppo: dict, evals: dict, stages: list, rm_eval_summary: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = study / "charts"
    out.mkdir(exist_ok=True)
    made = []
    curves = {p: _metrics(rec.path) for p, rec in ppo.items()}
    curves = {p: [r for r in rows if "objective/scores" in r] for p, rows in curves.items()}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for p, rows in curves.items():
        axes[0].plot([r["step"] for r in rows], [r["objective/scores"] for r in rows], marker=".", label=p)
        axes[1].plot([r["step"] for r in rows], [r["objective/gold"] for r in rows], marker=".", label=p)
    axes[0].set(title="learned-RM reward (at its precision) per PPO step", xlabel="step", ylabel="mean RM score")
    axes[1].set(title="gold reward (VADER) of the rollouts", xlabel="step", ylabel="mean gold")
    for a in axes:
        a.legend(title="RM precision")
        a.grid(alpha=0.3)
    made.append(_save(fig, out / "rewards.png", "Learned-RM and gold reward per PPO step"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for p, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["objective/kl"] for r in rows], marker=".", label=p)
    ax.set(title="KL to the reference (SFT) per PPO step", xlabel="step", ylabel="KL (nats per response)")
    ax.legend(title="RM precision")
    ax.grid(alpha=0.3)
    made.append(_save(fig, out / "kl.png", "KL to the reference per PPO step"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (p, rows) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot([math.sqrt(max(r["objective/kl"], 0.0)) for r in rows], [r["objective/gold"] for r in rows], "o",
                color=color, alpha=0.45, label=f"{p}: PPO steps (rollouts)")
        es = evals[p].summary if p in evals else {}
        if es.get("eval/kl") is not None:
            ax.plot([math.sqrt(max(es["eval/kl"], 0.0))], [es["eval/gold_mean"]], "*", color=color, markersize=16,
                    markeredgecolor="black", label=f"{p}: final policy (held-out)")
    ax.set(title="Gold reward against sqrt(KL) (Gao et al. 2022)", xlabel="sqrt(KL to reference, nats)", ylabel="mean gold")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    made.append(_save(fig, out / "gold_vs_sqrt_kl.png", "Gold reward against √KL: the over-optimisation frontier"))

    labels = [r.label for r in stages]
    mem = [_peak(r) or 0 for r in stages]
    wall = [(r.summary.get("wall_time_s") or 0) / 60 for r in stages]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].barh(labels, mem, color="#4c72b0")
    axes[0].axvline(BUDGET_MB, color="red", linestyle="--", label="8 GB budget")
    axes[0].set(title="peak memory per stage", xlabel="MB")
    axes[0].legend()
    axes[1].barh(labels, wall, color="#55a868")
    axes[1].set(title="wall time per stage", xlabel="minutes")
    for a in axes:
        a.invert_yaxis()
        a.grid(axis="x", alpha=0.3)
    made.append(_save(fig, out / "memory_time.png", "Peak memory and wall time per stage"))

    precs = rm_eval_summary.get("precisions", {})
    if precs:
        names = list(precs)
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
        axes[0].bar(names, [precs[n].get("weight_mb", 0) for n in names], color="#8172b2")
        axes[0].set(title="reward-model weights", ylabel="MB")
        axes[1].bar(names, [precs[n].get("latency_s_per_batch", 0) for n in names], color="#c44e52")
        axes[1].set(title="reward-model latency", ylabel="s per batch")
        made.append(_save(fig, out / "rm_size_latency.png", "Reward-model size and latency per precision"))
    return made


def _save(fig, path: Path, caption: str) -> tuple[str, str]:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f"charts/{path.name}", caption


# -- the report -----------------------------------------------------------------------------------------

def write_report(study: Path, *, sft, rm_eval, ppo: dict, evals: dict) -> Path:
    """Write report.md / report.html / report.json / charts into ``study``; returns report.md."""
    from edgerlhf.tracking import atomic_write_json, atomic_write_text

    study = Path(study)
    index = json.loads((study / "study.json").read_text())
    stages = _records(study, index)
    rme = rm_eval.summary
    ref_prec = next(iter(ppo))

    # 1 precision table
    t = _Table(["RM precision", "RM weights MB", "RM s/batch", "RM acc vs fp32", "Spearman ρ vs fp32", "flip rate",
                "PPO peak MB", "PPO wall s", "final RM reward", "gold", "KL (nats)", "win rate vs SFT",
                "gold gain vs SFT %"])
    for p in ppo:
        r = rme.get("precisions", {}).get(p, {})
        ps, es = ppo[p].summary, evals[p].summary
        t.add([p, (rm_eval.path, ("precisions", p, "weight_mb"), "{:.1f}", r.get("weight_mb")),
               (rm_eval.path, ("precisions", p, "latency_s_per_batch"), "{:.2f}", r.get("latency_s_per_batch")),
               (rm_eval.path, ("precisions", p, "accuracy_vs_ref"), "{:.3f}", r.get("accuracy_vs_ref")),
               (rm_eval.path, ("precisions", p, "spearman_vs_ref"), "{:.3f}", r.get("spearman_vs_ref")),
               (rm_eval.path, ("precisions", p, "flip_rate"), "{:.3f}", r.get("flip_rate")),
               _cell(ppo[p].path, ps, "memory/peak_mb", "{:.0f}"), _cell(ppo[p].path, ps, "wall_time_s", "{:.0f}"),
               _cell(evals[p].path, es, "eval/rm_mean", "{:+.3f}"), _cell(evals[p].path, es, "eval/gold_mean", "{:+.3f}"),
               _cell(evals[p].path, es, "eval/kl", "{:.2f}"), _cell(evals[p].path, es, "eval/win_rate", "{:.3f}"),
               _cell(evals[p].path, es, "eval/gold_gain_pct", "{:+.0f}")])

    # 2 gold change over SFT with paired CIs, and which precision differences are within noise
    g = _Table(["RM precision", "SFT gold", "aligned gold", "gain", "paired 95% CI low", "paired 95% CI high"])
    for p in ppo:
        es = evals[p].summary
        g.add([p, _cell(evals[p].path, es, "baseline/gold_mean", "{:+.3f}"), _cell(evals[p].path, es, "eval/gold_mean", "{:+.3f}"),
               _cell(evals[p].path, es, "eval/gold_gain", "{:+.3f}"),
               _cell(evals[p].path, es, "eval/gold_gain_ci95_low", "{:+.3f}"),
               _cell(evals[p].path, es, "eval/gold_gain_ci95_high", "{:+.3f}")])
    noise = _noise_sentences(ppo, evals)

    # 3 stages: time, memory, 8 GB fit
    s = _Table(["stage", "run folder", "wall time s", "peak memory MB", "fits 8 GB", "reused"])
    for r in stages:
        peak = _peak(r)
        s.add([r.label, r.path.name, (r.path, "wall_time_s", "{:.0f}", r.summary.get("wall_time_s")),
               (r.path, "memory/peak_mb", "{:.0f}", peak) if r.summary.get("memory/peak_mb") is not None
               else _fmt(peak, "{:.0f}") + " (largest precision)",
               "–" if peak is None else ("yes" if peak < BUDGET_MB else "no"), "yes" if r.reused else "no"])

    # 4 where PPO's time goes
    tt = _Table(["RM precision", "load s", "generate s", "update s", "median step s", "tokens/s (rollout)"])
    for p in ppo:
        ps = ppo[p].summary
        rows = [x for x in _metrics(ppo[p].path) if "timing/generate_tokens_per_s" in x]
        tok_s = sum(x["timing/generate_tokens_per_s"] for x in rows) / len(rows) if rows else None
        tt.add([p, _cell(ppo[p].path, ps, "timing/load_s", "{:.0f}"), _cell(ppo[p].path, ps, "timing/generate_s", "{:.0f}"),
                _cell(ppo[p].path, ps, "timing/update_s", "{:.0f}"), _cell(ppo[p].path, ps, "timing/step_s_median", "{:.1f}"),
                _fmt(tok_s, "{:.0f}")])

    charts = _charts(study, ppo, evals, stages, rme)
    samples = _samples(evals, n=3)
    meta = {"preset": index.get("preset"), "seed": index.get("seed"), "device": ppo[ref_prec].summary.get("device"),
            "wall_min": index.get("wall_time_s", 0) / 60, "model": sft.summary.get("artifact", "")}

    md = [f"# EdgeRLHF precision study ({meta['preset']} preset, seed {meta['seed']})", "",
          f"Device: {meta['device']}. Study wall time: {meta['wall_min']:.1f} min (reused stages count 0). "
          "Every number below is read from a stage's summary.json (`report.json` lists file and key for each).", "",
          "## Reward-model precision: cost and alignment", "", t.md(), "",
          "RM columns come from `rm-eval` (held-out pairs; agreement with the fp32 RM). *final RM reward* is the "
          "fp32 learned RM's mean on the aligned policy's held-out responses, *gold* the gold scorer's; KL and win "
          "rate are against the SFT policy on the same prompts.", "",
          "## Gold change over the SFT policy (paired, 95% CI)", "", g.md(), "", *noise, "",
          "## Stages: time, memory, and the 8 GB budget", "", s.md(), "", "## Where PPO's time goes", "", tt.md(), "",
          "## Charts", ""]
    md += [f"![{c}]({src})\n" for src, c in charts]
    md += ["## Samples (same held-out prompts)", ""]
    for smp in samples:
        md += [f"**Prompt:** {smp['prompt']}", "", f"- SFT: {smp['sft']}  *(gold {smp['sft_gold']:+.2f})*"]
        md += [f"- PPO, RM {p}: {txt}  *(gold {gold:+.2f})*" for p, txt, gold in smp["aligned"]]
        md.append("")
    report = study / "report.md"
    atomic_write_text(report, "\n".join(md) + "\n")
    atomic_write_text(study / "report.html", _html(meta, t, g, noise, s, tt, charts, samples))
    atomic_write_json(study / "report.json", {"cells": t.sources + g.sources + s.sources + tt.sources,
                                              "charts": [c for c, _ in charts]})
    return report


def _records(study: Path, index: dict):
    from edgerlhf.study.pipeline import StageRecord

    return [StageRecord(s["stage"], s["label"], study / s["path"], s["reused"], s["wall_s"] or 0.0,
                        _summary(study / s["path"])) for s in index["stages"]]


def _noise_sentences(ppo: dict, evals: dict) -> list[str]:
    """Paired differences between precisions on the same prompts (gold of aligned responses)."""
    golds = {p: [r["gold"] for r in _responses(evals[p].path)] for p in ppo}
    names = list(golds)
    out, within, beyond = [], [], []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if not golds[a] or len(golds[a]) != len(golds[b]):
                continue
            m, lo, hi = mean_ci95([x - y for x, y in zip(golds[a], golds[b])])
            item = f"{a} − {b}: {m:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f})"
            (within if lo <= 0 <= hi else beyond).append(item)
    if within:
        out.append("Within noise (the paired 95% CI of the gold difference contains 0): " + "; ".join(within) + ".")
    if beyond:
        out.append("Beyond noise: " + "; ".join(beyond) + ".")
    if not out:
        out.append("Only one precision: no difference between precisions to test.")
    return out


def _samples(evals: dict, n: int) -> list[dict]:
    by = {p: _responses(rec.path) for p, rec in evals.items()}
    first = next(iter(by.values()), [])
    out = []
    for i, r in enumerate(first[:n]):
        out.append({"prompt": r["prompt"], "sft": r.get("baseline_response", ""), "sft_gold": r.get("baseline_gold", 0.0),
                    "aligned": [(p, rows[i]["response"], rows[i]["gold"]) for p, rows in by.items() if i < len(rows)]})
    return out


def _html(meta, t, g, noise, s, tt, charts, samples) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>EdgeRLHF study</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}</style></head><body>",
             f"<h1>EdgeRLHF precision study ({e(str(meta['preset']))} preset, seed {meta['seed']})</h1>",
             f"<p>Device: {e(str(meta['device']))}. Study wall time: {meta['wall_min']:.1f} min.</p>",
             "<h2>Reward-model precision: cost and alignment</h2>", t.html(),
             "<h2>Gold change over the SFT policy (paired, 95% CI)</h2>", g.html()]
    parts += [f"<p>{e(x)}</p>" for x in noise]
    parts += ["<h2>Stages: time, memory, and the 8 GB budget</h2>", s.html(), "<h2>Where PPO's time goes</h2>", tt.html(),
              "<h2>Charts</h2>"]
    parts += [f"<figure><img src='{e(src)}' alt='{e(c)}'><figcaption>{e(c)}</figcaption></figure>" for src, c in charts]
    parts.append("<h2>Samples (same held-out prompts)</h2>")
    for smp in samples:
        items = [f"<li>SFT: {e(smp['sft'])} <em>(gold {smp['sft_gold']:+.2f})</em></li>"]
        items += [f"<li>PPO, RM {e(p)}: {e(txt)} <em>(gold {gold:+.2f})</em></li>" for p, txt, gold in smp["aligned"]]
        parts.append(f"<p><b>Prompt:</b> {e(smp['prompt'])}</p><ul>{''.join(items)}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
