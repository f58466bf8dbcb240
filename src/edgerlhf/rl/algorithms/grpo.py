"""GRPO (Shao et al. 2024) as TRL 1.16 defines it: no value function; k samples per prompt; advantage =
reward minus the group's mean, scaled by the group's std, the step's, or not at all (Dr. GRPO); a clipped
per-token ratio with DAPO's optional higher upper clip; KL (k3) to the reference *in the loss* with weight
``beta`` (0 by default: then no reference forward at all); per-token losses aggregated by ``loss_type``.
The math is ``rl/group_math.py``."""

from __future__ import annotations

import torch

from edgerlhf.rl.algorithms.base import Advantages, LossOut, MicroBatch, Rollout
from edgerlhf.rl.algorithms.group import GroupAlgorithm, loss_mask
from edgerlhf.rl.group_math import aggregate, clipped_surrogate, group_advantages
from edgerlhf.rl.ppo_math import kl_k1, kl_k3, masked_mean


class GRPO(GroupAlgorithm):
    name = "grpo"

    def advantages(self, r: Rollout) -> Advantages:
        cfg = self.cfg
        adv = group_advantages(r.scores, cfg.num_generations, cfg.scale_rewards)
        kl = kl_k1(r.logprobs, r.ref_logprobs) * r.mask if r.ref_logprobs is not None else None
        g = r.scores.view(-1, cfg.num_generations)
        metrics = {"objective/group_std": g.std(1).mean().item(),
                   "objective/frac_zero_std": (g.std(1) == 0).float().mean().item()}
        finite = bool(torch.isfinite(r.scores).all() and torch.isfinite(adv).all())
        return Advantages(adv[:, None].expand_as(r.mask).contiguous(), None, kl,
                          loss_mask(r, cfg.mask_truncated_completions), metrics, finite)

    def loss(self, mb: MicroBatch) -> LossOut:
        cfg = self.cfg
        eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
        log_ratio = mb.logprobs - mb.old_logprobs
        s = clipped_surrogate(log_ratio, mb.advantages, cfg.epsilon, eps_high)
        per_token = s.loss
        stats = {}
        if cfg.beta > 0:
            kl = kl_k3(mb.logprobs, mb.ref_logprobs)
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
