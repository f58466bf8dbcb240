"""Checkpoints, exact resume and the Ctrl-C / SIGTERM stop: what lets a run continue where it left off."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path

from edgerlhf.config import ConfigError, OnlineRLConfig
from edgerlhf.distributed import barrier, is_main, world
from edgerlhf.runfolder import RunFolder
from edgerlhf.stages.online.session import Counters, Session
from edgerlhf.tracking.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from edgerlhf.tracking.run import say


class Interrupt:
    """First Ctrl-C or SIGTERM (what ``timeout``, job schedulers and container stops send): finish the
    current step, write a checkpoint, stop as interrupted. A second one stops at once — unless it comes within
    ``SAME_EVENT_S`` of the first: one event often arrives as several signals (a dying multi-threaded parent sends its
    death signal once per thread it passes through; Ray also signals a dead worker's process group), and taking the
    echo for "stop now" would lose the checkpoint the first one asked for."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    SAME_EVENT_S = 1.0

    def __init__(self, name: str):
        self.name = name
        self.requested = False
        self._first = 0.0
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.requested:
                    if time.monotonic() - self._first < self.SAME_EVENT_S:
                        return  # the same event again
                    raise KeyboardInterrupt
                self.requested = True
                self._first = time.monotonic()
                what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                say(f"\n[{self.name}] {what}: finishing this step, then writing a checkpoint (again to stop now)")

            for s in self.SIGNALS:
                self._old[s] = signal.getsignal(s)
                signal.signal(s, handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def resume_config(cfg: OnlineRLConfig) -> tuple[OnlineRLConfig, Path, Path]:
    """(config to run, run folder to continue, checkpoint) for ``resume=``; the stored config must agree."""
    ckpt = latest_checkpoint(cfg.resume)
    run_path = ckpt.parent.parent
    stored = dict(RunFolder(run_path).config)
    if stored.get("stage") != cfg.stage:
        raise ConfigError([f"resume={cfg.resume!r} is a {stored.get('stage')!r} run; resume it with "
                           f"`edgerlhf {stored.get('stage')} resume=...`"], str(run_path / "config.yaml"))
    ours = dict(vars(cfg))
    diff = [k for k in stored if k != "stage" and k not in cfg.RESUMABLE and stored[k] != ours.get(k)]
    if diff:
        raise ConfigError([f"{k}={ours.get(k)!r} differs from the resumed run's {stored[k]!r} (only "
                           f"{', '.join(sorted(cfg.RESUMABLE - {'resume'}))} may change on resume)" for k in diff],
                          str(run_path / "config.yaml"))
    return cfg, run_path, ckpt


def resume_base(resume: str) -> dict:
    """The stored config of the run ``resume`` points at (the CLI's base for ``edgerlhf ppo resume=...``)."""
    stored = dict(RunFolder(latest_checkpoint(resume).parent.parent).config)
    stored.pop("stage", None)
    return stored


def logged_steps(path: Path) -> list[dict]:
    """The per-step metrics already in a run folder (last value per step, e.g. after an earlier resume)."""
    return RunFolder(path).last_per_step("objective/scores")


def checkpoint(s: Session, step: int) -> Path:
    """Write the checkpoint of ``step``: the main process writes it; every process waits until it is complete."""
    if is_main():
        save_checkpoint(s.run_dir.path, step, s.roles.trainable_state(), s.optimizer, s.scheduler,
                        {"algorithm": s.algo.state(), "sizes": dataclasses.asdict(s.sizes),
                         "counters": dataclasses.asdict(s.counters), "world_size": world()[1]}, s.cfg.save_total_limit)
    barrier()
    return checkpoint_path(s.run_dir.path, step)


def restore(s: Session, ckpt: Path) -> None:
    """Continue ``s`` from checkpoint ``ckpt``: trainable weights, optimizer, scheduler, RNG, the algorithm's state,
    counters, the OOM-adjusted sizes (same world size only: they are per process), and the steps logged before it
    (a resumed run's summary covers the whole run)."""
    c = load_checkpoint(ckpt)
    s.roles.load_trainable_state(c["tensors"])
    s.optimizer.load_state_dict(c["optimizer"])
    s.scheduler.load_state_dict(c["scheduler"])
    set_rng_state(c["rng"])
    s.start = c["state"]["step"]
    s.algo.load_state(c["state"].get("algorithm", c["state"]))
    if c["state"].get("world_size", 1) == world()[1]:
        s.sizes = dataclasses.replace(s.sizes, **c["state"]["sizes"])
    s.counters = Counters(**{**dataclasses.asdict(s.counters), **c["state"]["counters"]})
    say(f"[{s.name}] resumed from {ckpt} at step {s.start}")
    s.history = [r for r in logged_steps(s.run_dir.path) if r["step"] <= s.start]
