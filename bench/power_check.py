"""What `--plan-power` predicts from a pilot, beside the power a finished replicated study actually had (prints
measured numbers; not a test):

    python bench/power_check.py PILOT --had "int4 vs fp32=-0.102,0.076,-0.221" [--had ...] [--margin 0.061]
                                [--max-parallel 2]

PILOT: a study folder with 2+ seeds (`-`: none). `--had NAME=d1,d2,...`: a comparison's per-seed differences in a
study already run (e.g. the replicated study's table in docs/benchmarks.md: its per-seed gains, one arm minus the
other); for each, its sd, the power it had at its seeds to detect `--detect` (default: the margin) and to certify
equivalence within the margin, and the seeds that sd calls for: set beside the pilot's own prediction.
"""
import argparse

from edgerlhf.study.power import plan_seeds
from edgerlhf.study.power_plan import plan_power


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pilot")
    ap.add_argument("--had", action="append", default=[])
    ap.add_argument("--margin", type=float, required=True, help="the equivalence margin, gold units")
    ap.add_argument("--detect", type=float, default=None)
    ap.add_argument("--max-parallel", type=int, default=2)
    a = ap.parse_args()
    if a.pilot != "-":
        print(plan_power(a.pilot, detect=a.detect, parallel=a.max_parallel))
    delta = a.detect if a.detect is not None else a.margin
    print(f"\nthe power studies already run had (to detect {delta:.3f}; equivalence within ±{a.margin:.3f}; "
          "80% power):")
    print("| comparison | seeds | mean diff | sd over seeds | power to detect | seeds needed | power for equivalence "
          "| seeds needed |\n|---|---|---|---|---|---|---|---|")
    for spec in a.had:
        name, _, vals = spec.partition("=")
        pl = plan_seeds([float(x) for x in vals.split(",")], delta, a.margin)
        print(f"| {name} | {pl.seeds} | {pl.mean:+.3f} | {pl.sd:.3f} | {pl.power_difference:.0%} | "
              f"{pl.seeds_difference or '>1000'} | {pl.power_equivalence:.0%} | {pl.seeds_equivalence or '>1000'} |")

if __name__ == "__main__":
    main()
