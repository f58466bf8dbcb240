"""Ensemble aggregations, disagreement, WARM's weight average and the over-optimisation warning, by hand."""

import math

import pytest
import torch

from edgerlhf.rl.ensemble import aggregate, agreement, normalise, spread, weight_average
from edgerlhf.rl.overopt import overopt_warning


def test_normalise_uses_each_members_mean_and_std():
    s = torch.tensor([[1.0, 3.0], [10.0, 30.0]])
    z = normalise(s, [2.0, 20.0], [1.0, 10.0])
    assert torch.allclose(z, torch.tensor([[-1.0, 1.0], [-1.0, 1.0]]))
    with pytest.raises(ValueError, match="positive"):
        normalise(s, [0, 0], [1.0, 0.0])


def test_aggregations_by_hand():
    # three members, two responses: response 0 scores (1, 2, 6), response 1 scores (3, 3, 3)
    z = torch.tensor([[1.0, 3.0], [2.0, 3.0], [6.0, 3.0]])
    assert aggregate(z, "mean").tolist() == pytest.approx([3.0, 3.0])
    assert aggregate(z, "min").tolist() == pytest.approx([1.0, 3.0])
    # population variance of (1, 2, 6): mean 3, squares 4 + 1 + 9 = 14, / 3
    assert aggregate(z, "uwo", 0.5).tolist() == pytest.approx([3.0 - 0.5 * 14 / 3, 3.0])
    assert aggregate(z, "uwo", 0.0).tolist() == pytest.approx([3.0, 3.0])
    assert spread(z).tolist() == pytest.approx([math.sqrt(14 / 3), 0.0])
    # UWO and WCO punish the disputed response, the mean does not
    assert aggregate(z, "uwo", 0.5)[0] < aggregate(z, "uwo", 0.5)[1]


def test_aggregate_rejects_bad_input():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="uwo_lambda=-1"):
        aggregate(z, "uwo", -1.0)
    with pytest.raises(ValueError, match="mean, min, uwo"):
        aggregate(z, "median")


def test_agreement_counts_pairs_ordered_alike():
    s = torch.tensor([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [3.0, 2.0, 1.0]])
    a = agreement(s)
    # pairs (0,1) (0,2) (1,2): member 1 agrees with member 0 on the first two, member 2 on none
    assert a[0, 1].item() == pytest.approx(2 / 3)
    assert a[0, 2].item() == pytest.approx(0.0)
    assert a[1, 2].item() == pytest.approx(1 / 3)
    assert torch.allclose(a.diagonal(), torch.ones(3))


def test_weight_average_is_the_mean_of_the_lora_products():
    torch.manual_seed(0)
    w = torch.randn(4, 4)
    deltas = [torch.randn(4, 2) @ torch.randn(2, 4) for _ in range(3)]  # B_k A_k
    heads = [torch.randn(1, 4) for _ in range(3)]
    states = ({"w": w + d, "score": h, "pos": torch.arange(4)} for d, h in zip(deltas, heads))
    avg = weight_average(states)
    assert torch.allclose(avg["w"], w + sum(deltas) / 3, atol=1e-6)
    assert torch.allclose(avg["score"], sum(heads) / 3, atol=1e-6)
    assert avg["pos"].tolist() == [0, 1, 2, 3]


def test_weight_average_refuses_different_shapes():
    with pytest.raises(ValueError, match="member 1: w has shape"):
        weight_average([{"w": torch.zeros(2, 2)}, {"w": torch.zeros(2, 3)}])
    with pytest.raises(ValueError, match="different parameters"):
        weight_average([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])


def test_overopt_warning_fires_after_a_sustained_rise():
    flat = [1.0] * 4
    assert overopt_warning(flat + [1.0] * 8, rise=0.5) is None
    # window 2: baseline 1; trailing means from step 4: (1,1)=1, (1,2)=1.5, (2,2)=2, (2,2)=2 -> patience 2 at step 6
    w = overopt_warning([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0], rise=0.5, window=2, patience=2)
    assert w is not None and w.step == 6 and w.baseline == 1.0 and w.ratio == pytest.approx(2.0)
    # one spike does not fire with patience 2
    assert overopt_warning([1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0], rise=0.5, window=1, patience=2) is None
    # too short to have both windows
    assert overopt_warning([1.0, 9.0, 9.0], rise=0.5, window=2) is None
    with pytest.raises(ValueError, match="rise=0"):
        overopt_warning([1.0] * 8, rise=0.0)


def test_overopt_warning_is_the_same_on_a_prefix():
    """Stateless: the step it fires at does not depend on how much history follows (exact resume)."""
    sig = [0.2, 0.21, 0.19, 0.2, 0.25, 0.31, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7]
    full = overopt_warning(sig, rise=0.5, window=3, patience=2)
    assert full is not None
    assert overopt_warning(sig[:full.step], rise=0.5, window=3, patience=2) == full
    assert overopt_warning(sig[:full.step - 1], rise=0.5, window=3, patience=2) is None
