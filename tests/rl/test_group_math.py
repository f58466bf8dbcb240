"""The value-free methods' math against values worked out by hand (TRL 1.16's definitions)."""

import math

import pytest
import torch

from edgerlhf.rl.group_math import aggregate, clipped_surrogate, group_advantages, leave_one_out_advantages, normalize

SCORES = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0])  # two groups of 4


def test_group_advantages_by_group_std():
    # group 1: mean 2.5, deviations -1.5 -0.5 0.5 1.5, unbiased std sqrt(5/3); group 2: all equal -> 0
    std = math.sqrt(5 / 3)
    want = [-1.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 1.5 / (std + 1e-4), 0, 0, 0, 0]
    assert group_advantages(SCORES, 4, "group").tolist() == pytest.approx(want, rel=1e-6)


def test_group_advantages_by_batch_std_and_unscaled():
    # all 8: mean 1.25, squared deviations sum 17.5, unbiased variance 2.5
    std = math.sqrt(2.5)
    raw = [-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0]
    assert group_advantages(SCORES, 4, "batch").tolist() == pytest.approx([x / (std + 1e-4) for x in raw], rel=1e-6)
    assert group_advantages(SCORES, 4, "none").tolist() == pytest.approx(raw)
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(SCORES, 3)
    with pytest.raises(ValueError, match="scale='std'"):
        group_advantages(SCORES, 4, "std")


def test_leave_one_out_baseline():
    # r=1: others (2+3+4)/3 = 3 -> -2; r=2: 8/3 -> -2/3; r=3: 7/3 -> 2/3; r=4: 2 -> 2
    got = leave_one_out_advantages(SCORES, 4).tolist()
    assert got == pytest.approx([-2, -2 / 3, 2 / 3, 2, 0, 0, 0, 0])
    # the same as k/(k-1) times the group-centred reward
    assert got == pytest.approx((group_advantages(SCORES, 4, "none") * 4 / 3).tolist())
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(SCORES, 1)


def test_normalize():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert normalize(x).tolist() == pytest.approx([-1 / (1 + 1e-4), 0, 1 / (1 + 1e-4)])


def test_asymmetric_clipped_surrogate():
    # ratios 0.5, 1, 1.5, 1.5 with advantages -1, 1, 1, -1; clip to [0.8, 1.28]
    s = clipped_surrogate(torch.log(torch.tensor([0.5, 1.0, 1.5, 1.5])), torch.tensor([-1.0, 1.0, 1.0, -1.0]),
                          0.2, 0.28)
    # r=0.5,A=-1: min(-0.5, -0.8) = -0.8 -> +0.8 (lower clip active); r=1,A=1: -1;
    # r=1.5,A=1: min(1.5, 1.28) -> -1.28 (upper clip active); r=1.5,A=-1: min(-1.5, -1.28) = -1.5 -> +1.5 (unclipped)
    assert s.loss.tolist() == pytest.approx([0.8, -1.0, -1.28, 1.5])
    assert s.clipped_low.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert s.clipped_high.tolist() == [0.0, 0.0, 1.0, 0.0]


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize("loss_type,kw,want", [
    ("grpo", {}, (1.5 + 5.0) / 2),            # per-sequence means (1+2)/2 and (4+5+6)/3, then their mean
    ("bnpo", {}, 18 / 5),                     # the 5 real tokens
    ("dr_grpo", {"max_len": 4}, 18 / (2 * 4)),  # sum over B x max_len
    ("dapo", {"step_tokens": 10}, 18 / 10),   # sum over the optimizer step's tokens
])
def test_aggregation_as_trl_defines_it(loss_type, kw, want):
    assert aggregate(PER_TOKEN, MASK, loss_type, **kw).item() == pytest.approx(want)


def test_dapo_micro_batches_add_up_to_the_token_mean_of_the_step():
    whole = aggregate(PER_TOKEN, MASK, "bnpo")
    parts = sum(aggregate(PER_TOKEN[i:i + 1], MASK[i:i + 1], "dapo", step_tokens=float(MASK.sum())) for i in range(2))
    assert parts.item() == pytest.approx(whole.item())
    with pytest.raises(ValueError, match="step_tokens"):
        aggregate(PER_TOKEN, MASK, "dapo")
    with pytest.raises(ValueError, match="loss_type='seq'"):
        aggregate(PER_TOKEN, MASK, "seq")
