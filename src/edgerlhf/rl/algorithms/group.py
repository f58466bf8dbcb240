"""What the two group methods (GRPO, RLOO; TRL 1.16's names) share: ``num_generations`` samples per prompt,
``num_iterations`` passes over a step, a reference only when ``beta > 0``, and DAPO's overlong filter."""

from __future__ import annotations

import torch

from edgerlhf.rl.algorithms.base import Algorithm, LossOut, MicroBatch, Rollout
from edgerlhf.rl.group_math import aggregate, clipped_surrogate
from edgerlhf.rl.ppo_math import masked_mean


def loss_mask(r: Rollout, drop_truncated: bool) -> torch.Tensor:
    """The response mask, with truncated responses (no EOS) removed when asked (DAPO's overlong filter)."""
    return r.mask * r.ended.float()[:, None] if drop_truncated else r.mask


def clipped_token_loss(cfg, mb: MicroBatch, kl: torch.Tensor | None = None) -> LossOut:
    """The token-level clipped surrogate the group methods share (GRPO, REINFORCE++-baseline): PPO's clipped ratio
    per token with ``epsilon`` / ``epsilon_high``, plus ``cfg.beta`` x a per-token KL when one is given, aggregated
    by ``cfg.loss_type`` and weighted for the micro-batch's share of the optimizer step; with its statistics."""
    eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
    log_ratio = mb.logprobs - mb.old_logprobs
    s = clipped_surrogate(log_ratio, mb.advantages, cfg.epsilon, eps_high)
    per_token = s.loss
    stats = {}
    if kl is not None:
        per_token = per_token + cfg.beta * kl
        stats["policy/kl"] = masked_mean(kl.detach(), mb.mask)
    loss = aggregate(per_token, mb.mask, cfg.loss_type, max_len=cfg.response_length, step_tokens=mb.step_tokens)
    weighted = loss if cfg.loss_type == "dapo" else loss * mb.n / mb.n_step  # dapo is already per step
    stats.update({"loss/policy": loss.detach(),
                  "policy/clipfrac": masked_mean(s.clipped_low + s.clipped_high, mb.mask),
                  "policy/clipfrac_low": masked_mean(s.clipped_low, mb.mask),
                  "policy/clipfrac_high": masked_mean(s.clipped_high, mb.mask),
                  "policy/approxkl": 0.5 * masked_mean(log_ratio.detach() ** 2, mb.mask),
                  "val/ratio": masked_mean(torch.exp(log_ratio.detach()), mb.mask)})
    return LossOut(weighted, stats)


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
