"""GSPO, Group Sequence Policy Optimization (Zheng et al. 2025, arXiv 2507.18071), as TRL 1.16 runs it
(GRPOTrainer with ``importance_sampling_level="sequence"``, ``loss_type="grpo"``): GRPO's group-normalised
advantage, but the importance ratio of a response is the geometric mean of its tokens' ratios,

    s_i = (pi(y_i | x) / pi_old(y_i | x)) ** (1 / |y_i|) = exp(mean_t (log pi(y_i,t) - log pi_old(y_i,t))),

and the clip acts on that sequence ratio: loss = -mean_i min(s_i A_i, clip(s_i, 1 - eps, 1 + eps_high) A_i).
Every token of a response gets the same weight, so a long response's few outlying tokens cannot dominate its
update (the paper's case against GRPO's token-level ratio); the clip range is that of a mean log-ratio, hence
the paper's small 3e-4 / 4e-4. A k3 KL to the reference enters the loss with weight ``beta`` (0 by default: no
reference forward), as in GRPO.
"""

from __future__ import annotations

import torch

from edgerlhf.rl.algorithms.base import Advantages, LossOut, MicroBatch, Rollout
from edgerlhf.rl.algorithms.group import GroupAlgorithm, loss_mask
from edgerlhf.rl.group_math import clipped_surrogate, group_advantages
from edgerlhf.rl.ppo_math import kl_k1, kl_k3, masked_mean


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N,)``: each response's mean token log-ratio, the log of GSPO's sequence ratio ``s_i`` (0 for a response
    with no token in the mask)."""
    return ((logprobs - old_logprobs) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def gspo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              eps_low: float, eps_high: float):
    """GSPO's clipped sequence objective, negated and averaged over the responses (a response with no token in the
    mask adds 0, and counts in the mean as TRL's ``loss_type="grpo"`` counts it). Returns (loss, surrogate)."""
    s = clipped_surrogate(sequence_log_ratio(logprobs, old_logprobs, mask), advantages, eps_low, eps_high)
    valid = (mask.sum(-1) > 0).float()
    return (s.loss * valid).mean(), s


class GSPO(GroupAlgorithm):
    name = "gspo"

    def advantages(self, r: Rollout) -> Advantages:
        cfg = self.cfg
        adv = group_advantages(r.scores, cfg.num_generations, cfg.scale_rewards)  # one per response, as GRPO's
        kl = kl_k1(r.logprobs, r.ref_logprobs) * r.mask if r.ref_logprobs is not None else None
        g = r.scores.view(-1, cfg.num_generations)
        metrics = {"objective/group_std": g.std(1).mean().item(),
                   "objective/frac_zero_std": (g.std(1) == 0).float().mean().item()}
        finite = bool(torch.isfinite(r.scores).all() and torch.isfinite(adv).all())
        return Advantages(adv, None, kl, loss_mask(r, cfg.mask_truncated_completions), metrics, finite)

    def loss(self, mb: MicroBatch) -> LossOut:
        cfg = self.cfg
        eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
        loss, s = gspo_loss(mb.logprobs, mb.old_logprobs, mb.advantages, mb.mask, cfg.epsilon, eps_high)
        stats = {"loss/policy": loss.detach()}
        if cfg.beta > 0:  # k3 per token, a mean over each response's tokens, then over the responses
            kl = kl_k3(mb.logprobs, mb.ref_logprobs)
            loss = loss + cfg.beta * ((kl * mb.mask).sum(-1) / mb.mask.sum(-1).clamp(min=1.0)).mean()
            stats["policy/kl"] = masked_mean(kl.detach(), mb.mask)
        log_ratio = (mb.logprobs - mb.old_logprobs).detach()
        seq = sequence_log_ratio(mb.logprobs.detach(), mb.old_logprobs, mb.mask)
        stats.update({"policy/clipfrac": (s.clipped_low + s.clipped_high).mean(),
                      "policy/clipfrac_low": s.clipped_low.mean(), "policy/clipfrac_high": s.clipped_high.mean(),
                      "policy/approxkl": 0.5 * masked_mean(log_ratio ** 2, mb.mask),
                      "val/ratio": masked_mean(torch.exp(log_ratio), mb.mask),
                      "val/sequence_ratio": torch.exp(seq).mean()})
        return LossOut(loss * mb.n / mb.n_step, stats)
