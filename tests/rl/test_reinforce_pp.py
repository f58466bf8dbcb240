"""REINFORCE++-baseline's math on hand-made tensors (every expected number worked out in the comments), the algorithm
as the registry makes it, and its config."""

import math
import types

import pytest
import torch

from edgerlhf.config import ConfigError, ReinforcePPConfig, load_config
from edgerlhf.rl.algorithms import MicroBatch, Rollout, make_algorithm
from edgerlhf.rl.algorithms.grpo import GRPO
from edgerlhf.rl.algorithms.reinforce_pp import (
    ReinforcePP,
    baseline_advantages,
    global_whiten,
    kl_estimate,
    kl_k2,
    reward_to_go,
    token_returns,
)
from edgerlhf.rl.group_math import aggregate, clipped_surrogate, group_advantages


def _cfg(**kw):
    base = dict(stage="reinforce_pp", num_generations=2, beta=0.0, kl_in="loss", kl_estimator="auto",
                loss_type="dapo", epsilon=0.2, epsilon_high=None, mask_truncated_completions=False, response_length=3,
                num_iterations=1, scale_rewards="group")
    base.update(kw)
    return types.SimpleNamespace(**base)


def _close(t, want):
    torch.testing.assert_close(t, torch.tensor(want, dtype=t.dtype))


def _rollout(scores, ref=True, ended=(True, True, True, True)):
    # 4 responses of 2 real tokens (of 3); old log-prob -1, reference -1.5 at every token: k1 = 0.5 per token
    n = len(scores)
    return Rollout(torch.tensor(scores), torch.full((n, 3), -1.0), torch.full((n, 3), -1.5) if ref else None, None,
                   torch.tensor([[1.0, 1.0, 0.0]] * n), torch.tensor(ended))


# -- the free functions -----------------------------------------------------------------------------------------

def test_baseline_is_the_group_mean_without_any_std():
    # k=2: groups (1, 3) and (2, 6), means 2 and 4
    assert baseline_advantages(torch.tensor([1.0, 3.0, 2.0, 6.0]), 2).tolist() == [-1.0, 1.0, -2.0, 2.0]
    # k=4: one group, mean 3
    assert baseline_advantages(torch.tensor([1.0, 3.0, 2.0, 6.0]), 4).tolist() == [-2.0, 0.0, -1.0, 3.0]
    with pytest.raises(ValueError, match="groups of 3"):
        baseline_advantages(torch.tensor([1.0, 3.0, 2.0, 6.0]), 3)


def test_global_whitening_uses_every_masked_token_of_the_batch():
    # scores [1, 3, 2, 2], k=2 -> baseline-subtracted [-1, 1, 0, 0], broadcast over each response's tokens;
    # response lengths 3, 1, 1, 3 (of 3), so the 8 masked tokens are -1 -1 -1 | 1 | 0 | 0 0 0
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0], [1, 0, 0], [1, 1, 1]])
    returns = token_returns(baseline_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2), None, mask, 0.0)
    assert returns.tolist() == [[-1, -1, -1], [1, 0, 0], [0, 0, 0], [0, 0, 0]]
    # mean = (-3 + 1 + 0) / 8 = -0.25; deviations -0.75 (x3), 1.25 (x1), 0.25 (x4)
    # biased var = (3 * 0.5625 + 1.5625 + 4 * 0.0625) / 8 = 3.5 / 8 = 0.4375; 1/sqrt(0.4375) = 1.5118579
    adv = global_whiten(returns, mask)
    r = 1 / math.sqrt(0.4375)
    want = [[-0.75 * r] * 3, [1.25 * r, 0, 0], [0.25 * r, 0, 0], [0.25 * r] * 3]
    _close(adv, want)
    assert want[0][0] == pytest.approx(-1.1338934) and want[1][0] == pytest.approx(1.8898224)
    # over the masked tokens: mean 0, biased variance 1; padding stays 0
    m = mask.bool()
    assert adv[m].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert adv[m].var(unbiased=False).item() == pytest.approx(1.0)
    # GRPO's per-group scaling gives another answer: the group (2, 2) has std 0, so its samples get 0 there too,
    # but (1, 3) -> -/+ 1/sqrt(2) = 0.7071, not the batch-whitened values above
    assert group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2).tolist() == pytest.approx(
        [-0.70706, 0.70706, 0.0, 0.0], abs=1e-4)


def test_whitening_of_equal_returns_is_zero_not_nan():
    adv = global_whiten(torch.zeros(2, 3), torch.ones(2, 3))  # var 0 -> floored at 1e-8
    assert torch.equal(adv, torch.zeros(2, 3))
    assert torch.equal(global_whiten(torch.ones(2, 3), torch.zeros(2, 3)), torch.zeros(2, 3))  # no token at all


def test_kl_in_the_reward_makes_each_tokens_return_the_reward_to_go():
    adv = torch.tensor([1.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 9.0]])  # the 9 is padding: masked out
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    # per-token rewards, beta=0.5: row 0 = [-0.05, -0.10, -0.15 + 1] -> reward-to-go [0.70, 0.75, 0.85]
    #                                row 1 = [-0.25, -0.25 - 1, pad]  -> reward-to-go [-1.50, -1.25, 0]
    # i.e. A_i - beta * (sum of the KL from token t to the end): 1 - 0.5 * 0.6 = 0.7, ...
    _close(token_returns(adv, kl, mask, 0.5), [[0.70, 0.75, 0.85], [-1.50, -1.25, 0.0]])
    assert token_returns(adv, kl, mask, 0.0).tolist() == [[1, 1, 1], [-1, -1, 0]]  # beta 0: the score throughout
    assert reward_to_go(torch.tensor([[1.0, 2.0, 4.0]]), torch.tensor([[1.0, 1.0, 0.0]])).tolist() == [[3, 2, 0]]


def test_kl_estimators():
    lp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    # log p - log q = 0.5: k1 = 0.5, k2 = 0.5 * 0.25 = 0.125, k3 = exp(-0.5) - 1 + 0.5 = 0.1065307
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.125) == kl_k2(lp, ref).item()
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(math.exp(-0.5) - 0.5)
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        kl_estimate(lp, ref, "k4")
    # k2's gradient is (log p - log q) * d log p: the KL's own
    lp = torch.tensor([-1.0], requires_grad=True)
    kl_k2(lp, ref).sum().backward()
    assert lp.grad.item() == pytest.approx(0.5)


# -- the algorithm --------------------------------------------------------------------------------------------

def test_the_registry_makes_it_and_it_needs_a_reference_only_with_a_kl():
    algo = make_algorithm(_cfg(num_generations=4, num_iterations=2))
    assert isinstance(algo, ReinforcePP) and algo.name == "reinforce_pp"
    assert not algo.needs_values and not algo.needs_reference  # beta = 0
    assert (algo.samples_per_prompt, algo.update_epochs) == (4, 2)
    assert make_algorithm(_cfg(beta=0.01)).needs_reference
    assert make_algorithm(_cfg(beta=0.01, kl_in="reward")).needs_reference
    # kl_estimator=auto: k2 in the loss, k1 in the reward (OpenRLHF's choices); named ones are kept
    assert make_algorithm(_cfg()).kl_estimator == "k2"
    assert make_algorithm(_cfg(kl_in="reward")).kl_estimator == "k1"
    assert make_algorithm(_cfg(kl_in="reward", kl_estimator="k3")).kl_estimator == "k3"


def test_advantages_with_the_kl_in_the_loss():
    # scores [1, 3, 2, 2], k=2 -> [-1, 1, 0, 0] on 2 tokens each: 8 tokens -1 -1 1 1 0 0 0 0,
    # mean 0, biased var 4 / 8 = 0.5 -> -/+ 1/sqrt(0.5) = -/+ 1.4142136; the KL stays out of the advantages
    algo = make_algorithm(_cfg(beta=0.1))
    out = algo.advantages(_rollout([1.0, 3.0, 2.0, 2.0]))
    s = math.sqrt(2.0)
    _close(out.advantages, [[-s, -s, 0], [s, s, 0], [0, 0, 0], [0, 0, 0]])
    assert out.returns is None and out.finite
    assert out.kl.sum(1).tolist() == pytest.approx([1.0] * 4)  # k1 0.5 x 2 tokens, for the step's metrics
    assert out.metrics["objective/rlhf_reward"] == pytest.approx(2.0)  # the KL is not in the reward
    assert out.metrics["objective/group_std"] == pytest.approx(math.sqrt(2) / 2)  # std(1, 3) = 1.414, std(2, 2) = 0
    assert out.metrics["objective/frac_zero_std"] == 0.5
    # without a reference (beta 0): the same advantages, no KL
    plain = make_algorithm(_cfg()).advantages(_rollout([1.0, 3.0, 2.0, 2.0], ref=False))
    assert torch.allclose(plain.advantages, out.advantages) and plain.kl is None


def test_advantages_with_the_kl_in_the_reward():
    # k1 = 0.5 per token, beta 0.1: returns A - 0.1 * (KL to the end) = [A - 0.1, A - 0.05] per response:
    #   [-1.1, -1.05], [0.9, 0.95], [-0.1, -0.05], [-0.1, -0.05]
    # mean = (-2.15 + 1.85 - 0.15 - 0.15) / 8 = -0.075
    # deviations -1.025 -0.975 | 0.975 1.025 | -0.025 0.025 | -0.025 0.025
    # biased var = (2 * 1.050625 + 2 * 0.950625 + 4 * 0.000625) / 8 = 4.005 / 8 = 0.500625
    algo = make_algorithm(_cfg(beta=0.1, kl_in="reward"))
    out = algo.advantages(_rollout([1.0, 3.0, 2.0, 2.0]))
    r = 1 / math.sqrt(0.500625)
    want = [[-1.025 * r, -0.975 * r, 0], [0.975 * r, 1.025 * r, 0], [-0.025 * r, 0.025 * r, 0],
            [-0.025 * r, 0.025 * r, 0]]
    _close(out.advantages, want)
    assert want[0][0] == pytest.approx(-1.4486638, abs=1e-6)  # sqrt(0.500625) = 0.7075485
    assert out.metrics["objective/rlhf_reward"] == pytest.approx(2.0 - 0.1 * 1.0)  # score - beta x KL per response
    # the estimator is the config's: k2 in the reward = 0.125 per token -> rlhf reward 2 - 0.1 * 0.25
    k2 = make_algorithm(_cfg(beta=0.1, kl_in="reward", kl_estimator="k2")).advantages(_rollout([1.0, 3.0, 2.0, 2.0]))
    assert k2.metrics["objective/rlhf_reward"] == pytest.approx(2.0 - 0.025)


def test_truncated_responses_leave_the_loss_and_the_whitening():
    # response 1 (score 3) never ended: without it, the 6 tokens are -1 -1 0 0 0 0 (mean -1/3)
    r = _rollout([1.0, 3.0, 2.0, 2.0], ended=(True, False, True, True))
    out = make_algorithm(_cfg(mask_truncated_completions=True)).advantages(r)
    assert out.loss_mask[1].sum() == 0 and out.advantages[1].abs().sum() == 0
    # deviations -2/3 (x2), 1/3 (x4); biased var = (2 * 4/9 + 4 * 1/9) / 6 = 2/9
    r9 = 1 / math.sqrt(2 / 9)
    assert out.advantages[0, :2].tolist() == pytest.approx([-2 / 3 * r9] * 2)
    assert out.advantages[2, :2].tolist() == pytest.approx([1 / 3 * r9] * 2)


def test_nan_scores_are_reported_not_finite():
    assert not make_algorithm(_cfg()).advantages(_rollout([1.0, math.nan, 2.0, 2.0])).finite


def _micro(new, old, adv, ref=None, n=2, n_step=4, step_tokens=8.0):
    return MicroBatch(new, None, None, old, ref, None, adv, None, torch.ones_like(old), n, n_step, step_tokens)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("epsilon_high", [None, 0.28])
def test_the_loss_is_grpos_clipped_surrogate_on_the_same_inputs(loss_type, epsilon_high):
    torch.manual_seed(0)
    old = torch.randn(2, 4) * 0.1 - 2
    delta = torch.tensor([[0.5, -0.5, 0.1, 0.0], [0.3, -0.3, 0.05, 0.25]])  # some ratios past 1 +- 0.2 (clipped)
    adv = torch.tensor([[1.0, -1.0, 0.5, 2.0], [-0.5, 1.5, -2.0, 0.3]])
    kw = dict(loss_type=loss_type, epsilon_high=epsilon_high, response_length=4)
    new_a, new_b = (old + delta).requires_grad_(), (old + delta).requires_grad_()
    ours = make_algorithm(_cfg(**kw)).loss(_micro(new_a, old, adv))
    grpo = GRPO(_cfg(stage="grpo", **kw)).loss(_micro(new_b, old, adv))
    assert ours.loss.item() == pytest.approx(grpo.loss.item())
    assert ours.stats["policy/clipfrac"].item() == grpo.stats["policy/clipfrac"].item() > 0
    ours.loss.backward()
    grpo.loss.backward()
    assert torch.allclose(new_a.grad, new_b.grad)
    # and both are -min(r A, clip(r) A) aggregated by loss_type
    s = clipped_surrogate(delta, adv, 0.2, epsilon_high or 0.2)
    want = aggregate(s.loss, torch.ones(2, 4), loss_type, max_len=4, step_tokens=8.0)
    assert ours.stats["loss/policy"].item() == pytest.approx(want.item())


def test_the_kl_in_the_loss_adds_beta_times_k2_per_token():
    old = torch.zeros(2, 2)
    new = torch.zeros(2, 2, requires_grad=True)  # ratio 1: the surrogate is -A
    adv = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    ref = torch.full((2, 2), -0.5)  # log p - log q = 0.5 -> k2 = 0.125 per token
    out = make_algorithm(_cfg(beta=0.1, loss_type="bnpo")).loss(_micro(new, old, adv, ref))
    # bnpo: mean over the 4 tokens of (-A + 0.1 * 0.125) = -2 + 0.0125
    assert out.stats["loss/policy"].item() == pytest.approx(-2.0 + 0.0125)
    assert out.stats["policy/kl"].item() == pytest.approx(0.125)
    assert out.loss.item() == pytest.approx((-2.0 + 0.0125) * 2 / 4)  # half the optimizer step's episodes
    # in the reward, the loss has no KL term
    rew = make_algorithm(_cfg(beta=0.1, kl_in="reward", loss_type="bnpo")).loss(_micro(new, old, adv, ref))
    assert rew.stats["loss/policy"].item() == pytest.approx(-2.0) and "policy/kl" not in rew.stats


# -- the config --------------------------------------------------------------------------------------------------

def test_config_defaults_checks_and_renamed_keys():
    cfg = load_config(ReinforcePPConfig)
    assert (cfg.stage, cfg.beta, cfg.kl_in, cfg.kl_estimator, cfg.loss_type) == ("reinforce_pp", 0.01, "loss", "auto",
                                                                                 "dapo")
    with pytest.raises(ConfigError) as e:
        load_config(ReinforcePPConfig, overrides={"kl_in": "both", "kl_estimator": "k4", "loss_type": "token"})
    msg = str(e.value)
    assert "kl_in='both'" in msg and "kl_estimator='k4'" in msg and "loss_type='token'" in msg
    with pytest.raises(ConfigError) as e:
        load_config(ReinforcePPConfig, overrides={"use_kl_loss": True, "init_kl_coef": 0.01, "kl_loss_type": "k2",
                                                  "n_samples_per_prompt": 4, "eps_clip": 0.2})
    msg = str(e.value)
    for old, new in (("use_kl_loss", "kl_in"), ("init_kl_coef", "beta"), ("kl_loss_type", "kl_estimator"),
                     ("n_samples_per_prompt", "num_generations"), ("eps_clip", "epsilon")):
        assert f"'{old}': renamed" in msg and f"`{new}" in msg, old


def test_presets_have_grpos_budget_and_batch_shapes():
    from edgerlhf.config import GRPOConfig
    from edgerlhf.presets import STAGE_PRESETS, STUDY_PRESETS

    shape = ("num_rollouts_per_step", "num_generations", "rollout_batch_size", "mini_batch_size",
             "gradient_accumulation_steps", "num_iterations", "steps", "model")
    assert set(STAGE_PRESETS["reinforce_pp"]) == {"quick", "full", "smoke"}
    for name in ("quick", "full", "smoke"):
        ours, grpo = load_config(ReinforcePPConfig, preset=name), load_config(GRPOConfig, preset=name)
        assert [getattr(ours, k) for k in shape] == [getattr(grpo, k) for k in shape], name
    assert load_config(ReinforcePPConfig, preset="quick").steps * 32 == 256
    assert load_config(ReinforcePPConfig, preset="full").steps * 32 == 2048
    for study in ("quick", "full"):
        assert STUDY_PRESETS[study]["reinforce_pp"] == {"preset": study, "gold_eval_prompts": 0}
    assert STUDY_PRESETS["smoke"]["reinforce_pp"] == STUDY_PRESETS["smoke"]["grpo"]
