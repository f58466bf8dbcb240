import math

import torch

from edgerlhf.rl.losses import bradley_terry_loss


def test_bradley_terry_hand_computed():
    rc, rr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    # -log sigmoid(1) = log(1 + e^-1) = 0.313262; -log sigmoid(-2) = log(1 + e^2) = 2.126928
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2
    assert math.isclose(bradley_terry_loss(rc, rr).item(), expected, rel_tol=1e-6)


def test_bradley_terry_margin_and_centering():
    rc, rr = torch.tensor([1.0]), torch.tensor([0.0])
    # margin 1: -log sigmoid(0) = log 2; centering 0.1 * (1 + 0)^2 = 0.1
    assert math.isclose(bradley_terry_loss(rc, rr, margin=1.0).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(bradley_terry_loss(rc, rr, margin=1.0, center_coef=0.1).item(), math.log(2) + 0.1, rel_tol=1e-6)


def test_bradley_terry_is_finite_for_huge_gaps():
    loss = bradley_terry_loss(torch.tensor([-1e4]), torch.tensor([1e4]))
    assert torch.isfinite(loss) and math.isclose(loss.item(), 2e4, rel_tol=1e-6)
