"""What the two group methods (GRPO, RLOO; TRL 1.16's names) share: ``num_generations`` samples per prompt,
``num_iterations`` passes over a step, a reference only when ``beta > 0``, and DAPO's overlong filter."""

from __future__ import annotations

import torch

from edgerlhf.rl.algorithms.base import Algorithm, Rollout


def loss_mask(r: Rollout, drop_truncated: bool) -> torch.Tensor:
    """The response mask, with truncated responses (no EOS) removed when asked (DAPO's overlong filter)."""
    return r.mask * r.ended.float()[:, None] if drop_truncated else r.mask


class GroupAlgorithm(Algorithm):
    """Base of the value-free methods that sample a group of responses per prompt."""

    @property
    def needs_reference(self) -> bool:
        return self.cfg.beta > 0

    @property
    def samples_per_prompt(self) -> int:
        return self.cfg.num_generations

    @property
    def update_epochs(self) -> int:
        return self.cfg.num_iterations
