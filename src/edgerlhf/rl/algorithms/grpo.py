"""GRPO (Shao et al. 2024) as TRL 1.16 defines it: no value function; k samples per prompt; advantage =
reward minus the group's mean, scaled by the group's std, the step's, or not at all (Dr. GRPO); a clipped
per-token ratio with DAPO's optional higher upper clip; KL (k3) to the reference *in the loss* with weight
``beta`` (0 by default: then no reference forward at all); per-token losses aggregated by ``loss_type``.
The math is ``rl/group_math.py``."""

from __future__ import annotations

import torch

from edgerlhf.rl.algorithms.base import Advantages, LossOut, MicroBatch, Rollout
from edgerlhf.rl.algorithms.group import GroupAlgorithm, clipped_token_loss, loss_mask
from edgerlhf.rl.group_math import group_advantages
from edgerlhf.rl.ppo_math import kl_k1, kl_k3


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
        kl = kl_k3(mb.logprobs, mb.ref_logprobs) if self.cfg.beta > 0 else None
        return clipped_token_loss(self.cfg, mb, kl)
