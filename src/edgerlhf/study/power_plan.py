"""``edgerlhf run --plan-power [STUDY]``: the cost of a verdict, known in advance. From a pilot study (two seeds or
more), for each comparison the report makes: the spread of its per-seed differences, the power the pilot had, the
seeds needed at 80% power to detect a difference of a given size or to certify equivalence within the study's
margin (:mod:`edgerlhf.study.power`), and the hours those seeds take here (each stage's wall time from the pilot's
records) at a given parallelism."""

from __future__ import annotations

import json
from pathlib import Path

from edgerlhf.study.pipeline import Arm
from edgerlhf.study.power import plan_seeds
from edgerlhf.study.records import arm_runs, stage_records, yardstick
from edgerlhf.study.report import comparisons

TARGET = 0.8


def last_study(root: str | Path = "studies") -> Path:
    """The study folder under ``root`` written last (its study.json)."""
    found = sorted(Path(root).glob("*/study.json"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no study under {root}/ (no */study.json); run one, or name it: --plan-power STUDY")
    return found[-1].parent


def study_comparisons(study: Path) -> tuple[list[dict], str]:
    """The comparisons the study's report makes, from its folder (each row with its per-seed ``diffs`` and its
    ``margin`` in the yardstick's units), and the yardstick's name."""
    index, runs, _, _, _ = _pilot(study)
    arms = arm_runs(runs)
    names = {a.name: (a.algorithm, a.precision) for a in runs}
    y = yardstick([r.eval for rs in arms.values() for r in rs])
    return comparisons(arms, names, y, {}, index.get("equivalence_margin", "10%")), y.name


def _pilot(study: Path):
    index = json.loads((study / "study.json").read_text())
    recs = {r.label: r for r in stage_records(study, index)}
    arms = [Arm(a["algorithm"], a["precision"]) for a in index["arms"]]
    runs, per_seed_s, missing = {}, {}, []
    for arm in arms:
        runs[arm] = {}
        for s in index["seeds"]:
            t, e = arm.labels(s, index["seed"])
            if t in recs and e in recs:
                runs[arm][s] = (recs[t], recs[e])
                per_seed_s[s] = per_seed_s.get(s, 0.0) + recs[t].wall_s + recs[e].wall_s
            else:
                missing.append(t)
    shared = sum(r.wall_s for lab, r in recs.items() if not any(lab in (a.labels(s, index["seed"]))
                                                                 for a in arms for s in index["seeds"]))
    return index, runs, per_seed_s, shared, missing


def plan_power(study: str | Path | None = None, *, detect: float | None = None, parallel: int = 1,
               alpha: float = 0.05) -> str:
    """The table ``--plan-power`` prints (see the module): per comparison, the pilot's seeds, the sd of its per-seed
    differences, the power it had, and the seeds and hours needed at 80% power. ``detect``: the difference to
    detect, in the yardstick's units (default: the comparison's equivalence margin)."""
    study = Path(study) if study else last_study()
    if not (study / "study.json").is_file():
        raise FileNotFoundError(f"{study} is not a study folder (no study.json)")
    if parallel < 1:
        raise ValueError(f"--max-parallel {parallel}: at least 1 stage at a time for the hours")
    seeds = json.loads((study / "study.json").read_text())["seeds"]
    if len(seeds) < 2:
        raise ValueError(f"{study} ran one seed ({seeds[0]}): the spread of a comparison over seeds is unknown after "
                         "one; run a pilot with 2 or more (e.g. --seeds 42,1,2), then plan from it")
    index, runs, per_seed_s, shared_s, missing = _pilot(study)
    rows, yname = study_comparisons(study)
    if not rows:
        raise ValueError(f"{study} makes no comparison (one configuration): nothing to decide")
    seed_h = sum(per_seed_s.values()) / len(per_seed_s) / 3600  # one more seed of every arm
    lines = [f"power plan from the pilot {study} ({len(index['seeds'])} seeds; {yname} gain; paired t-test on the "
             f"per-seed differences at two-sided {alpha:g} for a difference, TOST at {alpha:g} for equivalence; "
             f"80% power)",
             f"time here: {shared_s / 3600:.2f} h of shared stages (done once), {seed_h:.2f} h per seed of every "
             f"arm; at {parallel} stage(s) at a time", "",
             "| comparison | pilot seeds | mean diff | sd over seeds (80% upper bound) | to detect | pilot's power "
             "| seeds needed (at the sd's bound) | hours | margin (equivalence) | pilot's power "
             "| seeds needed (at the sd's bound) | hours |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def need(n, n_hi):
        hi = "more than 1000" if n_hi is None else str(n_hi)
        if n is None:
            return "more than 1000", "-"
        return f"{n} ({hi})", f"{(shared_s / 3600 + n * seed_h / parallel):.2f}"

    for r in rows:
        margin = r["margin"]
        delta = detect if detect is not None else margin
        pl = plan_seeds(r["diffs"], delta, margin, alpha, TARGET)  # diffs per seed: a's mean gain minus b's
        lines.append(f"| {r['a']} vs {r['b']} | {pl.seeds} | {pl.mean:+.3f} | {pl.sd:.3f} ({pl.sd_upper:.3f}) | "
                     f"{delta:.3f} | {pl.power_difference:.0%} | "
                     f"{' | '.join(need(pl.seeds_difference, pl.seeds_difference_upper))} | ±{margin:.3f} | "
                     f"{pl.power_equivalence:.0%} | "
                     f"{' | '.join(need(pl.seeds_equivalence, pl.seeds_equivalence_upper))} |")
    lines += ["", f"The sd from {len(seeds)} seeds is itself uncertain: in brackets, its one-sided 80% upper "
              "confidence bound (chi-square, n-1 df) and the seeds needed if the spread is that large; hours are for "
              "the estimate.",
              "Equivalence power assumes a true difference of 0 (at a true difference d it is lower: "
              "power_equivalence(n, margin, sd, d)). The report's verdicts also correct for multiple comparisons "
              "(Holm) and use bootstrap intervals; these t-based numbers are the planning approximation."]
    if missing:
        lines.append(f"(not in the pilot, left out: {', '.join(missing)})")
    return "\n".join(lines)
