import math

import pytest
import torch

from edgerlhf.rl.logprobs import token_logprobs


def _reference(h, w, targets, T, b=None):
    z = torch.nn.functional.linear(h, w, b).float() / T
    lp = torch.log_softmax(z, -1).gather(-1, targets[..., None]).squeeze(-1)
    p = torch.softmax(z, -1)
    return lp, -(p * torch.log_softmax(z, -1)).sum(-1)


def test_by_hand_two_tokens_vocabulary_of_three():
    # h = identity rows, W = diag -> logits are [1,0,0] and [0,2,0] at T = 1
    h = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    w = torch.eye(3)
    lp, ent = token_logprobs(h, w, torch.tensor([0, 2]), 1.0, entropy=True)
    e = math.e
    assert lp[0].item() == pytest.approx(1 - math.log(e + 2))
    assert lp[1].item() == pytest.approx(0 - math.log(e ** 2 + 2))
    p = torch.tensor([e, 1, 1]) / (e + 2)
    assert ent[0].item() == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)


@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("T", [1.0, 0.7])
def test_values_and_gradients_match_plain_autograd(chunk, T):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 7, 16, generator=g, dtype=torch.float64)
    w = torch.randn(50, 16, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(50, generator=g, dtype=torch.float64) * 0.1
    targets = torch.randint(0, 50, (3, 7), generator=g)
    up_lp, up_ent = (torch.randn(3, 7, generator=g, dtype=torch.float64),
                     torch.randn(3, 7, generator=g, dtype=torch.float64))
    grads = []
    for fn in ("ours", "ref"):
        hh, ww, bb = (x.clone().requires_grad_(True) for x in (h, w, b))
        if fn == "ours":
            lp, ent = token_logprobs(hh, ww, targets, T, bias=bb, entropy=True, chunk=chunk)
        else:
            lp, ent = _reference(hh, ww, targets, T, bb)
        ((lp * up_lp).sum() + (ent * up_ent).sum()).backward()
        grads.append((lp.detach(), ent.detach(), hh.grad, ww.grad, bb.grad))
    for a, r in zip(*grads):
        torch.testing.assert_close(a.double(), r.double(), rtol=1e-5, atol=1e-6)


def test_frozen_head_gets_no_gradient_and_entropy_off_returns_none():
    h = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(20, 8)  # frozen (a tied embedding)
    targets = torch.randint(0, 20, (4,))
    lp, ent = token_logprobs(h, w, targets, chunk=3)
    assert ent is None
    lp.sum().backward()
    assert h.grad is not None and w.grad is None
    torch.testing.assert_close(lp.detach(), _reference(h.detach(), w, targets, 1.0)[0])
