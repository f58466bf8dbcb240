"""The one skeleton every stage runs on: ``run_stage(cfg, prepare, execute)``.

    0 launch     join the process group of torchrun / accelerate launch (a data-parallel stage), or refuse one
    1 set-up     seed, device, compute dtype; the task file's data files checked whole
    2 prepare    ``prepare(setup)``: the stage's own validation and data loading. Bad input fails here, before
                 the run folder exists: nothing is written for it
    3 open       the run folder (or the one a resumed run continues) and the stage's memory probe
    4 execute    ``execute(ctx, prepared) -> summary``: the stage's work
    5 finish     summary.json with device, compute dtype and peak memory; any exception (Ctrl-C included) marks
                 the folder failed / interrupted, keeps what was written, and is raised again

A stage module is its ``prepare`` and ``execute`` and a three-line ``run(cfg)``; what is the same for every stage
is written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from edgerlhf import registry
from edgerlhf.config import BaseConfig, ConfigError, read_task
from edgerlhf.data.taskfile import check_task_files
from edgerlhf.distributed import require_one_process, world
from edgerlhf.models.loading import resolve_device, resolve_dtype
from edgerlhf.stages.loop import join_launch, seed_everything
from edgerlhf.tracking import PeakMemory, RunDir

__all__ = ["Context", "Prepared", "Setup", "run_stage"]


@dataclass
class Setup:
    """What ``prepare`` gets: the config this process runs, and where and in what dtype it runs."""
    cfg: Any
    device: torch.device
    dtype: torch.dtype
    rank: int
    world_size: int

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


@dataclass
class Prepared:
    """What ``prepare`` may return instead of a bare value: a config that replaces the one given (a resume reads
    the stored one) and a run folder to continue instead of creating one."""
    data: Any = None
    cfg: Any = None
    reopen: Path | None = None


@dataclass
class Context(Setup):
    """What ``execute`` gets: the set-up, the run folder and the stage's memory probe."""
    run_dir: RunDir = None
    mem: PeakMemory = None

    def memory(self) -> dict:
        """The stage's peak memory so far, stopped (``memory/peak_mb`` and how it was measured)."""
        return self.mem.stop().as_metrics()


def run_stage(cfg: BaseConfig, prepare: Callable[[Setup], Any], execute: Callable[[Context, Any], dict]) -> Path:
    """Run one stage (see the module docstring); returns its run folder."""
    stage = registry.get(cfg.stage)
    # 0 launch
    if stage.data_parallel:
        cfg = join_launch(cfg)
    else:
        require_one_process(f"edgerlhf {stage.name}", registry.data_parallel_stages())
    # 1 set-up
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.task:
        errs = check_task_files(read_task(cfg.task))
        if errs:
            raise ConfigError(errs, f"task file {cfg.task}")
    rank, ws = world()
    # 2 prepare: bad input fails before anything is written
    prepared = prepare(Setup(cfg, device, dtype, rank, ws))
    if not isinstance(prepared, Prepared):
        prepared = Prepared(prepared)
    cfg = prepared.cfg or cfg
    # 3 open the run folder and the memory probe
    run_dir = RunDir(cfg, reopen=prepared.reopen)
    mem = PeakMemory().start()
    ctx = Context(cfg, device, dtype, rank, ws, run_dir, mem)
    try:
        # 4 execute
        summary = execute(ctx, prepared.data)
        # 5 finish
        return run_dir.finish({"device": str(device), "compute_dtype": ctx.dtype_name, **summary, **ctx.memory()})
    except BaseException as e:
        mem.stop()
        run_dir.fail(e)
        raise
