"""``edgerlhf run --seeds auto --max-seeds M``: seeds added in rounds until every comparison is decided.

After each round (2 seeds, then one more per round, up to M) the study's comparisons are read as the report makes
them, and each is decided on its per-seed paired differences at that look's nominal levels of a group-sequential
design (:mod:`edgerlhf.study.group_seq`: Lan-DeMets O'Brien-Fleming-type alpha spending over the M - 1 planned
looks): **different** when the paired t-test's p-value is under the look's two-sided level (alpha 0.05 spent),
**equivalent within the margin** when TOST passes at the look's one-sided level (0.05 per one-sided test spent, the
fixed design's 90% interval). The rounds stop when every comparison is decided, or at M seeds. Every round is an
ordinary study run: finished stages are reused, so a round costs only its new seed. The design, the looks used and
the alpha spent are written to ``sequential.json`` and the end of ``report.md``.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgerlhf import registry
from edgerlhf.models.loading import resolve_device
from edgerlhf.models.precision import default_precisions, parse_precisions
from edgerlhf.study.group_seq import nominal_levels, obf_spending, spending_bounds
from edgerlhf.study.pipeline import parse_arms, run_study
from edgerlhf.study.power_plan import study_comparisons
from edgerlhf.study.records import NULL
from edgerlhf.study.stats import paired_t_p
from edgerlhf.tracking import atomic_write_json

FIRST = 2  # the first look: the fewest seeds a spread over seeds needs


def has_comparison(algorithms, precisions: list[str]) -> bool:
    """Whether the study's arms make a comparison for the report to decide (a precision against the reference, a
    control arm, or an algorithm against PPO)."""
    arms = parse_arms(algorithms, precisions)
    by_algo: dict[str, int] = {}
    for a in arms:
        if a.precision != NULL:
            by_algo[a.algorithm] = by_algo.get(a.algorithm, 0) + 1
    return (any(n >= 2 for n in by_algo.values()) or any(a.precision == NULL and a.algorithm in by_algo for a in arms)
            or (registry.REFERENCE_ALGORITHM in by_algo and len(by_algo) >= 2))


def auto_seeds(seed: int, max_seeds: int) -> list[int]:
    """The base seed, then 1, 2, 3, ... (skipping it): the seeds a study of ``--seeds 42,1,2`` would use."""
    return [seed] + [s for s in range(1, max_seeds + 1) if s != seed][: max_seeds - 1]


def decide(diffs: list[float], margin: float, level_diff: float, level_eq: float) -> str:
    """One look's verdict on per-seed differences: different | equivalent | undecided (see the module)."""
    from scipy.stats import t  # noqa: PLC0415 - scipy is heavy; only for a t quantile

    n = len(diffs)
    if n < 2:
        return "undecided"
    if paired_t_p(diffs) < level_diff:
        return "different"
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
    half = t.ppf(1 - level_eq, n - 1) * se
    if math.isfinite(margin) and -margin < mean - half and mean + half < margin:
        return "equivalent"
    return "undecided"


def run_sequential(preset: str = "quick", *, max_seeds: int = 5, seed: int = 42, algorithms=None,
                   precisions: list[str] | None = None, **study_kw) -> Path:
    """Run the study with seeds added until decided (see the module); returns the study folder."""
    if max_seeds < FIRST + 1:
        raise ValueError(f"--max-seeds {max_seeds}: at least {FIRST + 1} (the first look has {FIRST} seeds, and "
                         "stopping early needs a later look)")
    precs = parse_precisions(precisions) if precisions else default_precisions(resolve_device(study_kw.get("device",
                                                                                                          "auto")))
    if not has_comparison(algorithms, precs):
        raise ValueError("--seeds auto adds seeds until every comparison is decided, but these arms make none (one "
                         "configuration); add one: --precisions fp32,int4, an algorithm beside ppo, or ppo@null")
    seeds = auto_seeds(seed, max_seeds)
    looks = list(range(FIRST, max_seeds + 1))
    fractions = [n / max_seeds for n in looks]
    level_diff = nominal_levels(spending_bounds(fractions, 0.05))
    level_eq = [x / 2 for x in nominal_levels(spending_bounds(fractions, 0.10))]  # one-sided, per TOST test
    history, study = [], None
    for k, n in enumerate(looks):
        print(f"\n[run] --seeds auto: look {k + 1} of {len(looks)} with {n} seeds ({', '.join(map(str, seeds[:n]))}); "
              f"levels: difference {level_diff[k]:.4f} (two-sided), equivalence {level_eq[k]:.4f} (per one-sided "
              "test)")
        study = run_study(preset, seed=seed, seeds=seeds[:n], algorithms=algorithms, precisions=precisions,
                          **study_kw)
        rows, _ = study_comparisons(study)
        verdicts = {f"{r['a']} vs {r['b']}": decide(r["diffs"], r["margin"], level_diff[k], level_eq[k])
                    for r in rows}
        history.append({"look": k + 1, "seeds": n, "level_difference": level_diff[k],
                        "level_equivalence": level_eq[k], "alpha_spent": obf_spending(fractions[k], 0.05),
                        "verdicts": verdicts})
        print("[run] " + "; ".join(f"{c}: {v}" for c, v in verdicts.items()))
        if all(v != "undecided" for v in verdicts.values()):
            break
    design = {"design": "group-sequential, Lan-DeMets O'Brien-Fleming-type alpha spending (two-sided 0.05 for a "
                        "difference; 0.05 per one-sided TOST test for equivalence), nominal levels applied to paired "
                        "t-tests on per-seed differences",
              "planned_looks": [{"seeds": n, "information": f} for n, f in zip(looks, fractions)],
              "looks_used": len(history), "max_seeds": max_seeds, "history": history}
    atomic_write_json(study / "sequential.json", design)
    _append_report(study / "report.md", design)
    return study


def _append_report(report: Path, d: dict) -> None:
    last = d["history"][-1]
    lines = ["", "## Seeds added until decided (--seeds auto)", "",
             f"Design: {d['design']}. Planned looks at "
             f"{', '.join(str(x['seeds']) for x in d['planned_looks'])} seeds (at most {d['max_seeds']}); "
             f"{d['looks_used']} used, stopping at {last['seeds']} seeds with "
             f"{last['alpha_spent']:.4f} of the 0.05 spent. These verdicts are the design's; the tables above are the "
             "fixed-sample analysis of the seeds that ran.", "",
             "| look | seeds | level (difference) | level (equivalence) | verdicts |", "|---|---|---|---|---|"]
    for h in d["history"]:
        lines.append(f"| {h['look']} | {h['seeds']} | {h['level_difference']:.4f} | {h['level_equivalence']:.4f} | "
                     + "; ".join(f"{c}: {v}" for c, v in h["verdicts"].items()) + " |")
    report.write_text(report.read_text() + "\n".join(lines) + "\n")
