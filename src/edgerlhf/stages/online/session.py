"""The typed records a run hands from phase to phase (instead of a dozen positional parameters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from edgerlhf.config import OnlineRLConfig
from edgerlhf.models.roles import Roles
from edgerlhf.rl.algorithms import Algorithm
from edgerlhf.stages.online.step import RewardFn
from edgerlhf.stages.online.update import Sizes
from edgerlhf.tracking import PeakMemory, RunDir


class Inputs(NamedTuple):
    """What a run reads before it writes anything (bad input fails before any folder exists)."""
    prompts: list
    reward: RewardFn          # the learned RM (a RewardModel) or the caller's callable
    reward_info: dict         # reward, reward_precision[, reward_backend]: for the header, artifact and summary
    gold: RewardFn | None     # None for gold=none
    monitor: RewardFn | None = None  # an RM ensemble that only watches (overopt_monitor): its members' disagreement


@dataclass
class Counters:
    """The run's counters; a checkpoint stores them (as a dict, ``dataclasses.asdict``)."""
    bad_in_row: int = 0       # NaN/inf steps in a row (the run stops at max_bad_steps)
    bad_steps: int = 0
    skipped_updates: int = 0  # optimizer steps skipped for NaN/inf
    episodes: int = 0


@dataclass
class Session:
    """One run from its loaded models to its summary: what every phase reads, and the state the steps advance."""
    cfg: OnlineRLConfig
    algo: Algorithm
    inputs: Inputs
    roles: Roles
    optimizer: torch.optim.Optimizer
    scheduler: object
    sizes: Sizes
    run_dir: RunDir
    mem: PeakMemory
    device: torch.device
    dtype: torch.dtype
    t_load: float              # seconds to load the models
    n_trainable: int
    shared_mb: float = 0.0     # the RM's weights shared with the policy's base
    counters: Counters = field(default_factory=Counters)
    start: int = 0             # the first step to run (after a resume: the checkpoint's)
    history: list[dict] = field(default_factory=list)  # per-step metrics (a resumed run's include the earlier ones)
    overopt: dict = field(default_factory=dict)  # the over-optimisation warning, once it fired

    @property
    def tok(self):
        return self.roles.tokenizer

    @property
    def name(self) -> str:
        return self.cfg.stage
