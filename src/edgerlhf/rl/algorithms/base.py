"""What an online-RL algorithm is to the engine (``stages/online/``): a small object with

* ``needs_values`` / ``needs_reference`` / ``samples_per_prompt`` / ``update_epochs``: what the engine must
  compute and how it batches (the engine reads the group size and the passes over a step from here, never
  from the config: each algorithm names its own keys);
* ``advantages(rollout) -> Advantages``: from one step's scores and old log-probs (and values, reference
  log-probs when asked for);
* ``loss(micro) -> LossOut``: one micro-batch's loss, already weighted for its share of the optimizer step,
  with its statistics by metric name;
* ``early_stop(stats)``, ``after_step(...)``, ``state()`` / ``load_state()``: the few places an algorithm
  keeps state between steps (PPO's adaptive KL coefficient).

Everything else (sampling, scoring, forwards, micro-batching, the optimizer, NaN guard, OOM halving,
checkpoints, resume, Ctrl-C / SIGTERM, logging, the artifact) is the engine's, shared by every algorithm.
The math itself lives in ``rl/ppo_math.py`` and ``rl/group_math.py`` as free functions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Rollout(NamedTuple):
    """One step's episodes, as the advantage estimator sees them (CPU tensors, ``(N, R)`` unless noted)."""
    scores: torch.Tensor               # (N,) reward of each response (RM or callable, penalties applied)
    logprobs: torch.Tensor             # old log-probs of the response tokens
    ref_logprobs: torch.Tensor | None  # the reference's (None when the algorithm needs no reference)
    values: torch.Tensor | None        # the value function's (None when the algorithm has none)
    mask: torch.Tensor                 # float, 1 on response tokens up to and including EOS
    ended: torch.Tensor                # (N,) bool: the response emitted EOS


class Advantages(NamedTuple):
    advantages: torch.Tensor        # (N, R) per token, or (N,) per sequence
    returns: torch.Tensor | None    # value targets (algorithms with a value function)
    kl: torch.Tensor | None         # (N, R) per-token KL to the reference (masked), for the step's metrics
    loss_mask: torch.Tensor         # (N, R) tokens that enter the loss
    metrics: dict                   # extra per-step metrics by name
    finite: bool                    # False: NaN/inf in what the update would use; the engine skips it


class MicroBatch(NamedTuple):
    """One micro-batch of the update: the new forward (with grad) next to the step's stored tensors."""
    logprobs: torch.Tensor             # new log-probs (grad)
    values: torch.Tensor | None        # new values (grad)
    entropy: torch.Tensor | None       # new entropy, when the algorithm asked for it
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    old_values: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor | None
    mask: torch.Tensor                 # the loss mask, float
    n: int                             # episodes in this micro-batch
    n_step: int                        # episodes in the optimizer step
    step_tokens: float                 # loss-mask tokens in the optimizer step


class LossOut(NamedTuple):
    loss: torch.Tensor   # to backward: already weighted for this micro-batch's share of the optimizer step
    stats: dict          # metric name -> scalar tensor (the engine averages them, weighted by episodes)


class Algorithm:
    """Base of every online algorithm; subclasses set ``name`` and ``needs_values`` and implement
    ``advantages`` and ``loss``."""

    name = "base"
    needs_values = False
    entropy_in_update = False   # the update's forward computes the entropy (PPO with ent_coef > 0)

    def __init__(self, cfg):
        self.cfg = cfg

    @property
    def needs_reference(self) -> bool:
        return True

    @property
    def samples_per_prompt(self) -> int:
        """Responses sampled per prompt (one group); 1 for a method without groups."""
        return 1

    @property
    def update_epochs(self) -> int:  # pragma: no cover - abstract
        """Passes over each step's episodes."""
        raise NotImplementedError

    def advantages(self, r: Rollout) -> Advantages:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, mb: MicroBatch) -> LossOut:  # pragma: no cover - abstract
        raise NotImplementedError

    def early_stop(self, stats: dict) -> bool:
        """After an optimizer step with these (averaged) stats: stop the step's remaining epochs?"""
        return False

    def after_step(self, kl_seq_mean: float, n: int) -> None:
        """Once per step, after the update (PPO's adaptive KL coefficient)."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass
