"""Analysis: PPO pushed into over-optimisation, per arm and seed, and the early warning against the gold.

    .venv/bin/python bench/overopt_analysis.py --arm single=RUN_S42,RUN_S43 --arm uwo=RUN,RUN --arm warm=RUN,RUN \
        [--eval single=EVAL,EVAL --eval uwo=... --eval warm=...] [--smooth 3] [--fall 0.05] [--margin 10%]

Per run, from its metrics.jsonl (the gold of each step's 32 training rollouts, smoothed by a trailing mean of
``--smooth`` steps): the gold at the first step, the smoothed gold's peak (step and gain over the first), the gain
at the end, the KL at the end, whether the gold fell (peak - end > ``--fall``), and where the early warning fired
(the run's ``overopt/step``, recomputed from the logged ``objective/ensemble_std`` with the run's settings when the
run had none): its step against the peak's and the gain stopping there kept, as a share of the peak gain.

Per arm against the first arm (the reference): the gold peak gain, end gain and KL with 95% t intervals over seeds,
and, with ``--eval``, the held-out gold gain over SFT of the final policies compared by the study's rule (paired by
seed and prompt; different when the Holm-corrected bootstrap p < 0.05 and the t interval over seeds excludes 0;
equivalent when the 90% t interval over seeds lies inside the margin). Prints measured numbers; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _metrics(run: Path) -> list[dict]:
    last: dict[int, dict] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "objective/scores" in r:
            last[r["step"]] = r
    return [last[k] for k in sorted(last)]


def _trail(xs: list[float], k: int) -> list[float]:
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def run_stats(run: Path, smooth: int, fall: float) -> dict:
    from edgerlhf.rl.overopt import overopt_warning

    rows = _metrics(run)
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    gold = [r["objective/gold"] for r in rows]
    g = _trail(gold, smooth)
    start = g[0]
    peak_i = max(range(len(g)), key=lambda i: g[i])
    out = {"run": run.name, "steps": len(rows), "gold_first": start, "peak_step": peak_i + 1,
           "peak_gain": g[peak_i] - start, "end_gain": g[-1] - start,
           "kl_end": sum(r.get("objective/kl", math.nan) for r in rows[-smooth:]) / smooth,
           "kl_at_peak": rows[peak_i].get("objective/kl", math.nan),
           "proxy_gain": _trail([r["objective/scores"] for r in rows], smooth)[-1]
           - _trail([r["objective/scores"] for r in rows], smooth)[0],
           "len_first": rows[0]["val/mean_length"], "len_end": rows[-1]["val/mean_length"]}
    out["fell"] = out["peak_gain"] - out["end_gain"] > fall
    std = [r.get("objective/ensemble_std", math.nan) for r in rows]
    if any(math.isfinite(x) for x in std):
        out["std_first"], out["std_end"] = std[0], std[-1]
        w = overopt_warning(std, cfg.get("overopt_warning") or 0.5, cfg.get("overopt_window", 4),
                            cfg.get("overopt_patience", 2))
        step = summary.get("overopt/step", w.step if w else None)
        out["warn_step"] = step
        if step:
            kept = g[step - 1] - start
            out["warn_kept_share"] = kept / out["peak_gain"] if out["peak_gain"] > 0 else math.nan
            out["warn_vs_peak"] = step - out["peak_step"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", action="append", required=True, help="name=RUN,RUN,... (the first arm is the reference)")
    ap.add_argument("--eval", action="append", default=[], help="name=EVAL,EVAL,... in the same seed order")
    ap.add_argument("--smooth", type=int, default=3)
    ap.add_argument("--fall", type=float, default=0.05, help="gold units: a fall from the peak larger than this")
    ap.add_argument("--margin", default="10%", help="equivalence margin: gold units or a share of the reference gain")
    a = ap.parse_args()

    from edgerlhf.study.records import GOLD, Run, StageRecord, gains
    from edgerlhf.study.stats import compare, equivalence, holm, resolve_margin, t_interval

    arms = {k: [Path(x) for x in v.split(",")] for k, v in (s.split("=", 1) for s in a.arm)}
    evals = {k: [Path(x) for x in v.split(",")] for k, v in (s.split("=", 1) for s in a.eval)}
    stats = {k: [run_stats(r, a.smooth, a.fall) for r in rs] for k, rs in arms.items()}
    cols = ["run", "steps", "gold_first", "peak_step", "peak_gain", "end_gain", "fell", "kl_at_peak", "kl_end",
            "proxy_gain", "len_first", "len_end", "std_first", "std_end", "warn_step", "warn_vs_peak",
            "warn_kept_share"]
    print(f"per run (gold of the training rollouts, trailing mean of {a.smooth} steps)\n")
    print("| arm | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for k, ss in stats.items():
        for s in ss:
            cells = [f"{s[c]:+.3f}" if isinstance(s.get(c), float) else str(s.get(c, "–")) for c in cols]
            print(f"| {k} | " + " | ".join(cells) + " |")
    ref = next(iter(arms))
    print(f"\nper arm (95% t interval over seeds; differences against {ref}, paired by seed)\n")
    print("| arm | seeds | peak gain | end gain | KL end | end gain - ref's | gold fell in |")
    print("|---|---|---|---|---|---|---|")
    for k, ss in stats.items():
        def iv(key, ss=ss):
            t = t_interval([s[key] for s in ss])
            return f"{t.mean:+.3f} [{t.low:+.3f}, {t.high:+.3f}]"
        d = t_interval([s["end_gain"] - r["end_gain"] for s, r in zip(ss, stats[ref])]) if k != ref else None
        dtxt = f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" if d else "–"
        print(f"| {k} | {len(ss)} | {iv('peak_gain')} | {iv('end_gain')} | {iv('kl_end')} | {dtxt} | "
              f"{sum(s['fell'] for s in ss)}/{len(ss)} |")
    if evals:
        def runs_of(k):
            return [Run(i, None, StageRecord("eval", p.name, p, True, 0.0, {})) for i, p in enumerate(evals[k])]
        ga_ref = gains(runs_of(ref))
        ref_gain = sum(sum(x) / len(x) for x in ga_ref) / len(ga_ref)
        margin = resolve_margin(a.margin, ref_gain)
        rows = []
        for k in evals:
            if k == ref:
                continue
            ga = gains(runs_of(k))
            c = compare(ga, ga_ref)
            diffs = [sum(x) / len(x) - sum(y) / len(y) for x, y in zip(ga, ga_ref)]
            rows.append((k, c, t_interval(diffs, 0.90), sum(sum(x) / len(x) for x in ga) / len(ga)))
        print(f"\nheld-out gold gain over SFT of the final policies (128 prompts; {ref}: {ref_gain:+.3f}); margin "
              f"{a.margin} = ±{margin:.3f}\n")
        print("| arm | gain | vs ref | 95% t over seeds | 95% bootstrap (seeds, prompts) | p (Holm) | verdict |")
        print("|---|---|---|---|---|---|---|")
        for (k, c, ci90, gain), p in zip(rows, holm([r[1].p_value for r in rows])):
            t_ex = math.isfinite(c.seeds.low) and (c.seeds.low > 0 or c.seeds.high < 0)
            eq = equivalence(ci90.low, ci90.high, margin, different=p < 0.05 and t_ex)
            print(f"| {k} | {gain:+.3f} | {c.diff:+.3f} | [{c.seeds.low:+.3f}, {c.seeds.high:+.3f}] | "
                  f"[{c.both.low:+.3f}, {c.both.high:+.3f}] | {p:.3g} | {eq.verdict} (certifies ±{eq.certifiable:.3f})"
                  " |")
        _ = GOLD


if __name__ == "__main__":
    main()
