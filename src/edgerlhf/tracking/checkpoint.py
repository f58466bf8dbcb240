"""Atomic training checkpoints that resume exactly.

    <run>/checkpoints/step-000012/
      trainable.safetensors   every trainable tensor (adapters, value head) by a stable name
      optimizer.pt            optimizer and scheduler state
      rng.pt                  python, numpy, torch (and CUDA) random states
      state.json              step, data position, KL coefficient, counters, batch sizes

A checkpoint folder is filled under a temporary name, fsynced and renamed (:func:`atomic_write_dir`), so a
crash mid-write leaves no folder that :func:`latest_checkpoint` would take as the latest.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from edgerlhf.tracking.run import atomic_write_dir

_NAME = re.compile(r"^step-(\d+)$")


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    state["numpy"] = np.random.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_path: Path, step: int, tensors: dict[str, torch.Tensor], optimizer, scheduler,
                    state: dict, keep: int) -> Path:
    def fill(tmp: Path):
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2) + "\n")

    root = Path(run_path) / "checkpoints"
    out = atomic_write_dir(checkpoint_path(run_path, step), fill)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return out


def checkpoint_path(run_path: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives in a run folder."""
    return Path(run_path) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary ``.step-*`` folders are never listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _NAME.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest complete one of a run folder."""
    p = Path(path).expanduser()
    if (p / "state.json").is_file():
        return p
    found = list_checkpoints(p / "checkpoints")
    if not found:
        raise FileNotFoundError(f"no checkpoint in {p} (expected {p}/checkpoints/step-NNNNNN/; a run writes them every "
                                "save_steps steps and on Ctrl-C)")
    return found[-1]


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    opt = torch.load(path / "optimizer.pt", map_location=map_location, weights_only=False)
    return {"tensors": load_file(str(path / "trainable.safetensors")), "optimizer": opt["optimizer"],
            "scheduler": opt["scheduler"], "rng": torch.load(path / "rng.pt", weights_only=False),
            "state": json.loads((path / "state.json").read_text())}
