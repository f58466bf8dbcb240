"""The study report: ``report.md``, a ``report.html`` that opens from disk, PNG charts, and ``report.json``
(every number in the tables with the summary file and key it came from, so the report can be checked)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from edgerlhf import registry
from edgerlhf.study.bon_report import ENSEMBLE_TITLE, bon_section, verdict_text
from edgerlhf.study.bon_report import headline as bon_headline
from edgerlhf.study.charts import charts
from edgerlhf.study.records import (
    BUDGET_MB,
    GOLD,
    NULL,
    PROXY,
    Run,
    Yardstick,
    arm_runs,
    controlled_gains,
    curve,
    gains,
    is_online,
    median,
    metrics_of,
    peak_mb,
    response_files,
    responses_of,
    stage_records,
    yardstick,
)
from edgerlhf.study.stats import (
    DEFAULT_MARGIN,
    compare,
    detectable_difference,
    equivalence,
    hierarchical_bootstrap,
    holm,
    resolve_margin,
    t_interval,
)
from edgerlhf.study.tables import Derived, Table, cell, fmt, iv
from edgerlhf.tracking import atomic_write_json, atomic_write_text


def comparisons(arms: dict[str, list[Run]], names: dict[str, tuple[str, str]], y: Yardstick = GOLD,
                 cache: dict | None = None, margin=DEFAULT_MARGIN) -> list[dict]:
    """Each precision against fp32 (the first precision) within an algorithm, each algorithm against PPO at
    that reference precision (DPO against it too), and an algorithm's reference arm against its control arm (a
    random reward), on the seeds both ran and the same prompts; Holm across all. Each row also carries the 90% t
    interval over seeds and its equivalence verdict at ``margin`` (a relative margin: a share of b's mean gain; for a
    control comparison, of the real arm's)."""
    by_algo: dict[str, list[str]] = {}
    nulls: dict[str, str] = {}
    for a, (algo, prec) in names.items():
        if prec == NULL:
            nulls[algo] = a
        else:
            by_algo.setdefault(algo, []).append(a)
    pairs = []
    for members in by_algo.values():
        ref = members[0]
        pairs += [(a, ref, "precision") for a in members[1:] if names[a][1]]
    pairs += [(by_algo[algo][0], null, "control") for algo, null in nulls.items() if by_algo.get(algo)]
    ppo_ref = by_algo.get(registry.REFERENCE_ALGORITHM, [None])[0]
    if ppo_ref:
        for algo, members in by_algo.items():
            if algo == registry.REFERENCE_ALGORITHM:
                continue
            same = [a for a in members if names[a][1] == names[ppo_ref][1]] or [a for a in members if not names[a][1]]
            pairs += [(a, ppo_ref, "algorithm") for a in same[:1]]
    out = []
    for a, b, kind in pairs:
        seeds = [r.seed for r in arms[a] if r.seed in {x.seed for x in arms[b]}]
        ra = [r for r in arms[a] if r.seed in seeds]
        rb = sorted((r for r in arms[b] if r.seed in seeds), key=lambda r: seeds.index(r.seed))
        ga, gb = gains(ra, y, cache), gains(rb, y, cache)
        if not ga or not gb or len(ga[0]) != len(gb[0]):
            continue
        c = compare(ga, gb)
        diffs = [sum(x) / len(x) - sum(y) / len(y) for x, y in zip(ga, gb)]
        # a relative margin is a share of the reference's gain: b's, or for a control comparison the real arm's (a)
        ref_gain = sum(sum(x) / len(x) for x in (ga if kind == "control" else gb)) / len(gb)
        out.append({"a": a, "b": b, "kind": kind, "seeds": seeds, "diffs": diffs, "cmp": c,
                    "mde": detectable_difference(diffs),
                    "inputs": response_files(ra) + response_files(rb), "ci90": t_interval(diffs, 0.90),
                    "margin": resolve_margin(margin, ref_gain)})
    for row, p in zip(out, holm([r["cmp"].p_value for r in out])):
        row["p_holm"] = p
        row["eq"] = equivalence(row["ci90"].low, row["ci90"].high, row["margin"], different=_different(row))
    return out


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def _different(row: dict) -> bool:
    """A difference is claimed only when the Holm-corrected bootstrap p is below 0.05 *and*, with several seeds,
    the t interval over seeds excludes 0: a bootstrap over 2-5 seeds sees few distinct resamples and is
    optimistic, the t interval is not."""
    c, n = row["cmp"], len(row["seeds"])
    t_excludes = n >= 2 and math.isfinite(c.seeds.low) and (c.seeds.low > 0 or c.seeds.high < 0)
    return row["p_holm"] < 0.05 and (n < 2 or t_excludes)


def _verdict(row: dict) -> str:
    """The comparison's verdict in words (:func:`_different`; then equivalence within the margin, or what the
    seeds could have detected and certified)."""
    c, n = row["cmp"], len(row["seeds"])
    if _different(row):
        where = " over prompts (one seed: RL variance not measured)" if n < 2 else ""
        eq = row.get("eq")
        small = (f"; its 90% t interval over seeds lies within ±{eq.margin:.3f}: a real difference smaller than "
                 "the margin" if eq is not None and eq.inside else "")
        return (f"{row['a']} {'better' if c.diff > 0 else 'worse'} than {row['b']}{where} "
                f"(Holm-adjusted p {_p(row['p_holm'])}){small}")
    eq = row.get("eq")
    if eq is not None and eq.verdict == "equivalent":
        return (f"equivalent within ±{eq.margin:.3f} (90% t interval over {n} seeds {eq.low90:+.3f} .. "
                f"{eq.high90:+.3f})")
    tost = ""
    if eq is not None and n >= 2:
        tost = (f"; not shown equivalent within ±{eq.margin:.3f}: these seeds certify only ±{eq.certifiable:.2f}"
                if math.isfinite(eq.margin) else "; no equivalence margin could be formed (the reference gained "
                                                 "nothing)")
    if row["p_holm"] < 0.05:
        return (f"undecided: the bootstrap over seeds and prompts excludes 0 (Holm p {_p(row['p_holm'])}) but the "
                f"t interval over {n} seeds does not" + tost)
    if n < 2:
        return "no difference found over prompts; one seed: RL variance not measured, equivalence not shown"
    return (f"no difference found; at {n} seeds only a difference of about {row['mde']:.2f} or more would have "
            "been detected (80% power)" + tost)


def _verdict_sentences(rows: list[dict], n_seeds: int, y: Yardstick = GOLD) -> list[str]:
    if not rows:
        return ["Only one configuration: nothing to compare."]
    out = []
    for r in rows:
        c = r["cmp"]
        over = ("over the evaluation prompts only (one seed: RL's run-to-run variance is not in it)"
                if len(r["seeds"]) < 2 else f"over {len(r['seeds'])} seeds and the evaluation prompts")
        out.append(f"{r['a']} − {r['b']}: {y.name} gain {c.diff:+.3f}, 95% interval {iv(c.both)} {over}; "
                   f"P(improvement) {c.p_improvement:.2f}; {_verdict(r)}.")
    if n_seeds < 2:
        out.append("With one seed per configuration these intervals cover the prompts, not the RL run: a second seed "
                   "can move a configuration by more than these differences. Replicate with `--seeds 1,2,3`.")
    return out


def write_report(study: Path, *, sft, rm_eval, runs: dict, base_seed: int, bon=None,
                 margin=DEFAULT_MARGIN, bon_ensemble=None) -> Path:
    """Write report.md / report.html / report.json / charts into ``study``; returns report.md.

    ``runs``: {Arm: {seed: (training StageRecord, evaluation StageRecord)}} as ``study.pipeline`` builds it;
    ``bon``: the best-of-n stage's record (None: no best-of-n section); ``margin``: the equivalence margin;
    ``bon_ensemble``: the best-of-n stage that ranked with the RM ensemble (its own section)."""
    study = Path(study)
    index = json.loads((study / "study.json").read_text())
    stages = stage_records(study, index)
    rme = rm_eval.summary
    arms = arm_runs(runs)
    names = {arm.name: (arm.algorithm, arm.precision) for arm in runs}
    seeds = sorted({r.seed for rs in arms.values() for r in rs})
    n_seeds = len(seeds)
    y = yardstick([r.eval for rs in arms.values() for r in rs])
    yn = y.name
    cache: dict = {}  # each evaluation's per-prompt gains, read once
    intervals: dict = {}  # each arm's hierarchical-bootstrap interval, drawn once

    # 1 RM precision: cost and agreement with fp32
    cert = bon.summary.get("precisions", {}) if bon is not None else {}
    t = Table(["RM precision", "RM weights MB", "RM s/batch", "RM acc vs fp32", "Spearman ρ vs fp32", "flip rate"]
              + (["Kendall τ on policy samples", "top-1 agreement", "reward std ratio"] if cert else []))
    for p, r in rme.get("precisions", {}).items():
        t.add([p] + [(rm_eval.path, ("precisions", p, k), spec, r.get(k)) for k, spec in
                     (("weight_mb", "{:.1f}"), ("latency_s_per_batch", "{:.2f}"), ("accuracy_vs_ref", "{:.3f}"),
                      ("spearman_vs_ref", "{:.3f}"), ("flip_rate", "{:.3f}"))]
              + ([(bon.path, ("precisions", p, k), "{:.3f}", cert.get(p, {}).get(k))
                  for k in ("kendall_tau", "top1_agreement", "std_ratio")] if cert else []))

    # 2 alignment per configuration: each seed, the mean, intervals over seeds and over seeds and prompts
    a = Table(["configuration", "seeds", f"{yn} gain per seed", "mean gain", "95% t over seeds",
                "95% bootstrap (seeds, prompts)", "length-controlled gain", "its 95% bootstrap",
                "win rate vs SFT", "KL nats/response", "KL nats/token",
                "final RM reward", "train peak MB", "train s (median)"])
    for name, rs in arms.items():
        g = gains(rs, y, cache)
        per_seed = " / ".join(fmt(r.eval.summary.get(y.gain), "{:+.3f}") for r in rs)
        srcs = [{"file": f"{r.eval.path.name}/summary.json", "key": [y.gain]} for r in rs]
        def mean_of(key, rs=rs):
            vals = [r.eval.summary.get(key) for r in rs]
            return sum(vals) / len(vals) if vals and None not in vals else None
        kl_tok = [r.eval.summary["eval/kl"] / r.eval.summary["eval/mean_tokens"] for r in rs
                  if r.eval.summary.get("eval/kl") is not None and r.eval.summary.get("eval/mean_tokens")]
        ti = t_interval([sum(x) / len(x) for x in g]) if g else None
        hb = intervals[name] = hierarchical_bootstrap(g) if g else None
        lc = controlled_gains(rs, y, cache)
        lc_iv = hierarchical_bootstrap(lc) if lc else None
        files = [f"{r.eval.path.name}/summary.json" for r in rs]
        a.add([name, ", ".join(str(r.seed) for r in rs), Derived(per_seed, f"each seed's {y.gain}", srcs),
               Derived(fmt(ti.mean if ti else None, "{:+.3f}"), f"mean over seeds of {y.resp} - {y.base_resp}",
                       response_files(rs)),
               Derived(iv(ti) if ti else "–", "Student-t 95% over the seeds' means", response_files(rs)),
               Derived(iv(hb) if hb else "–", "hierarchical bootstrap 95% (seeds, then prompts)", response_files(rs)),
               Derived(fmt(lc_iv.mean if lc_iv else None, "{:+.3f}"), "mean of (gain - slope x word-count change), "
                       "slope of score on words fitted on the SFT responses", response_files(rs)),
               Derived(iv(lc_iv) if lc_iv else "–", "hierarchical bootstrap 95% of the length-controlled gains",
                       response_files(rs)),
               Derived(fmt(mean_of(y.win), "{:.3f}"), f"mean over seeds of {y.win}", files),
               Derived(fmt(mean_of("eval/kl"), "{:.2f}"), "mean over seeds of eval/kl", files),
               Derived(fmt(sum(kl_tok) / len(kl_tok) if len(kl_tok) == len(rs) else None, "{:.3f}"),
                       "mean over seeds of eval/kl / eval/mean_tokens", files),
               Derived(fmt(mean_of("eval/rm_mean"), "{:+.3f}"), "mean over seeds of eval/rm_mean", files),
               Derived(fmt(max((peak_mb(r.train) or 0 for r in rs), default=None), "{:.0f}"), "largest memory/peak_mb",
                       [f"{r.train.path.name}/summary.json" for r in rs]),
               Derived(fmt(median([r.train.summary.get("wall_time_s") for r in rs]), "{:.0f}"), "median wall_time_s",
                       [f"{r.train.path.name}/summary.json" for r in rs])])

    # 3 comparisons with Holm's correction and a power statement
    rows = comparisons(arms, names, y, cache, margin)
    c = Table(["comparison", "seeds", "difference", "95% t over seeds", "95% bootstrap (seeds, prompts)",
                "P(improvement)", "p", "p (Holm)", "detectable at 80% power", "90% t over seeds",
                "equivalence margin", "verdict"])
    for r in rows:
        cm, ins = r["cmp"], r["inputs"]
        c.add([f"{r['a']} vs {r['b']}", len(r["seeds"]),
               Derived(f"{cm.diff:+.3f}", f"mean paired {yn}-gain difference", ins),
               Derived(iv(cm.seeds), "Student-t 95% over per-seed differences", ins),
               Derived(iv(cm.both), "hierarchical bootstrap 95% of the paired difference", ins),
               Derived(f"{cm.p_improvement:.2f}", "P(a > b) on paired prompts", ins),
               Derived(_p(cm.p_value), "two-sided bootstrap p (floored at 1 / 4000 draws)", ins),
               Derived(_p(r["p_holm"]), "Holm across the table", ins),
               Derived(fmt(r["mde"], "{:.3f}"), "(t(.975,n-1) + t(.8,n-1)) s_diff / sqrt(n) over seeds", ins),
               Derived(iv(r["ci90"]), "Student-t 90% over per-seed differences (TOST)", ins),
               Derived(fmt(r["margin"], "±{:.3f}"), f"equivalence margin {margin} (relative: of the mean gain of "
                       f"{r['a'] if r['kind'] == 'control' else r['b']})",
                       ins),
               _verdict(r)])
    verdicts = _verdict_sentences(rows, n_seeds, y)

    # 4 each run's change over SFT, paired over prompts
    g = Table(["run", "seed", f"SFT {yn}", f"aligned {yn}", "gain", "paired 95% CI over prompts"])
    for name, rs in arms.items():
        for r in rs:
            es, ep = r.eval.summary, r.eval.path
            lo, hi = es.get(f"{y.gain}_ci95_low"), es.get(f"{y.gain}_ci95_high")
            g.add([name, r.seed, cell(ep, es, y.base_mean, "{:+.3f}"), cell(ep, es, y.mean, "{:+.3f}"),
                   cell(ep, es, y.gain, "{:+.3f}"),
                   Derived(f"{fmt(lo, '{:+.3f}')} .. {fmt(hi, '{:+.3f}')}" if lo is not None else "–",
                           f"{y.gain}_ci95_low .. high", [f"{ep.name}/summary.json"])])

    # 5 stages: time, memory, 8 GB fit
    s = Table(["stage", "run folder", "wall time s", "peak memory MB", "fits 8 GB", "reused"])
    for r in stages:
        peak = peak_mb(r)
        s.add([r.label, r.path.name, (r.path, "wall_time_s", "{:.0f}", r.summary.get("wall_time_s")),
               (r.path, "memory/peak_mb", "{:.0f}", peak) if r.summary.get("memory/peak_mb") is not None
               else fmt(peak, "{:.0f}") + " (largest precision)",
               "–" if peak is None else ("yes" if peak < BUDGET_MB else "no"),
               ("yes" if r.reused else "no") + (f" (ran {r.attempts} times: its worker died)" if r.attempts > 1
                                                else "")])

    # 6 where online RL's time goes (every online run)
    tt = Table(["run", "seed", "load s", "generate s", "update s", "median step s", "tokens/s (rollout)"])
    for name, rs in arms.items():
        for r in rs if is_online(rs) else []:
            ps, pp = r.train.summary, r.train.path
            m = [x for x in metrics_of(pp) if "timing/generate_tokens_per_s" in x]
            tok_s = sum(x["timing/generate_tokens_per_s"] for x in m) / len(m) if m else None
            tt.add([name, r.seed, cell(pp, ps, "timing/load_s", "{:.0f}"),
                    cell(pp, ps, "timing/generate_s", "{:.0f}"),
                    cell(pp, ps, "timing/update_s", "{:.0f}"), cell(pp, ps, "timing/step_s_median", "{:.1f}"),
                    Derived(fmt(tok_s, "{:.0f}"), "mean of timing/generate_tokens_per_s",
                            [f"{pp.name}/metrics.jsonl"])])

    # 7 does the RM still rank the rollouts as the gold does, as RL goes on? (per online arm, mean over seeds)
    ag = Table(["configuration", "seeds logged", "Spearman(RM, gold) first step", "last step", "change"])
    for name, rs in arms.items():
        if not is_online(rs) or y is not GOLD or names[name][1] == NULL:  # a random reward ranks nothing
            continue
        per, _ = curve(rs, "objective/rm_gold_spearman")
        per = [c for c in per if len(c) >= 2 and all(math.isfinite(v) for _, v in c)]
        if not per:
            ag.add([name, 0, "–", "–", "–"])
            continue
        first, last = sum(c[0][1] for c in per) / len(per), sum(c[-1][1] for c in per) / len(per)
        src = [f"{r.train.path.name}/metrics.jsonl" for r in rs]
        ag.add([name, len(per),
                Derived(f"{first:.3f}", "mean over seeds of the first step's objective/rm_gold_spearman", src),
                Derived(f"{last:.3f}", "mean over seeds of the last step's objective/rm_gold_spearman", src),
                Derived(f"{last - first:+.3f}", "last - first", src)])

    made = charts(study, arms, stages, rme, y, intervals)
    bs = bon_section(study, bon, margin) if bon is not None and y is GOLD else None
    if bs is not None:
        made += bs.charts
    be = bon_section(study, bon_ensemble, margin, ENSEMBLE_TITLE, "best_of_n_ensemble") \
        if bon_ensemble is not None and y is GOLD else None
    if be is not None:
        made += be.charts
    answer = _headline(rows, names, bs, bon)
    samples = _samples(arms, base_seed, n=3, y=y)
    first = next(iter(arms.values()))[0]
    meta = {"preset": index.get("preset"), "seed": base_seed, "seeds": seeds,
            "device": first.train.summary.get("device"),
            "wall_min": index.get("wall_time_s", 0) / 60, "compute_min": index.get("compute_s", 0) / 60,
            "arms": list(arms), "yardstick": yn}
    proxy = ["**No gold scorer (the task's `gold: none`): every gain below is the fp32 learned reward model's score, a "
             "proxy, not ground truth.** The policies were trained against that RM (or a quantised copy of it), so a "
             "policy that exploits the RM scores higher here without being better; name a gold (a callable, or an "
             "independently trained RM folder) to measure alignment."] if y is PROXY else []
    lead = proxy + [f"Configurations: {', '.join(arms)}; seeds {', '.join(map(str, seeds))} (SFT policy, preference "
                    "pairs, "
            f"reward model and every evaluation's sampling use the base seed {base_seed}; the seeds replicate the "
            "training of each configuration). Device: " + str(meta["device"]) + ".",
            f"Compute: {meta['compute_min']:.1f} min over all stages (a reused stage counts what it took when it ran); "
            f"this invocation: {meta['wall_min']:.1f} min.",
            "One seed per configuration: **RL's run-to-run variance is not measured.** The intervals below are over "
            "the "
            "evaluation prompts only; a different seed can move a configuration by more than the differences between "
            "configurations. Replicate with `--seeds 1,2,3`." if n_seeds < 2 else
            f"{n_seeds} seeds per configuration: intervals over seeds (Student-t) carry RL's run-to-run variance; the "
            "bootstrap intervals resample seeds, then prompts within each seed, and carry both.",
            "Every number is read from a stage's summary.json or responses.jsonl, or computed from them "
            "(`report.json` names file and key, or the computation and its inputs, for each)."]
    lead = lead[:1 + len(proxy)] + answer + lead[1 + len(proxy):]
    kl_note = ("KL is reported per response (nats summed over the response's tokens, what `eval` measures against the "
               "SFT policy on the held-out prompts) and per token (that figure over the mean response length). The "
               "original report's 0.15–0.25 target is a per-token figure; compare it with the per-token column.")
    title = ("held-out gold gain over the SFT policy" if y is GOLD
             else "held-out gain over the SFT policy by the fp32 learned RM: a proxy, not ground truth")
    md = [f"# EdgeRLHF study ({meta['preset']} preset)", "", *[x + "\n" for x in lead],
          f"## Alignment per configuration ({title})", "", a.md(), "", kl_note, "",
          "## Comparisons (paired by seed and prompt; Holm-corrected across the table)", "", c.md(), "",
          *[f"- {v}" for v in verdicts], "",
          *(bs.md if bs is not None else []),
          *(be.md + ["Rankers: `P/m0` member 0 alone (the single RM), `P/mean|min|uwo` the members normalised on their "
                     "training pairs then averaged / worst case / mean - lambda x variance (Coste et al. 2023), "
                     "`P/warm` one RM with the members' weights averaged (Ramé et al. 2024).", ""]
            if be is not None else []),
          "## Reward-model precision: cost and agreement with fp32", "", t.md(), "",
          *(["Kendall τ, top-1 agreement and the reward std ratio are measured on the best-of-n candidates (the "
             "SFT policy's own samples, within each prompt), against the reference precision; the other columns on "
             "held-out preference pairs.", ""] if cert else []),
          *(["## Does the RM keep agreeing with the gold during RL?", "", ag.md(), "",
             "Spearman rank correlation between the RM's scores (at its precision) and the gold's over each step's "
             "rollouts; a fall means the policy found responses the RM over-rates (runs made before this metric "
             "existed are not counted).", ""] if y is GOLD else []),
          f"## Each run's {yn} change over SFT (paired over prompts)", "", g.md(), "",
          "## Stages: time, memory, and the 8 GB budget", "", s.md(), "",
          "## Where online RL's time goes", "", tt.md(), "",
          "## Charts", ""]
    md += [f"![{cap}]({src})\n" for src, cap in made]
    md += [f"## Samples (same held-out prompts, seed {base_seed})", ""]
    for smp in samples:
        md += [f"**Prompt:** {smp['prompt']}", "", f"- SFT: {smp['sft']}  *({yn} {smp['sft_score']:+.2f})*"]
        md += [f"- {a_}: {txt}  *({yn} {sc:+.2f})*" for a_, txt, sc in smp["aligned"]]
        md.append("")
    report = study / "report.md"
    atomic_write_text(report, "\n".join(md) + "\n")
    tables = [("Alignment per configuration" + ("" if y is GOLD else " (proxy: fp32 learned RM)"), a),
              ("Comparisons", c)] + (bs.tables if bs is not None else []) + \
        ([(f"Ensemble: {k}", tb) for k, tb in be.tables] if be is not None else []) + \
        [("Reward-model precision", t)] + \
        ([("RM-vs-gold agreement during RL", ag)] if y is GOLD else []) + \
        [(f"Each run's {yn} change over SFT", g), ("Stages", s), ("Where online RL's time goes", tt)]
    atomic_write_text(study / "report.html", _html(meta, lead, kl_note, verdicts, tables, made, samples))
    atomic_write_json(study / "report.json", {
        "yardstick": y._asdict(), "cells": [x for _, tb in tables for x in tb.sources],
        "charts": [src for src, _ in made],
        "comparisons": [{"a": r["a"], "b": r["b"], "kind": r["kind"], "seeds": r["seeds"], "diff": r["cmp"].diff,
                         "ci_seeds": list(r["cmp"].seeds[:3]), "ci_both": list(r["cmp"].both[:3]),
                         "p_improvement": r["cmp"].p_improvement, "p": r["cmp"].p_value, "p_holm": r["p_holm"],
                         "detectable": r["mde"], "ci90_seeds": list(r["ci90"][:3]), "margin": r["margin"],
                         "equivalence": r["eq"].verdict, "certifiable": r["eq"].certifiable, "verdict": _verdict(r)}
                        for r in rows],
        "equivalence_margin": str(margin), "headline": answer,
        "best_of_n": [] if bs is None else [
            {"precision": r["precision"], "reference": r["reference"], "n": r["n"], "diff": r["diff"],
             "ci95_prompts": list(r["ci95"][1:3]), "ci90_prompts": list(r["ci90"][1:3]), "p": r["p"],
             "p_holm": r["p_holm"], "margin": r["eq"].margin, "equivalence": r["eq"].verdict,
             "certifiable": r["eq"].certifiable, "verdict": verdict_text(r)} for r in bs.verdicts],
        "best_of_n_margin_rule": bs.margin_rule if bs is not None else "",
        "best_of_n_ensemble": [] if be is None else [
            {"ranker": r["precision"], "reference": r["reference"], "n": r["n"], "diff": r["diff"],
             "ci90_prompts": list(r["ci90"][1:3]), "p_holm": r["p_holm"], "equivalence": r["eq"].verdict,
             "verdict": verdict_text(r)} for r in be.verdicts]})
    return report


def _headline(rows: list[dict], names: dict[str, tuple[str, str]], bs, bon) -> list[str]:
    """Per RM precision other than the reference: what was shown, and on which instrument (best-of-n over prompts,
    each online algorithm over its seeds); the control arm's gain beside them."""
    out = []
    precs = list(dict.fromkeys(p for _, p in names.values() if p and p != NULL))
    if bon is not None:
        precs = list(dict.fromkeys(precs + list(bon.summary.get("precisions", {}))))
    for p in precs[1:]:
        parts = []
        if bs is not None:
            h = bon_headline(bs.verdicts, p, bon.summary["N"], bon.summary["prompts"])
            parts += [h] if h else []
        for r in rows:
            if r["kind"] == "precision" and names[r["a"]][1] == p:
                parts.append(f"{names[r['a']][0]} ({len(r['seeds'])} seed{'s' * (len(r['seeds']) != 1)}): "
                             f"{_verdict(r)}")
        if parts:
            out.append(f"**{p} RM against {precs[0]}** — " + "; ".join(parts) + ".")
    for r in rows:
        if r["kind"] == "control":
            out.append(f"**Control**: {r['a']} against {r['b']} (the same training on a random reward): "
                       f"{_verdict(r)}.")
    return out


def _samples(arms: dict[str, list[Run]], base_seed: int, n: int, y: Yardstick = GOLD) -> list[dict]:
    by = {}
    for a, rs in arms.items():
        r = next((x for x in rs if x.seed == base_seed), rs[0])
        by[a] = responses_of(r.eval.path)
    first = next(iter(by.values()), [])
    return [{"prompt": r["prompt"], "sft": r.get("baseline_response", ""), "sft_score": r.get(y.base_resp, math.nan),
             "aligned": [(a, rows[i]["response"], rows[i].get(y.resp, math.nan))
                         for a, rows in by.items() if i < len(rows)]}
            for i, r in enumerate(first[:n])]


def _html(meta, lead, kl_note, verdicts, tables, charts, samples) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>EdgeRLHF study</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}</style></head><body>",
             f"<h1>EdgeRLHF study ({e(str(meta['preset']))} preset)</h1>"]
    parts += [f"<p>{e(x.replace('**', ''))}</p>" for x in lead]
    for i, (title, tb) in enumerate(tables):
        parts += [f"<h2>{e(title)}</h2>", tb.html()]
        if i == 0:
            parts.append(f"<p>{e(kl_note)}</p>")
        if i == 1:
            parts.append("<ul>" + "".join(f"<li>{e(v)}</li>" for v in verdicts) + "</ul>")
    parts.append("<h2>Charts</h2>")
    parts += [f"<figure><img src='{e(src)}' alt='{e(c)}'><figcaption>{e(c)}</figcaption></figure>" for src, c in charts]
    parts.append(f"<h2>Samples (same held-out prompts, seed {meta['seed']})</h2>")
    for smp in samples:
        yn = meta.get("yardstick", "gold")
        items = [f"<li>SFT: {e(smp['sft'])} <em>({yn} {smp['sft_score']:+.2f})</em></li>"]
        items += [f"<li>{e(a)}: {e(txt)} <em>({yn} {sc:+.2f})</em></li>" for a, txt, sc in smp["aligned"]]
        parts.append(f"<p><b>Prompt:</b> {e(smp['prompt'])}</p><ul>{''.join(items)}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
