"""REINFORCE++-baseline (Hu et al. 2025, arXiv 2501.03262) as OpenRLHF defines it (``--advantage_estimator
reinforce_baseline``: ``compute_advantages_and_returns`` in ``openrlhf/trainer/ppo_utils/experience_maker.py``;
verl calls it ``reinforce_plus_plus_baseline``). No value function; k samples per prompt:

1. each sample's score minus the mean score of its prompt's group (no division by the group's std);
2. per token, the return: the reward-to-go of the per-token rewards (``-beta * kl_t`` at every response token
   when the KL is in the reward, plus the baseline-subtracted score at the last token; ``gamma = 1``, as OpenRLHF
   forces); without the KL in the reward that is the baseline-subtracted score at every response token;
3. the returns whitened over every response token of the step (global mean and std, masked; OpenRLHF's divides
   by ``sqrt(max(var, 1e-8))`` with the biased variance over the tokens);
4. PPO's clipped surrogate per token (``epsilon``, ``epsilon_high``), aggregated by ``loss_type`` as GRPO's is,
   plus ``beta`` x the per-token KL estimate when the KL is in the loss.

Where the KL goes is ``kl_in``: ``loss`` (OpenRLHF's ``--use_kl_loss``; the default, as OpenRLHF's own
REINFORCE++-baseline script ``examples/scripts/train_reinforce_baseline_hybrid_engine.sh`` runs it, with
``--kl_estimator k2``) or ``reward`` (without ``--use_kl_loss``; OpenRLHF's default estimator there is k1).
``kl_estimator=auto`` picks those: k2 in the loss, k1 in the reward.

The math is the free functions below (no models, no I/O); the clipped surrogate and the aggregation are
``rl/group_math.py``'s.
"""

from __future__ import annotations

import torch

from edgerlhf.rl.algorithms.base import Advantages, LossOut, MicroBatch, Rollout
from edgerlhf.rl.algorithms.group import GroupAlgorithm, clipped_token_loss, loss_mask
from edgerlhf.rl.group_math import group_advantages
from edgerlhf.rl.ppo_math import kl_k1, kl_k3, per_token_rewards

WHITEN_EPS = 1e-8  # OpenRLHF's floor on the variance


def baseline_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Each sample's score minus the mean score of its group of ``k`` (samples of a prompt are consecutive)."""
    return group_advantages(scores, k, scale="none")


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k2 estimator of KL(policy || reference): ``0.5 * (log p - log q)^2`` (never negative; its gradient
    is ``(log p - log q) * grad log p``, the gradient of the KL; OpenRLHF's ``--kl_estimator k2``)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL estimate by name: ``k1`` (log p - log q), ``k2`` (half its square), ``k3`` ((r - 1) - log r)."""
    if estimator == "k1":
        return kl_k1(logprobs, ref_logprobs)
    if estimator == "k2":
        return kl_k2(logprobs, ref_logprobs)
    if estimator == "k3":
        return kl_k3(logprobs, ref_logprobs)
    raise ValueError(f"kl_estimator={estimator!r}: use k1, k2 or k3")


def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``G_t = sum_{s >= t} r_s`` over each row's masked tokens (``gamma = 1``); 0 where the mask is 0."""
    return (rewards * mask).flip(-1).cumsum(-1).flip(-1) * mask


def token_returns(advantage: torch.Tensor, kl: torch.Tensor | None, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token returns ``(N, R)``: the reward-to-go of ``-beta * kl_t`` at each response token plus the sequence's
    baseline-subtracted score at its last token, i.e. ``A_i - beta * sum_{s >= t} kl_s``. Without a KL (``kl`` None
    or ``beta`` 0), ``A_i`` at every response token."""
    if kl is None or beta == 0:
        return advantage[:, None] * mask
    return reward_to_go(per_token_rewards(advantage, kl, mask, beta), mask)


def global_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = WHITEN_EPS) -> torch.Tensor:
    """``(x - mean) / sqrt(max(var, eps))`` with the mean and the biased variance over every masked token of the
    batch (OpenRLHF's normalisation of REINFORCE++ advantages); 0 where the mask is 0."""
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) ** 2) * mask).sum() / n
    return (x - mean) * var.clamp(min=eps).rsqrt() * mask


class ReinforcePP(GroupAlgorithm):
    name = "reinforce_pp"

    @property
    def kl_estimator(self) -> str:
        est = self.cfg.kl_estimator
        if est == "auto":
            return "k2" if self.cfg.kl_in == "loss" else "k1"
        return est

    def advantages(self, r: Rollout) -> Advantages:
        cfg = self.cfg
        mask = loss_mask(r, cfg.mask_truncated_completions)
        base = baseline_advantages(r.scores, cfg.num_generations)
        kl = penalty = None
        if r.ref_logprobs is not None:
            kl = kl_k1(r.logprobs, r.ref_logprobs) * r.mask  # for the step's metrics, as every algorithm reports it
            if cfg.kl_in == "reward":
                penalty = kl_estimate(r.logprobs, r.ref_logprobs, self.kl_estimator) * r.mask
        returns = token_returns(base, penalty, r.mask, cfg.beta)
        adv = global_whiten(returns, mask)
        g = r.scores.view(-1, cfg.num_generations)
        rlhf = r.scores - cfg.beta * penalty.sum(1) if penalty is not None else r.scores
        metrics = {"objective/rlhf_reward": rlhf.mean().item(), "objective/group_std": g.std(1).mean().item(),
                   "objective/frac_zero_std": (g.std(1) == 0).float().mean().item(),
                   "objective/return_std": returns[mask.bool()].std().item() if mask.sum() > 1 else 0.0}
        finite = bool(torch.isfinite(r.scores).all() and torch.isfinite(returns).all() and torch.isfinite(adv).all())
        return Advantages(adv, None, kl, mask, metrics, finite)

    def loss(self, mb: MicroBatch) -> LossOut:
        cfg = self.cfg
        in_loss = cfg.kl_in == "loss" and cfg.beta > 0
        kl = kl_estimate(mb.logprobs, mb.ref_logprobs, self.kl_estimator) if in_loss else None
        return clipped_token_loss(cfg, mb, kl)
