"""The study's records, as the report reads them: every stage a study ran (:class:`StageRecord`), every arm at
every seed (:class:`Run`), the yardstick the report judges by (the gold, or the fp32 RM as a named proxy), and the
per-prompt gains and training curves read from the stages' run folders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from edgerlhf import registry
from edgerlhf.rewards.metrics import length_controlled_gains, length_slope, words
from edgerlhf.runfolder import RunFolder

BUDGET_MB = 8 * 1024  # the edge budget: a consumer GPU with 8 GB, or 8 GB of RAM
NULL = "null"  # ``ppo@null``: an algorithm's control arm, trained against a fixed-seed random reward (reward=random)


@dataclass
class StageRecord:
    """One stage of a study: which, its folder, whether it was reused, its wall time and its summary."""
    stage: str
    label: str
    path: Path
    reused: bool
    wall_s: float
    summary: dict = field(default_factory=dict)
    attempts: int = 1  # under the Ray executor: how many times it was started (a worker died: retried)


def summary_of(path: Path) -> dict:
    return RunFolder(path).require_summary()


def metrics_of(path: Path) -> list[dict]:
    return RunFolder(path).metrics()


def responses_of(path: Path) -> list[dict]:
    f = Path(path) / "responses.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


def peak_mb(rec) -> float | None:
    """A stage's peak memory; rm-eval measures each precision in its own process: the largest of those."""
    if rec.summary.get("memory/peak_mb") is not None:
        return rec.summary["memory/peak_mb"]
    peaks = [v.get("memory/peak_mb") for v in rec.summary.get("precisions", {}).values() if v.get("memory/peak_mb")]
    return max(peaks) if peaks else None


class Yardstick(NamedTuple):
    """Which score the report judges policies by, and where each evaluation keeps it."""

    name: str       # "gold", or "RM" (no gold: the fp32 learned reward model, a proxy)
    resp: str       # responses.jsonl: the policy's score / the baseline's
    base_resp: str
    gain: str       # summary.json keys
    mean: str
    base_mean: str
    win: str


GOLD = Yardstick("gold", "gold", "baseline_gold", "eval/gold_gain", "eval/gold_mean", "baseline/gold_mean",
                 "eval/win_rate")


PROXY = Yardstick("RM", "rm", "baseline_rm", "eval/rm_gain", "eval/rm_mean", "baseline/rm_mean", "eval/rm_win_rate")


def yardstick(evals: list) -> Yardstick:
    """GOLD when every evaluation has a gold score, else PROXY (a study whose task says ``gold: none``)."""
    return GOLD if evals and all("eval/gold_mean" in e.summary for e in evals) else PROXY


class Run(NamedTuple):
    """One arm at one seed: its training stage and its evaluation (StageRecords)."""

    seed: int
    train: object
    eval: object


def arm_runs(runs: dict) -> dict[str, list[Run]]:
    """{arm name: [Run per seed, in seed order]} from the pipeline's {Arm: {seed: (train, eval)}}."""
    return {arm.name: [Run(s, t, e) for s, (t, e) in by_seed.items()] for arm, by_seed in runs.items()}


def _per_seed(rs: list[Run], cache: dict | None, kind: str, of_rows) -> list[list[float]]:
    """``of_rows(responses.jsonl rows) -> per-prompt list or None`` of each seed's evaluation, read once per report
    (``cache``); [] when an evaluation lacks what it needs or the seeds' prompt counts differ."""
    out = []
    cache = {} if cache is None else cache
    for r in rs:
        key = (kind, r.eval.path)
        if key not in cache:
            cache[key] = of_rows(responses_of(r.eval.path))
        if cache[key] is None:
            return []
        out.append(cache[key])
    return out if len({len(g) for g in out}) == 1 else []


def gains(rs: list[Run], y: Yardstick = GOLD, cache: dict | None = None) -> list[list[float]]:
    """gains[seed][prompt]: the held-out score (gold, or the proxy RM's) of each response minus the SFT policy's
    on the same prompt. ``cache`` (one report's) keeps each evaluation's gains, so its responses.jsonl is read once."""
    def raw(rows):
        ok = rows and all(y.resp in x and y.base_resp in x for x in rows)
        return [x[y.resp] - x[y.base_resp] for x in rows] if ok else None
    return _per_seed(rs, cache, "raw", raw)


def controlled_gains(rs: list[Run], y: Yardstick = GOLD, cache: dict | None = None) -> list[list[float]]:
    """As :func:`gains`, with length's share removed (``rewards.metrics.length_controlled_gains``: the slope of the
    score on the response's words fitted on the SFT policy's responses of the same evaluation)."""
    def controlled(rows):
        need = (y.resp, y.base_resp, "response", "baseline_response")
        if len(rows) < 2 or not all(k in x for x in rows for k in need):
            return None
        la = [words(x["response"]) for x in rows]
        lb = [words(x["baseline_response"]) for x in rows]
        b = [x[y.base_resp] for x in rows]
        return length_controlled_gains([x[y.resp] for x in rows], la, b, lb, length_slope(b, lb))
    return _per_seed(rs, cache, "length-controlled", controlled)


def response_files(rs: list[Run]) -> list[str]:
    return [f"{r.eval.path.name}/responses.jsonl" for r in rs]


def is_online(rs: list[Run]) -> bool:
    return registry.get(rs[0].train.stage).online


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def curve(rs: list[Run], key: str) -> tuple[list[list[tuple[int, float]]], list[tuple[int, float]]]:
    """Per-seed (step, value) curves of a training metric, and their mean over the seeds that logged each step."""
    per = []
    for r in rs:
        pts = [(m["step"], m[key]) for m in metrics_of(r.train.path) if isinstance(m.get(key), (int, float))]
        if pts:
            per.append(pts)
    steps = sorted({s for c in per for s, _ in c})
    mean = [(s, sum(v for c in per for t, v in c if t == s) / sum(1 for c in per for t, _ in c if t == s))
            for s in steps]
    return per, mean


def stage_records(study: Path, index: dict):
    return [StageRecord(s["stage"], s["label"], study / s["path"], s["reused"], s["wall_s"] or 0.0,
                        summary_of(study / s["path"]), s.get("attempts", 1)) for s in index["stages"]]
