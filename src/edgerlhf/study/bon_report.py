"""The report's best-of-n section: curves per RM precision, the Gao et al. fit, and a verdict at every n.

Best-of-n ranks the *same* candidates with every precision, so a precision's difference from the reference is
paired response by response and prompt by prompt, with no RL run-to-run variance: its intervals are over prompts
(a t interval of the per-prompt differences), its p-values are Holm-corrected across every (precision, n), and its
verdicts are three-way (``stats.equivalence``): different, equivalent within the margin fixed beforehand, or
undecided with the margin the data would have certified.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgerlhf.rl.best_of_n import bon_curves
from edgerlhf.stages.bon import read_candidates
from edgerlhf.study.charts import save_chart
from edgerlhf.study.stats import equivalence, holm, paired_t_p, resolve_margin, t_interval
from edgerlhf.study.tables import Derived, Table, iv


class BonSection(NamedTuple):
    md: list[str]                   # the section's markdown lines
    tables: list[tuple[str, Table]]  # (title, table) for report.html and report.json
    charts: list[tuple[str, str]]   # (file, caption)
    verdicts: list[dict]            # one per (precision, n), for report.json and the headline
    margin: float                   # the equivalence margin in gold units
    margin_rule: str                # how it was fixed, in words


def bon_verdicts(rows: list[dict], precisions: list[str], ns: list[int], margin: float) -> list[dict]:
    """Every precision but the first against the first, at every n: the paired per-prompt difference of the
    best-of-n gold with its 95% and 90% t intervals over prompts, the paired t-test's p-value (Holm-corrected across
    the whole list), and the three-way verdict."""
    ref = precisions[0]
    gold = [r["gold"] for r in rows]
    g_ref = bon_curves(gold, [r["rm"][ref] for r in rows], ns)
    out = []
    for p in precisions[1:]:
        d = bon_curves(gold, [r["rm"][p] for r in rows], ns) - g_ref
        for k, n in enumerate(ns):
            if n == 1:  # best-of-1 is the policy itself whatever ranks it: identical by construction
                continue
            col = d[:, k].tolist()
            out.append({"precision": p, "reference": ref, "n": n, "diff": float(np.mean(col)),
                        "ci95": t_interval(col, 0.95, over="prompts"), "ci90": t_interval(col, 0.90, over="prompts"),
                        "p": paired_t_p(col), "prompts": len(col)})
    for row, ph in zip(out, holm([r["p"] if math.isfinite(r["p"]) else 1.0 for r in out])):
        row["p_holm"] = ph
        row["eq"] = equivalence(row["ci90"].low, row["ci90"].high, margin, different=ph < 0.05)
    return out


def verdict_text(row: dict, unit: str = "gold") -> str:
    eq = row["eq"]
    if eq.verdict == "different":
        small = (f"; the whole 90% interval ({eq.low90:+.3f} .. {eq.high90:+.3f}) lies within ±{eq.margin:.3f}: a "
                 "real difference smaller than the margin" if eq.inside else "")
        return (f"different: {row['precision']} {'better' if row['diff'] > 0 else 'worse'} by {row['diff']:+.3f} "
                f"(Holm p {row['p_holm']:.3g}){small}")
    if eq.verdict == "equivalent":
        return f"equivalent within ±{eq.margin:.3f} {unit} (90% interval {eq.low90:+.3f} .. {eq.high90:+.3f})"
    margin = f"±{eq.margin:.3f}" if math.isfinite(eq.margin) else "the margin (none could be formed)"
    return f"undecided: not different, not shown within {margin}; these prompts certify ±{eq.certifiable:.3f}"


_TITLE = "Best-of-n on shared candidates (the RM's precision without RL noise)"
ENSEMBLE_TITLE = "Best-of-n with the reward-model ensemble (members, aggregations, WARM) on the same candidates"


def bon_section(study: Path, bon, margin_spec, title: str = _TITLE, chart: str = "best_of_n") -> BonSection | None:
    """The section from the bon stage's record (None when the study ran none, or its task has no gold)."""
    s = bon.summary
    precs = list(s.get("precisions", {}))
    if not precs or "gold" not in s["precisions"][precs[0]]:
        return None
    rows = read_candidates(bon.path)
    ns, ref = s["ns"], precs[0]
    ref_gain = s["precisions"][ref]["gold"][-1] - s["precisions"][ref]["gold"][0]
    margin = resolve_margin(margin_spec, ref_gain)
    rule = (f"{margin_spec} of the {ref} RM's best-of-{s['N']} gold gain over best-of-1 ({ref_gain:+.3f})"
            if str(margin_spec).strip().endswith("%") else f"{margin_spec} gold, as given")
    src = [f"{bon.path.name}/candidates.jsonl"]
    where = f"{bon.path.name}/summary.json"

    curves = Table(["RM precision"] + [f"n={n}" for n in ns])
    for p in precs:
        v = s["precisions"][p]
        curves.add([p] + [Derived(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]", "best-of-n gold mean [95% over prompts]",
                                  [where]) for m, (lo, hi) in zip(v["gold"], v["gold_ci95"])])
    curves.add(["KL (analytic)"] + [Derived(f"{k:.3f}", "log n - (n-1)/n", [where]) for k in s["kl"]])

    fit = Table(["RM precision", "alpha", "95% bootstrap (prompts)", "beta", "95% bootstrap (prompts)",
                 "peak at sqrt(KL)", f"proxy at n={ns[-1]}"])
    for p in precs:
        v = s["precisions"][p]
        a, b = v.get("alpha"), v.get("beta")
        peak = a / (2 * b) if a is not None and b and b > 0 else None
        fit.add([p, (bon.path, ("precisions", p, "alpha"), "{:+.3f}", a),
                 Derived(_pair(v.get("alpha_ci95")), "percentile bootstrap over prompts", [where]),
                 (bon.path, ("precisions", p, "beta"), "{:+.3f}", b),
                 Derived(_pair(v.get("beta_ci95")), "percentile bootstrap over prompts", [where]),
                 Derived(_peak(peak, max(s["sqrt_kl"]), b), "alpha / (2 beta)", [where]),
                 Derived(f"{v['proxy'][-1]:+.3f}", f"the last entry (n={ns[-1]}) of precisions.{p}.proxy", [where])])

    verdicts = bon_verdicts(rows, precs, ns, margin) if len(precs) > 1 else []
    vt = Table(["comparison", "n", "difference", "95% t over prompts", "90% t over prompts", "p (Holm)", "verdict"])
    for r in verdicts:
        vt.add([f"{r['precision']} vs {ref}", r["n"],
                Derived(f"{r['diff']:+.3f}", "mean over prompts of the paired best-of-n gold difference", src),
                Derived(iv(r["ci95"]), "Student-t 95% over prompts", src),
                Derived(iv(r["ci90"]), "Student-t 90% over prompts (TOST)", src),
                Derived(f"{r['p_holm']:.3g}", "paired t-test, Holm across the table", src), verdict_text(r)])
    made = _chart(study, s, precs, chart)
    md = [f"## {title}", "",
          f"{s['N']} candidates per held-out prompt ({s['prompts']} prompts) sampled once from the SFT policy; the RM "
          "at each precision ranks the same candidates, and the gold of best-of-n is its expectation over all "
          "n-subsets of the N (no resampling). KL(best-of-n || SFT) = log n - (n-1)/n, the standard analytic value "
          "and an upper bound (Beirami et al. 2024). Intervals are over prompts.", "", curves.md(), "",
          "Gao et al. (2022)'s form gold(d) - gold(0) = d (alpha - beta d), d = sqrt(KL), fitted per precision; "
          "beta > 0 bends the curve down (over-optimisation), its peak at d = alpha / (2 beta).", "", fit.md(), ""]
    if verdicts:
        said = (f"±{margin:.3f} gold: {rule}" if math.isfinite(margin)
                else f"none could be formed ({rule}: the reference gained nothing, so no share of it certifies "
                     "anything; pass an absolute margin such as --equivalence-margin 0.05)")
        md += [f"Each precision against {ref} at n ≥ 2 (at n = 1 every precision picks the same: the policy itself), "
               f"paired by prompt and candidate set. Equivalence margin {said}, fixed before the study ran. "
               "**Equivalent** when the 90% interval lies inside the margin (two one-sided tests at 5%), "
               "**different** when the Holm-corrected paired t-test rejects 0, otherwise **undecided** (with the "
               "margin these prompts would have certified).", "", vt.md(), ""]
    md += [f"![{cap}]({f})\n" for f, cap in made]
    tables = [("Best-of-n gold per RM precision", curves), ("Best-of-n: Gao et al. fit", fit)] + \
        ([("Best-of-n: each precision against the reference", vt)] if verdicts else [])
    return BonSection(md, tables, made, verdicts, margin, rule)


def headline(verdicts: list[dict], precision: str, N: int, prompts: int) -> str:
    """One clause: what best-of-n showed for ``precision`` (at the largest n and summarised over the others)."""
    mine = [r for r in verdicts if r["precision"] == precision]
    if not mine:
        return ""
    kinds = {r["eq"].verdict for r in mine}
    at = ", ".join(f"n={r['n']} {r['eq'].verdict}" + (" (within the margin)" if r["eq"].verdict == "different"
                                                        and r["eq"].inside else "") for r in mine if r["n"] > 1)
    top = mine[-1]
    return (f"best-of-n (N={N}, {prompts} prompts, paired by candidate): "
            + (f"equivalent to {top['reference']} within ±{top['eq'].margin:.3f} gold at every n"
               if kinds == {"equivalent"} else at + f"; at n={top['n']}: {verdict_text(top)}"))


def _peak(peak, d_max: float, beta) -> str:
    if peak is None:
        return "none (beta <= 0: no bend)" if beta is not None else "–"
    return f"{peak:.2f}" + (f" (extrapolated: the curve ends at {d_max:.2f})" if peak > d_max else "")


def _pair(v) -> str:
    return f"{v[0]:+.3f} .. {v[1]:+.3f}" if v and all(math.isfinite(x) for x in v) else "–"


def _chart(study: Path, s: dict, precs: list[str], name: str = "best_of_n") -> list[tuple[str, str]]:
    import matplotlib  # noqa: PLC0415 - matplotlib is heavy; only for the report's charts

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after matplotlib.use("Agg"), only for the charts

    d = s["sqrt_kl"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, p in enumerate(precs):
        v = s["precisions"][p]
        lo, hi = zip(*v["gold_ci95"])
        axes[0].plot(d, v["gold"], "o-", color=f"C{i}", label=p)
        axes[0].fill_between(d, lo, hi, color=f"C{i}", alpha=0.15)
        if v.get("alpha") is not None:
            xs = np.linspace(0, max(d), 50)
            axes[0].plot(xs, v["gold"][0] + xs * (v["alpha"] - v["beta"] * xs), ":", color=f"C{i}")
        axes[1].plot(d, v["proxy"], "o-", color=f"C{i}", label=p)
    axes[0].set(title="gold of best-of-n (dotted: Gao et al. fit; band: 95% over prompts)", xlabel="sqrt(KL) nats",
                ylabel="mean gold")
    axes[1].set(title="proxy: the ranking RM's own score of best-of-n", xlabel="sqrt(KL) nats", ylabel="mean RM score")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    (study / "charts").mkdir(exist_ok=True)
    return [save_chart(fig, study / "charts" / f"{name}.png", "Best-of-n gold and proxy against sqrt(KL), per RM "
                                                              "precision (or ensemble ranker), on the same "
                                                              "candidates")]
