"""Each algorithm's advantages and loss on hand-made tensors: what the engine hands them, what they return."""

import types

import pytest
import torch

from edgerlhf.rl.algorithms import MicroBatch, Rollout, make_algorithm
from edgerlhf.rl.algorithms.grpo import GRPO
from edgerlhf.rl.algorithms.ppo import PPO
from edgerlhf.rl.algorithms.rloo import RLOO
from edgerlhf.rl.group_math import group_advantages


def _cfg(**kw):
    base = dict(stage="grpo", num_generations=2, scale_rewards="group", loss_type="grpo", beta=0.0, epsilon=0.2,
                epsilon_high=None, mask_truncated_completions=False, response_length=4, normalize_advantages=False,
                num_iterations=1)
    base.update(kw)
    return types.SimpleNamespace(**base)


def _rollout(scores, ended=(True, True, True, True)):
    n = len(scores)
    return Rollout(torch.tensor(scores), torch.full((n, 3), -1.0), torch.full((n, 3), -1.5), None,
                   torch.tensor([[1.0, 1.0, 0.0]] * n), torch.tensor(ended))


def test_grpo_advantage_is_per_sequence_broadcast_over_tokens_and_skips_the_reference_at_beta_0():
    algo = GRPO(_cfg())
    assert not algo.needs_reference and not algo.needs_values
    adv = algo.advantages(_rollout([1.0, 3.0, 2.0, 2.0]))
    want = group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2)
    assert torch.equal(adv.advantages, want[:, None].expand(4, 3))
    assert adv.returns is None and adv.finite
    assert adv.metrics["objective/frac_zero_std"] == 0.5  # the second group's samples tie
    assert GRPO(_cfg(beta=0.1)).needs_reference


def test_truncated_responses_leave_the_loss_when_asked():
    r = _rollout([1.0, 3.0, 2.0, 0.0], ended=(True, False, True, True))
    assert GRPO(_cfg()).advantages(r).loss_mask[1].sum() == 2
    assert GRPO(_cfg(mask_truncated_completions=True)).advantages(r).loss_mask[1].sum() == 0


def test_rloo_puts_the_sequence_kl_in_the_reward():
    # k1 per token = -1 - (-1.5) = 0.5 on 2 real tokens -> 1.0 per sequence, times beta 0.1
    algo = RLOO(_cfg(stage="rloo", beta=0.1))
    adv = algo.advantages(_rollout([1.0, 3.0, 2.0, 2.0]))
    assert adv.kl.sum(1).tolist() == pytest.approx([1.0] * 4)
    assert adv.metrics["objective/rlhf_reward"] == pytest.approx(2.0 - 0.1)
    # leave-one-out on the KL-shaped rewards: the shift is the same for all, so it cancels
    assert adv.advantages.tolist() == pytest.approx([-2.0, 2.0, 0.0, 0.0])


def _micro(logprobs, old, adv, n=2, n_step=4, step_tokens=8.0):
    mask = torch.ones_like(old)
    return MicroBatch(logprobs, None, None, old, None, None, adv, None, mask, n, n_step, step_tokens)


def test_grpo_loss_weighting_per_loss_type():
    old = torch.zeros(2, 2)
    new = torch.zeros(2, 2, requires_grad=True)  # ratio 1: the loss is -mean advantage
    adv = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    seq = GRPO(_cfg(loss_type="grpo")).loss(_micro(new, old, adv))
    assert seq.stats["loss/policy"].item() == pytest.approx(-2.0)
    assert seq.loss.item() == pytest.approx(-2.0 * 2 / 4)  # this micro-batch is half the optimizer step
    dapo = GRPO(_cfg(loss_type="dapo")).loss(_micro(new, old, adv))
    assert dapo.loss.item() == pytest.approx(-8.0 / 8.0)  # already over the step's 8 tokens
    seq.loss.backward()
    assert new.grad is not None and new.grad.abs().sum() > 0


def test_ppo_needs_values_and_reference_and_stops_early_on_approx_kl():
    cfg = types.SimpleNamespace(stage="ppo", kl_coef=0.05, kl_target=6.0, kl_horizon=10000, ent_coef=0.0,
                                target_approx_kl=0.01, kl_adaptive=False)
    algo = make_algorithm(cfg)
    assert isinstance(algo, PPO) and algo.needs_values and algo.needs_reference
    assert algo.early_stop({"policy/approxkl": 0.02}) and not algo.early_stop({"policy/approxkl": 0.005})
    assert algo.state() == {"kl_coef": 0.05}
    algo.load_state({"kl_coef": 0.2})
    assert algo.kl_ctl.value == 0.2


def test_group_size_and_epochs_are_the_algorithms():
    """The engine reads the group size and the passes over a step from the algorithm, under each one's own keys."""
    assert (GRPO(_cfg()).samples_per_prompt, GRPO(_cfg(num_iterations=3)).update_epochs) == (2, 3)
    rloo = RLOO(_cfg(stage="rloo", num_generations=4))
    assert (rloo.samples_per_prompt, rloo.update_epochs) == (4, 1)
    ppo = PPO(types.SimpleNamespace(kl_coef=0.05, kl_target=6.0, kl_horizon=10000, ent_coef=0.0, num_ppo_epochs=2))
    assert (ppo.samples_per_prompt, ppo.update_epochs) == (1, 2)
