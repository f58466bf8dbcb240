"""``edgerlhf runs`` and ``edgerlhf compare``: read run folders back (status, key metrics, wall time)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from edgerlhf import registry
from edgerlhf.runfolder import RunFolder, find_runs

__all__ = ["compare_table", "find_runs", "runs_table"]


def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    try:
        return spec.format(v)
    except (ValueError, TypeError):
        return str(v)


def key_metrics(stage: str) -> tuple:
    """The (label, summary key, format) triples ``edgerlhf runs`` shows for a stage (the registry's)."""
    return registry.get(stage).key_metrics if stage in registry.names() else ()


def runs_table(root: str | Path) -> str:
    rows = [["run", "stage", "status", "wall", "peak MB", "key metrics"]]
    for r in find_runs(root):
        s = r.summary
        keys = ", ".join(f"{n} {_fmt(s.get(k), f)}" for n, k, f in key_metrics(r.stage) if k in s)
        wall = s.get("wall_time_s")
        rows.append([str(r.path), r.stage, r.status or "?", _fmt(wall / 60 if wall else None, "{:.1f} min"),
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
    runs = [RunFolder(p) for p in paths]
    for r in runs:
        r.require_summary()
    head = [["", *[r.name for r in runs]], ["stage", *[r.stage for r in runs]], ["status", *[r.status for r in runs]]]
    cfgs = [_flat(r.config) for r in runs]
    keys = sorted({k for c in cfgs for k in c} - {"run_name", "output_dir"})
    diff = [[f"config: {k}", *[str(c.get(k, "–")) for c in cfgs]] for k in keys
            if len({json.dumps(c.get(k), default=str) for c in cfgs}) > 1]
    sums = [_flat(r.summary) for r in runs]
    nums = sorted({k for s in sums for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    metric_rows = [[k, *[_fmt(s.get(k), "{:.4g}") for s in sums]] for k in nums]
    return _align(head + diff + metric_rows)


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
