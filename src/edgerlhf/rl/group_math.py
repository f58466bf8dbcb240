"""Math of the value-free group methods (GRPO, RLOO, Dr. GRPO, DAPO): free functions, no I/O.

Rewards arrive as one score per sample, samples of the same prompt consecutive (``k`` per group). The
definitions follow TRL 1.16's GRPOTrainer / RLOOTrainer, so results are comparable with it:

* group-normalised advantage (GRPO): ``A_i = (r_i - mean(group)) / (std + 1e-4)`` with the std of the group,
  of the whole batch, or none (Dr. GRPO); ``std`` is the unbiased one, as ``torch.std``.
* leave-one-out advantage (RLOO): ``A_i = r_i - mean(r_j, j != i in the group)``.
* clipped surrogate per token with an asymmetric clip ``[1 - eps_low, 1 + eps_high]`` (DAPO's clip-higher).
* aggregation of per-token losses: ``grpo`` (mean over each sequence's tokens, then over sequences),
  ``bnpo`` (over the tokens of the micro-batch), ``dr_grpo`` (sum / (sequences x max length)), ``dapo``
  (sum / tokens of the whole optimizer step, so micro-batches of different lengths weigh by tokens).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

EPS = 1e-4  # TRL's


def _groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    if scores.dim() != 1 or scores.numel() % k:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {k}")
    return scores.view(-1, k)


def group_advantages(scores: torch.Tensor, k: int, scale: str = "group") -> torch.Tensor:
    """GRPO's advantage per sample: reward minus its group's mean, divided by the group's std (``group``),
    the batch's std (``batch``) or nothing (``none``)."""
    g = _groups(scores, k)
    adv = (g - g.mean(1, keepdim=True)).reshape(-1)
    if scale == "group":
        return adv / (g.std(1, keepdim=True).expand_as(g).reshape(-1) + EPS)
    if scale == "batch":
        return adv / (scores.std() + EPS)
    if scale == "none":
        return adv
    raise ValueError(f"scale={scale!r}: use group, batch or none")


def leave_one_out_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO's advantage per sample: reward minus the mean of the other ``k - 1`` rewards of its group."""
    if k < 2:
        raise ValueError("a leave-one-out baseline needs at least 2 samples per group")
    g = _groups(scores, k)
    baseline = (g.sum(1, keepdim=True) - g) / (k - 1)
    return (g - baseline).reshape(-1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / (std + 1e-4)`` over all elements (RLOO's ``normalize_advantages``)."""
    return (x - x.mean()) / (x.std() + EPS)


class Surrogate(NamedTuple):
    loss: torch.Tensor          # per element: -min(r A, clip(r) A)
    clipped_low: torch.Tensor   # float mask: the lower clip was active (r < 1 - eps_low and A < 0)
    clipped_high: torch.Tensor  # float mask: the upper clip was active (r > 1 + eps_high and A > 0)


def clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float,
                      eps_high: float) -> Surrogate:
    """PPO's clipped objective with an asymmetric clip range, per element (per token, or per sequence
    when ``log_ratio`` is a sequence's summed log-ratio)."""
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    loss = -torch.min(ratio * advantages, clipped * advantages)
    low = ((ratio < 1 - eps_low) & (advantages < 0)).float()
    high = ((ratio > 1 + eps_high) & (advantages > 0)).float()
    return Surrogate(loss, low, high)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, *, max_len: int = 0,
              step_tokens: float = 0.0) -> torch.Tensor:
    """One loss from per-token losses ``(B, T)`` under ``mask``, as TRL's ``loss_type`` defines it:

    ``grpo``: mean over each sequence's tokens, then over sequences; ``bnpo``: mean over the batch's tokens;
    ``dr_grpo``: sum / (B x ``max_len``); ``dapo``: sum / ``step_tokens`` (the tokens of the whole optimizer
    step, so the micro-batches of one step add up to the token mean over that step)."""
    masked = per_token * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        if max_len <= 0:
            raise ValueError("dr_grpo needs max_len (the response length budget)")
        return masked.sum() / (per_token.shape[0] * max_len)
    if loss_type == "dapo":
        if step_tokens <= 0:
            raise ValueError("dapo needs step_tokens (the response tokens of the optimizer step)")
        return masked.sum() / step_tokens
    raise ValueError(f"loss_type={loss_type!r}: use grpo, bnpo, dr_grpo or dapo")
