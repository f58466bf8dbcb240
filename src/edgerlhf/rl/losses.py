"""Loss functions as small free functions (no models, no I/O)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float | torch.Tensor = 0.0,
                       center_coef: float = 0.0) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_c - r_r - margin)`` plus ``center_coef * mean((r_c + r_r)^2)``.

    The centering term (Eisenstein et al. 2023, TRL's ``center_rewards_coefficient``) pins the reward's
    free offset near zero, which keeps the later PPO reward scale stable. ``logsigmoid`` keeps the loss
    finite for large negative differences."""
    loss = -F.logsigmoid(r_chosen - r_rejected - margin).mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss
