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


DPO_LOSS_TYPES = ("sigmoid", "ipo")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct preference optimisation, per pair: ``(loss, chosen reward, rejected reward)``.

    Inputs are sequence log-probs of each response under the policy and the reference (sums over its tokens
    for ``sigmoid``; for ``ipo`` the caller passes per-token means, as in Azar et al. 2023 and TRL). With
    ``h = (pi_c - ref_c) - (pi_r - ref_r)``:

    * ``sigmoid`` (Rafailov et al. 2023): ``-log sigmoid(beta h)``; with label smoothing ``eps`` (cDPO: the
      labels are flipped with probability eps) ``-(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)``;
    * ``ipo``: ``(h - 1 / (2 beta))^2``.

    The implicit rewards ``beta * (pi - ref)`` of each side are returned detached (metrics)."""
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: use one of {', '.join(DPO_LOSS_TYPES)}")
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "sigmoid":
        loss = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    else:
        loss = (h - 1 / (2 * beta)) ** 2
    return loss, (beta * (policy_chosen - ref_chosen)).detach(), (beta * (policy_rejected - ref_rejected)).detach()
