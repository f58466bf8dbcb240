"""The study report's charts (PNG, through matplotlib's Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

from edgerlhf.study.records import BUDGET_MB, GOLD, Run, Yardstick, curve, is_online, peak_mb


def charts(study: Path, arms: dict[str, list[Run]], stages: list, rm_eval_summary: dict,
            y: Yardstick, intervals: dict) -> list[tuple[str, str]]:
    """The report's charts; ``intervals`` holds each arm's hierarchical-bootstrap interval (computed once, for the
    table and the seeds chart alike)."""
    import matplotlib  # noqa: PLC0415 - matplotlib is heavy; only for the report's charts

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after matplotlib.use("Agg"), only for the charts

    out = study / "charts"
    out.mkdir(exist_ok=True)
    made = []
    online = {a: rs for a, rs in arms.items() if is_online(rs)}
    colors = {a: f"C{i}" for i, a in enumerate(arms)}

    def per_seed(ax, key, title, ylabel, which=online):
        for a, rs in which.items():
            per, mean = curve(rs, key)
            for c in per:
                ax.plot([s for s, _ in c], [v for _, v in c], color=colors[a], alpha=0.35, linewidth=0.8)
            if mean:
                ax.plot([s for s, _ in mean], [v for _, v in mean], color=colors[a], linewidth=2.4,
                        label=f"{a} (mean of {len(per)} seed{'s' * (len(per) != 1)})")
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)

    if online and y is GOLD:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        per_seed(axes[0], "objective/scores", "learned-RM reward (at its precision) per step", "mean RM score")
        per_seed(axes[1], "objective/gold", "gold reward of the rollouts per step", "mean gold")
        made.append(save_chart(fig, out / "rewards.png", "Learned-RM and gold reward per step: each seed thin, their "
                                                         "mean thick"))
    elif online:
        fig, ax = plt.subplots(figsize=(7, 4))
        per_seed(ax, "objective/scores", "learned-RM reward (at its precision) per step", "mean RM score")
        made.append(save_chart(fig, out / "rewards.png", "Learned-RM reward per step (no gold): each seed thin, their "
                                                         "mean thick"))

        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        per_seed(axes[0], "objective/kl", "KL to the reference per step", "nats per response")
        per_seed(axes[1], "objective/kl_per_token", "KL to the reference per step, per token", "nats per token")
        made.append(save_chart(fig, out / "kl.png", "KL to the reference per step, per response and per token"))

    if online and y is GOLD:
        fig, ax = plt.subplots(figsize=(7, 4))
        per_seed(ax, "objective/rm_gold_spearman", "does the RM still rank rollouts as the gold does?",
                 "Spearman(RM score, gold) over the step's rollouts")
        made.append(save_chart(fig, out / "rm_gold_agreement.png",
                          "RM-vs-gold rank agreement during RL, per RM precision (falls when the RM is exploited)"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a, rs in arms.items():
        pts = [(math.sqrt(max(r.eval.summary.get("eval/kl", math.nan), 0.0)), r.eval.summary.get(y.mean))
               for r in rs if r.eval.summary.get("eval/kl") is not None]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o", color=colors[a], alpha=0.5)
            ax.plot([sum(x for x, _ in pts) / len(pts)], [sum(y for _, y in pts) / len(pts)], "*", color=colors[a],
                    markersize=16, markeredgecolor="black", label=f"{a}: seeds (dots), mean (star)")
    ax.set(title=f"Held-out {y.name} against sqrt(KL) (Gao et al. 2022)",
           xlabel="sqrt(KL to the SFT policy, nats per response)", ylabel=f"mean {y.name}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    made.append(save_chart(fig, out / f"{y.resp}_vs_sqrt_kl.png",
                      f"{'Gold' if y is GOLD else 'Proxy (fp32 RM) score'} against √KL per algorithm and precision"
                      + (": the over-optimisation frontier" if y is GOLD else "")))

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(arms) + 1.5))
    for i, (a, rs) in enumerate(arms.items()):
        vals = [r.eval.summary.get(y.gain) for r in rs]
        vals = [v for v in vals if v is not None]
        ax.plot(vals, [i] * len(vals), "o", color=colors[a], alpha=0.6)
        iv = intervals.get(a)
        if iv:
            ax.errorbar([iv.mean], [i], xerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt="D", color="black",
                        capsize=4)
    ax.set_yticks(range(len(arms)), list(arms))
    ax.invert_yaxis()
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_title(f"{y.name} gain over SFT: seeds (dots), mean and 95% interval (seeds, prompts)", fontsize=10)
    ax.set(xlabel=f"{y.name} gain")
    ax.grid(axis="x", alpha=0.3)
    made.append(save_chart(fig, out / "seeds.png", f"{y.name} gain over SFT per configuration: seeds and the "
                                                   "hierarchical interval"))

    labels = [r.label for r in stages]
    mem = [peak_mb(r) or 0 for r in stages]
    wall = [(r.summary.get("wall_time_s") or 0) / 60 for r in stages]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.25 * len(stages) + 2.5))
    axes[0].barh(labels, mem, color="#4c72b0")
    axes[0].axvline(BUDGET_MB, color="red", linestyle="--", label="8 GB budget")
    axes[0].set(title="peak memory per stage", xlabel="MB")
    axes[0].legend()
    axes[1].barh(labels, wall, color="#55a868")
    axes[1].set(title="wall time per stage", xlabel="minutes")
    for a in axes:
        a.invert_yaxis()
        a.grid(axis="x", alpha=0.3)
    made.append(save_chart(fig, out / "memory_time.png", "Peak memory and wall time per stage"))

    precs = rm_eval_summary.get("precisions", {})
    if precs:
        names = list(precs)
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
        axes[0].bar(names, [precs[n].get("weight_mb", 0) for n in names], color="#8172b2")
        axes[0].set(title="reward-model weights", ylabel="MB")
        axes[1].bar(names, [precs[n].get("latency_s_per_batch", 0) for n in names], color="#c44e52")
        axes[1].set(title="reward-model latency", ylabel="s per batch")
        made.append(save_chart(fig, out / "rm_size_latency.png", "Reward-model size and latency per precision"))
    return made


def save_chart(fig, path: Path, caption: str) -> tuple[str, str]:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib is heavy; only for the report's charts

    plt.close(fig)
    return f"charts/{path.name}", caption
