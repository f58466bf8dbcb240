"""RLOO (Ahmadian et al. 2024) as TRL 1.16 defines it: no value function; k samples per prompt; the KL to
the reference (k1, summed over the response) subtracted from the reward with weight ``beta``; each
sample's baseline is the mean reward of the other k - 1 samples of its prompt; a clipped ratio per
*sequence* (summed log-ratio). The math is ``rl/group_math.py``."""

from __future__ import annotations

import torch

from edgerlhf.rl.algorithms.base import Advantages, LossOut, MicroBatch, Rollout
from edgerlhf.rl.algorithms.group import GroupAlgorithm, loss_mask
from edgerlhf.rl.group_math import clipped_surrogate, leave_one_out_advantages, normalize
from edgerlhf.rl.ppo_math import kl_k1


class RLOO(GroupAlgorithm):
    name = "rloo"

    def advantages(self, r: Rollout) -> Advantages:
        cfg = self.cfg
        kl, rewards = None, r.scores
        if r.ref_logprobs is not None:
            kl = kl_k1(r.logprobs, r.ref_logprobs) * r.mask
            rewards = r.scores - cfg.beta * kl.sum(1)
        adv = leave_one_out_advantages(rewards, cfg.num_generations)
        if cfg.normalize_advantages:
            adv = normalize(adv)
        finite = bool(torch.isfinite(rewards).all() and torch.isfinite(adv).all())
        return Advantages(adv, None, kl, loss_mask(r, cfg.mask_truncated_completions),
                          {"objective/rlhf_reward": rewards.mean().item()}, finite)

    def loss(self, mb: MicroBatch) -> LossOut:
        cfg = self.cfg
        eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
        seq_log_ratio = ((mb.logprobs - mb.old_logprobs) * mb.mask).sum(1)
        s = clipped_surrogate(seq_log_ratio, mb.advantages, cfg.epsilon, eps_high)
        loss = s.loss.mean()
        lr = seq_log_ratio.detach()
        return LossOut(loss * mb.n / mb.n_step, {
            "loss/policy": loss.detach(), "policy/clipfrac": (s.clipped_low + s.clipped_high).mean(),
            "policy/clipfrac_low": s.clipped_low.mean(), "policy/clipfrac_high": s.clipped_high.mean(),
            "policy/approxkl": 0.5 * (lr ** 2).mean(), "val/ratio": torch.exp(lr).mean()})
