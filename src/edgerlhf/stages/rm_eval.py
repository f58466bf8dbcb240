"""Reward-model precision study: size, memory, speed and agreement with the fp32 RM, per precision.

Each precision is measured in its own process, so its peak memory is its own (``ru_maxrss`` and the
allocator's cached pages never go down inside one process). The fp32 RM is always scored too: it is the
reference every agreement number is measured against.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch

from edgerlhf.config import RMEvalConfig, check_precision
from edgerlhf.config.refs import ensemble_meta
from edgerlhf.data.loaders import load_preference_rows
from edgerlhf.models.adapters import find_artifact, read_artifact_meta, write_artifact_meta
from edgerlhf.models.precision import default_precisions, linear_weight_dtypes, parse_precisions, stored_bytes
from edgerlhf.rewards.ensemble import EnsembleReward, member_dirs, warm_model
from edgerlhf.rewards.learned import encode_for_rm, merged_fp32, to_precision
from edgerlhf.rewards.metrics import agreement_with_labels, agreement_with_reference
from edgerlhf.rewards.serving import load_reward
from edgerlhf.stages.skeleton import Context, Setup, run_stage
from edgerlhf.tracking import PeakMemory
from edgerlhf.tracking.isolate import run_isolated
from edgerlhf.tracking.memory import release_free_memory
from edgerlhf.tracking.run import atomic_write_dir

TABLE_COLUMNS = [
    ("precision", "precision", "{}"), ("weights MB", "weight_mb", "{:.1f}"), ("peak MB", "memory/peak_mb", "{:.0f}"),
    ("load peak MB", "memory/load_peak_mb", "{:.0f}"),
    ("s/batch", "latency_s_per_batch", "{:.2f}"), ("pairs/s", "pairs_per_s", "{:.1f}"),
    ("acc gold", "accuracy_gold", "{:.3f}"), ("acc vs fp32", "accuracy_vs_ref", "{:.3f}"),
    ("spearman fp32", "spearman_vs_ref", "{:.3f}"), ("mean|d|/std", "mean_abs_dev_over_std", "{:.3f}"),
    ("max|d|/std", "max_abs_dev_over_std", "{:.3f}"), ("flip rate", "flip_rate", "{:.3f}"),
]


def held_out_pairs(cfg: RMEvalConfig) -> list[dict]:
    """The pairs to measure on: ``cfg.pairs`` or the held-out split of the prefs run the RM trained on."""
    src = cfg.pairs
    if not src:
        meta = read_artifact_meta(find_artifact(cfg.rm))
        prefs = meta.get("prefs", "")
        cand = Path(prefs) / "pairs" / "eval.jsonl"
        if not cand.is_file():
            raise FileNotFoundError(f"the RM at {cfg.rm} does not name a prefs run with pairs/eval.jsonl "
                                    f"(found {prefs!r}); pass pairs=<held-out preference file>")
        src = str(cand)
    rows, _ = load_preference_rows(src)
    rows = [r for r in rows if not r.get("near_tie", False)]
    return rows[: cfg.max_pairs] if cfg.max_pairs else rows


def _measure(rm_path: str, precision: str, device: str, batch_size: int, pairs: list[dict], ensemble: str = "auto",
             layout: str = "shared", uwo_lambda: float = 0.5) -> dict:
    """Child process: load at ``precision``, score the pairs, report size/latency/memory and scores. An ensemble
    served by mean|min|uwo also reports ``rankers``: every member's scores and every aggregation's, from one pass of
    each member."""
    torch.manual_seed(0)
    with PeakMemory() as load_pm:  # loading merges the LoRA in fp32 first, then converts: a one-off peak
        t0 = time.perf_counter()
        rm = load_reward(rm_path, precision, device=device, batch_size=batch_size, ensemble=ensemble,
                         layout=layout, uwo_lambda=uwo_lambda)
        load_s = time.perf_counter() - t0
    gc.collect()
    release_free_memory()  # hand what loading freed back to the OS: the serving peak is not the loading peak
    members = isinstance(rm, EnsembleReward)
    with PeakMemory() as pm:  # what holding and using the RM at this precision costs
        prompts = [p["prompt"] for p in pairs]
        chosen = encode_for_rm(rm.tokenizer, prompts, [p["chosen"] for p in pairs], rm.max_length)
        rejected = encode_for_rm(rm.tokenizer, prompts, [p["rejected"] for p in pairs], rm.max_length)
        half = max(1, batch_size // 2)
        rm.score_pairs(chosen[:half], rejected[:half])  # warm-up (first call pays one-off kernel set-up)
        t0 = time.perf_counter()
        if members:
            rankers = rm.rankers(rm.member_score_pairs(chosen, rejected))
            scores = rankers[rm.how]
        else:
            rc, rr = rm.score_pairs(chosen, rejected)  # each pair's prompt once
            scores, rankers = rc + rr, {}
        score_s = time.perf_counter() - t0
    n_batches = 2 * len(pairs) / batch_size  # seconds per `batch_size` sequences (length-sorted pair batches)
    size = rm.stored_bytes() if members else stored_bytes(rm.model)
    model = rm.members[0].model if members else rm.model
    return {"precision": precision, "backend": rm.meta.get("backend", "torch"),
            "compute_dtype": rm.meta.get("compute_dtype"),
            "high_precision_modules": rm.meta.get("high_precision_modules"),
            "ensemble": rm.meta.get("ensemble"), "ensemble_layout": rm.meta.get("ensemble_layout"),
            "weight_bytes": size["total"], "weight_mb": size["total"] / 2**20, "bytes_by_dtype": size["by_dtype"],
            "linear_weight_dtypes": linear_weight_dtypes(model), "load_s": load_s,
            "latency_s_per_batch": score_s / n_batches, "pairs_per_s": len(pairs) / score_s,
            **pm.as_metrics(), "memory/load_peak_mb": load_pm.as_metrics()["memory/peak_mb"], "scores": scores,
            "rankers": rankers}


def measure(rm_path: str, precision: str, device: str, batch_size: int, pairs: list[dict],
            isolate: bool = True, ensemble: str = "auto", layout: str = "shared", uwo_lambda: float = 0.5) -> dict:
    """One precision measured, in a process of its own by default (so its peak memory is its own); ``ensemble``,
    ``layout``, ``uwo_lambda``: how an ensemble RM serves."""
    args = (rm_path, precision, device, batch_size, pairs, ensemble, layout, uwo_lambda)
    if not isolate:
        return _measure(*args)
    return run_isolated(_measure, *args, what=f"measuring {precision}")


def format_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _, _ in TABLE_COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, key, fmt in TABLE_COLUMNS:
            v = r.get(key)
            cells.append(fmt.format(v) if v is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(cfg: RMEvalConfig) -> Path:
    """Measure the RM at each precision; returns the run folder (``table.md``, ``summary.json``)."""
    return run_stage(cfg, _prepare, _measure_all)


def _prepare(setup: Setup):
    """The precisions and the held-out pairs, validated before the run folder exists."""
    cfg = setup.cfg
    return parse_precisions(cfg.precisions) if cfg.precisions else default_precisions(setup.device), held_out_pairs(cfg)


def _rows(r: dict, prec: str, ensemble: bool) -> list[dict]:
    """One measurement as table rows: itself, or for an ensemble one row per member and aggregation (they share the
    layout's memory and time: one pass of each member gives them all)."""
    if not ensemble or not r["rankers"]:
        return [{**r, "precision": prec if not ensemble else f"{prec}/{r['ensemble']}"}]
    return [{**r, "precision": f"{prec}/{who}", "scores": s} for who, s in r["rankers"].items()]


def _measure_all(ctx: Context, data) -> dict:
    cfg, device, run_dir = ctx.cfg, ctx.device, ctx.run_dir
    precisions, pairs = data
    n = len(pairs)
    ref_rm = cfg.reference or cfg.rm
    ens = ensemble_meta(cfg.rm) is not None
    # an ensemble: its members and aggregations in the configured layout, and WARM (one RM) beside them
    ways = [{"ensemble": cfg.ensemble, "layout": cfg.ensemble_layout, "uwo_lambda": cfg.uwo_lambda}]
    if ens and cfg.ensemble in ("auto", "mean", "min", "uwo"):
        ways.append({"ensemble": "warm"})
    ref_ways = ways if ens and ref_rm == cfg.rm else [{}]
    ref_rows = [_rows(measure(ref_rm, "fp32", str(device), cfg.batch_size, pairs, cfg.isolate, **w), "fp32", bool(w))
                for w in ref_ways]  # 1 the reference: fp32
    refs = {r["precision"].partition("/")[2]: r for rows in ref_rows for r in rows}
    results, i = [], 0
    for prec in precisions:  # 2 each precision (and each way of serving an ensemble) in its own process
        for wi, w in enumerate(ways if ens else [{}]):
            if prec == "fp32" and ref_rm == cfg.rm:
                rows = [dict(r) for r in ref_rows[wi]]
            else:
                rows = _rows(measure(cfg.rm, prec, str(device), cfg.batch_size, pairs, cfg.isolate, **w), prec,
                             bool(w))
            for r in rows:
                ref = refs.get(r["precision"].partition("/")[2]) or refs[""]  # the same ranker at fp32
                c, rj = r["scores"][:n], r["scores"][n:]
                r.update(agreement_with_reference(ref["scores"][:n], ref["scores"][n:], c, rj))
                if all("gold_chosen" in p for p in pairs):
                    r["accuracy_gold"] = agreement_with_labels(c, rj, [p["gold_chosen"] for p in pairs],
                                                               [p["gold_rejected"] for p in pairs])
                r["accuracy_labels"] = sum(a > b for a, b in zip(c, rj)) / n
                run_dir.log({f"{r['precision']}/{k}": v for k, v in r.items() if isinstance(v, (int, float))}, step=i)
                i += 1
                results.append(r)
    table = format_table(results)
    (run_dir.path / "table.md").write_text(table + "\n")
    what = f"an ensemble of {len(read_artifact_meta(find_artifact(cfg.rm))['members'])} " if ens else ""
    print(f"\n[rm-eval] {what}{cfg.rm} on {device}, {n} held-out pairs, batch {cfg.batch_size}\n{table}")
    for r in results:
        print(f"  {r['precision']}: {r['backend']}; block linears stored as {r['linear_weight_dtypes']}; "
              f"high precision: {r['high_precision_modules']}")
    return {"rm": cfg.rm, "reference": ref_rm, "device": str(device), "pairs": n, "batch_size": cfg.batch_size,
            "precisions": {r["precision"]: {k: v for k, v in r.items() if k not in ("scores", "rankers")}
                           for r in results}}


def quantize(rm: str, precision: str, out: str | None = None, device: str = "cpu", ensemble: str = "auto") -> Path:
    """Write a quantized RM folder that reloads with :func:`load_reward_model` (precision as stored). An ensemble
    is quantized as its WARM model (``ensemble=warm``: one RM) or one member (``member-N``)."""
    check_precision(precision)
    art = find_artifact(rm)
    meta = read_artifact_meta(art)
    if meta.get("kind") == "quantized":
        raise ValueError(f"{art} is already quantized ({meta['precision']}); quantize the original RM")
    dest = Path(out) if out else art.parent / f"rm-{precision}"
    if meta.get("kind") == "ensemble":
        if ensemble == "warm":
            model, tok = warm_model(art, meta)
        elif ensemble.startswith("member-") and ensemble[7:].isdigit() and int(ensemble[7:]) < len(meta["members"]):
            d = member_dirs(art, meta)[int(ensemble[7:])]
            model, tok = merged_fp32(d, read_artifact_meta(d))
        else:
            raise ValueError(f"{art} is an ensemble of {len(meta['members'])} RMs: one folder holds one model; "
                             "quantize its WARM model (ensemble=warm) or one member (ensemble=member-N), or serve the "
                             "ensemble at a precision (reward_precision=int4)")
        meta = {**meta, "kind": "lora", "ensemble": ensemble}
    else:
        model, tok = merged_fp32(art, meta)
    model, info = to_precision(model, tok, precision, device)
    size = stored_bytes(model)

    def fill(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_artifact_meta(tmp, **{**meta, **info, "kind": "quantized", "source": str(art),
                                    "weight_bytes": size["total"], "bytes_by_dtype": size["by_dtype"]})

    atomic_write_dir(dest, fill)
    print(f"[quantize] {art} -> {dest} at {precision} ({info['backend']}): {size['total'] / 2**20:.1f} MB of weights")
    return dest

