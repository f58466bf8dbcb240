import math

import pytest
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


def test_dpo_sigmoid_and_ipo_by_hand():
    import math

    from edgerlhf.rl.losses import dpo_loss

    pc, pr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -4.0])
    # h = (pc - rc) - (pr - rr) = (1 - (-1), 0 - 1) = (2, -1)
    loss, r_c, r_r = dpo_loss(pc, pr, rc, rr, beta=0.1)
    want = [-math.log(1 / (1 + math.exp(-0.2))), -math.log(1 / (1 + math.exp(0.1)))]
    assert loss.tolist() == pytest.approx(want, abs=1e-6)
    assert r_c.tolist() == pytest.approx([0.1, 0.0]) and r_r.tolist() == pytest.approx([-0.1, 0.1])
    smooth, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.25)
    assert smooth[0].item() == pytest.approx(0.75 * want[0] + 0.25 * -math.log(1 / (1 + math.exp(0.2))), abs=1e-6)
    ipo, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="ipo")  # (h - 1/(2*0.1))^2 = (2-5)^2, (-1-5)^2
    assert ipo.tolist() == pytest.approx([9.0, 36.0])
    with pytest.raises(ValueError, match="loss_type='hinge'"):
        dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="hinge")


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected():
    from edgerlhf.rl.losses import dpo_loss

    pc, pr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    loss, _, _ = dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5)
    loss.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descending the loss raises log p(chosen), lowers log p(rejected)
    assert loss.item() == pytest.approx(math.log(2))
