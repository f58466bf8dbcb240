"""PPO (Schulman et al. 2017) as RLHF uses it (Ziegler et al. 2019; TRL's PPOTrainer): a value function,
per-token KL to the reference in the reward (k1 or k3; fixed or adaptive coefficient), the score at the last
token, GAE, whitened advantages, clipped policy and value losses, an optional entropy bonus and early stop
on the approximate KL. The math is ``rl/ppo_math.py``."""

from __future__ import annotations

import torch

from edgerlhf.rl.algorithms.base import Advantages, Algorithm, LossOut, MicroBatch, Rollout
from edgerlhf.rl.ppo_math import (
    AdaptiveKLController,
    gae,
    kl_k1,
    kl_k3,
    masked_mean,
    per_token_rewards,
    policy_loss,
    value_loss,
    whiten,
)


class PPO(Algorithm):
    name = "ppo"
    needs_values = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kl_ctl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.entropy_in_update = cfg.ent_coef > 0

    @property
    def update_epochs(self) -> int:
        return self.cfg.num_ppo_epochs

    def advantages(self, r: Rollout) -> Advantages:
        cfg, rm = self.cfg, r.mask
        kl = (kl_k1 if cfg.kl_estimator == "k1" else kl_k3)(r.logprobs, r.ref_logprobs) * rm
        kl_coef = self.kl_ctl.value  # the coefficient this step's rewards use
        rewards = per_token_rewards(r.scores, kl, rm, kl_coef)
        if cfg.whiten_rewards:
            rewards = whiten(rewards, rm, shift_mean=False)
        adv, returns = gae(rewards, r.values, rm, cfg.gamma, cfg.lam)
        adv = whiten(adv, rm)
        finite = bool(torch.isfinite(r.scores).all() and torch.isfinite(adv).all() and torch.isfinite(r.values).all())
        metrics = {"objective/rlhf_reward": (r.scores - kl_coef * kl.sum(1)).mean().item(),
                   "objective/kl_coef": kl_coef}
        return Advantages(adv, returns, kl, rm, metrics, finite)

    def loss(self, mb: MicroBatch) -> LossOut:
        cfg = self.cfg
        pg, clip, akl = policy_loss(mb.logprobs, mb.old_logprobs, mb.advantages, mb.mask, cfg.cliprange)
        vf, vclip = value_loss(mb.values, mb.old_values, mb.returns, mb.mask, cfg.cliprange_value)
        ent = masked_mean(mb.entropy, mb.mask) if mb.entropy is not None else torch.zeros(())
        loss = pg + cfg.vf_coef * vf - cfg.ent_coef * ent
        ratio = masked_mean(torch.exp(mb.logprobs.detach() - mb.old_logprobs), mb.mask)
        return LossOut(loss * mb.n / mb.n_step, {
            "loss/policy": pg, "loss/value": vf, "policy/clipfrac": clip, "val/clipfrac": vclip,
            "policy/approxkl": akl, "val/ratio": ratio, "policy/entropy": ent})

    def early_stop(self, stats: dict) -> bool:
        return bool(self.cfg.target_approx_kl) and stats["policy/approxkl"] > self.cfg.target_approx_kl

    def after_step(self, kl_seq_mean: float, n: int) -> None:
        if self.cfg.kl_adaptive:
            self.kl_ctl.update(kl_seq_mean, n)

    def state(self) -> dict:
        return {"kl_coef": self.kl_ctl.value}

    def load_state(self, state: dict) -> None:
        self.kl_ctl.value = state["kl_coef"]
