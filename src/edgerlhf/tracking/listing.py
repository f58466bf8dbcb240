"""``edgerlhf runs`` and ``edgerlhf compare``: read run folders back (status, key metrics, wall time)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

# the few numbers that say how a stage went, per stage
KEY_METRICS = {
    "sft": [("eval loss", "eval/loss_after", "{:.3f}"), ("gold", "eval/gold_mean", "{:+.3f}")],
    "prefs": [("pairs", "pairs_train", "{}")],
    "reward": [("acc gold", "eval/accuracy_gold", "{:.3f}"), ("spearman", "eval/spearman_gold", "{:.3f}")],
    "rm-eval": [("pairs", "pairs", "{}")],
    "ppo": [("RM score", "objective/scores_last", "{:+.3f}"), ("gold", "objective/gold_last", "{:+.3f}"),
            ("KL", "objective/kl_last", "{:.2f}")],
    "eval": [("gold", "eval/gold_mean", "{:+.3f}"), ("gain", "eval/gold_gain", "{:+.3f}"), ("win", "eval/win_rate", "{:.3f}")],
}


def _read(path: Path) -> dict:
    cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    status = (path / "status").read_text().strip() if (path / "status").is_file() else "?"
    return {"path": path, "stage": cfg.get("stage", "?"), "status": status, "config": cfg, "summary": summary}


def find_runs(root: str | Path, max_depth: int = 3) -> list[dict]:
    """Run folders (a config.yaml and a status file) under ``root``, oldest first."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    found, frontier = [], [(root, 0)]
    while frontier:
        d, depth = frontier.pop()
        if (d / "config.yaml").is_file() and (d / "status").is_file():
            found.append(_read(d))
            continue
        if depth < max_depth:
            frontier += [(c, depth + 1) for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
    return sorted(found, key=lambda r: (r["path"] / "config.yaml").stat().st_mtime)


def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    try:
        return spec.format(v)
    except (ValueError, TypeError):
        return str(v)


def runs_table(root: str | Path) -> str:
    rows = [["run", "stage", "status", "wall", "peak MB", "key metrics"]]
    for r in find_runs(root):
        s = r["summary"]
        keys = ", ".join(f"{n} {_fmt(s.get(k), f)}" for n, k, f in KEY_METRICS.get(r["stage"], []) if k in s)
        wall = s.get("wall_time_s")
        rows.append([str(r["path"]), r["stage"], r["status"], _fmt(wall / 60 if wall else None, "{:.1f} min"),
                     _fmt(s.get("memory/peak_mb"), "{:.0f}"), keys])
    return _align(rows) if len(rows) > 1 else f"no runs under {root}"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[f"{prefix}{k}"] = v
    return out


def compare_table(paths: list[str | Path]) -> str:
    """Side by side: the config keys that differ, then every numeric summary value."""
    runs = [_read(Path(p)) for p in paths]
    for r in runs:
        if not r["summary"]:
            raise FileNotFoundError(f"{r['path']} has no summary.json (status: {r['status']})")
    head = [["", *[r["path"].name for r in runs]], ["stage", *[r["stage"] for r in runs]],
            ["status", *[r["status"] for r in runs]]]
    cfgs = [_flat(r["config"]) for r in runs]
    keys = sorted({k for c in cfgs for k in c} - {"run_name", "output_dir"})
    diff = [[f"config: {k}", *[str(c.get(k, "–")) for c in cfgs]] for k in keys
            if len({json.dumps(c.get(k), default=str) for c in cfgs}) > 1]
    sums = [_flat(r["summary"]) for r in runs]
    nums = sorted({k for s in sums for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    metric_rows = [[k, *[_fmt(s.get(k), "{:.4g}") for s in sums]] for k in nums]
    return _align(head + diff + metric_rows)


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
