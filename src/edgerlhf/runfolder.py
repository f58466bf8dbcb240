"""Reading a run folder back: the one reader every command uses (``edgerlhf runs`` / ``compare``, the study's reuse
and report, the planner's check, eval's baseline reuse, online RL's resume, config checks of an input artifact).

    <run>/config.yaml     the resolved config of the stage (``stage`` plus every field)
    <run>/status          running | finished | failed | interrupted
    <run>/summary.json    the stage's final numbers (written atomically at the end)
    <run>/metrics.jsonl   one row per logged step
    <run>/adapter/ | model/ | the folder itself     the artifact, marked by ``edgerlhf.json`` (its metadata)

Writing is :class:`edgerlhf.tracking.run.RunDir`'s. This module is a leaf: it imports nothing of EdgeRLHF and no
torch, so the configuration layer (checks of an input artifact) and a listing of runs can read folders cheaply.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import yaml

ARTIFACT_META = "edgerlhf.json"

__all__ = ["ARTIFACT_META", "RunFolder", "find_artifact", "find_runs", "is_run_folder", "read_artifact_meta"]


def find_artifact(path: str | Path) -> Path:
    """The artifact of a run folder, or ``path`` itself when it is one (it holds ``edgerlhf.json``)."""
    p = Path(path).expanduser()
    for cand in (p, p / "adapter", p / "model"):
        if (cand / ARTIFACT_META).is_file():
            return cand
    raise FileNotFoundError(f"no EdgeRLHF artifact in {p}: expected {ARTIFACT_META} in it or in its adapter/ "
                            "or model/ folder (did the stage finish? see its status file)")


def read_artifact_meta(path: str | Path) -> dict:
    """An artifact folder's metadata (``edgerlhf.json``: stage, kind, base model, chat template, precision, ...)."""
    f = Path(path) / ARTIFACT_META
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not an EdgeRLHF artifact (no {ARTIFACT_META}); pass a run folder's "
                                "adapter/ or model/ folder, or the run folder itself")
    return json.loads(f.read_text())


def is_run_folder(path: str | Path) -> bool:
    p = Path(path)
    return (p / "config.yaml").is_file() and (p / "status").is_file()


class RunFolder:
    """One run folder, read lazily: ``config`` (dict), ``stage``, ``status``, ``summary``, ``metrics()``,
    ``artifact`` and ``artifact_meta``. Missing parts read as empty (``status`` as ``""``), so a half-written or
    crashed run can be listed; :meth:`require_summary` is the strict form."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def config(self) -> dict:
        f = self.path / "config.yaml"
        return (yaml.safe_load(f.read_text()) or {}) if f.is_file() else {}

    @property
    def stage(self) -> str:
        return self.config.get("stage", "?")

    @property
    def status(self) -> str:
        f = self.path / "status"
        return f.read_text().strip() if f.is_file() else ""

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @cached_property
    def summary(self) -> dict:
        f = self.path / "summary.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    def require_summary(self) -> dict:
        if not (self.path / "summary.json").is_file():
            raise FileNotFoundError(f"{self.path} has no summary.json (status: {self.status or '?'})")
        return self.summary

    def metrics(self, with_key: str | None = None) -> list[dict]:
        """The rows of ``metrics.jsonl`` (those that have ``with_key``), in file order; a line cut by an
        interruption is skipped."""
        f = self.path / "metrics.jsonl"
        rows = []
        for line in (f.read_text().splitlines() if f.is_file() else []):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if with_key is None or with_key in row:
                rows.append(row)
        return rows

    def last_per_step(self, with_key: str) -> list[dict]:
        """One row per step (the last one logged for it: a resumed run logs a step again), sorted by step."""
        rows = {r["step"]: r for r in self.metrics(with_key)}
        return [rows[k] for k in sorted(rows)]

    @property
    def artifact(self) -> Path:
        return find_artifact(self.path)

    @cached_property
    def artifact_meta(self) -> dict:
        return read_artifact_meta(self.artifact)

    def file(self, name: str) -> Path:
        return self.path / name


def find_runs(root: str | Path, max_depth: int = 3) -> list[RunFolder]:
    """Run folders under ``root`` (hidden folders skipped: a study's set-aside attempts), oldest first."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    found, frontier = [], [(root, 0)]
    while frontier:
        d, depth = frontier.pop()
        if is_run_folder(d):
            found.append(RunFolder(d))
            continue
        if depth < max_depth:
            frontier += [(c, depth + 1) for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
    return sorted(found, key=lambda r: (r.path / "config.yaml").stat().st_mtime)
