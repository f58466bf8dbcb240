"""PPO math against values derived by hand."""

import math

import pytest
import torch

from edgerlhf.rl.ppo_math import (
    AdaptiveKLController,
    entropy_from_logits,
    gae,
    kl_k1,
    kl_k3,
    masked_mean,
    masked_var,
    per_token_rewards,
    policy_loss,
    value_loss,
    whiten,
)

T = torch.tensor


def test_masked_mean_and_var_ignore_padding():
    x, m = T([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]]), T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert masked_mean(x, m).item() == pytest.approx(15 / 5)
    assert masked_mean(x, m, dim=1).tolist() == pytest.approx([1.5, 4.0])
    # values 1,2,3,4,5: mean 3, squared deviations sum 10 -> unbiased var 10/4
    assert masked_var(x, m).item() == pytest.approx(2.5)


def test_whiten_gives_zero_mean_unit_variance_on_the_mask():
    x, m = T([[1.0, 2.0, 3.0, 9.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert w[0, 3] == 0
    assert masked_mean(w, m).item() == pytest.approx(0, abs=1e-6)
    assert masked_var(w, m).item() == pytest.approx(1, abs=1e-4)
    kept = whiten(x, m, shift_mean=False)  # keeps the mean (2), rescales the spread: (x-2)/1 + 2
    assert kept[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-4)


def test_kl_estimators():
    lp, ref = T([math.log(0.5)]), T([math.log(0.25)])
    assert kl_k1(lp, ref).item() == pytest.approx(math.log(2))
    # r = q/p = 0.5: (r - 1) - log r = -0.5 + log 2
    assert kl_k3(lp, ref).item() == pytest.approx(-0.5 + math.log(2))
    assert kl_k3(ref, lp).item() >= 0 and kl_k3(lp, lp).item() == 0


def test_per_token_rewards_put_the_score_on_the_last_real_token():
    kl, m = T([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]]), T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    r = per_token_rewards(T([1.0, 2.0]), kl, m, kl_coef=0.1)
    assert torch.allclose(r, T([[-0.01, -0.02, 0.97], [1.95, 0.0, 0.0]]))


def test_gae_by_hand():
    # one sequence, 2 tokens, gamma=1, lam=0.5: V=[0.5, 1.0], r=[0, 1]
    # delta_1 = 1 + 0 - 1.0 = 0;  A_1 = 0
    # delta_0 = 0 + 1.0 - 0.5 = 0.5;  A_0 = 0.5 + 1 * 0.5 * 0 = 0.5
    adv, ret = gae(T([[0.0, 1.0]]), T([[0.5, 1.0]]), T([[1.0, 1.0]]), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, T([[0.5, 0.0]])) and torch.allclose(ret, T([[1.0, 1.0]]))
    # gamma=0.9, lam=1, V=0: A_t is the discounted return: A_1 = 1, A_0 = 0.9
    adv, _ = gae(T([[0.0, 1.0, 5.0]]), T([[0.0, 0.0, 7.0]]), T([[1.0, 1.0, 0.0]]), gamma=0.9, lam=1.0)
    assert torch.allclose(adv, T([[0.9, 1.0, 0.0]]))  # padding after EOS is ignored


def test_policy_loss_clips():
    adv, m = T([[1.0, -1.0]]), T([[1.0, 1.0]])
    old = T([[0.0, 0.0]])
    new = T([[math.log(1.5), math.log(1.5)]])  # ratio 1.5 on both tokens, cliprange 0.2
    loss, clipfrac, approx_kl = policy_loss(new, old, adv, m, cliprange=0.2)
    # token 1 (A=+1): max(-1.5, -1.2) = -1.2 (clipped); token 2 (A=-1): max(1.5, 1.2) = 1.5 (unclipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert clipfrac.item() == pytest.approx(0.5)
    assert approx_kl.item() == pytest.approx(0.5 * math.log(1.5) ** 2)


def test_value_loss_clips():
    v, old, ret, m = T([[2.0]]), T([[1.0]]), T([[3.0]]), T([[1.0]])
    # unclipped (2-3)^2 = 1; clipped V = 1.2 -> (1.2-3)^2 = 3.24; max = 3.24 -> 0.5 * 3.24
    loss, frac = value_loss(v, old, ret, m, cliprange_value=0.2)
    assert loss.item() == pytest.approx(1.62) and frac.item() == 1.0


def test_entropy_of_uniform_and_peaked():
    assert entropy_from_logits(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    assert entropy_from_logits(T([[100.0, 0.0, 0.0]])).item() == pytest.approx(0, abs=1e-6)


def test_adaptive_kl_controller():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(12.0, n_steps=1000)  # error clipped to +0.2 -> 0.1 * (1 + 0.02)
    assert c.value == pytest.approx(0.102)
    c.update(0.0, n_steps=1000)  # error clipped to -0.2
    assert c.value == pytest.approx(0.102 * 0.98)
