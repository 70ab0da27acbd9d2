"""The loss maths against hand-computed values, naive loops and gradient directions."""
import math

import pytest
import torch

from prefdistill.losses import forward_kl, plad_margin_loss, plad_rank_loss, reverse_kl


def test_rank_loss_hand_values():
    chosen = torch.tensor([-1.0, -2.0, -0.5])
    rejected = torch.tensor([-2.0, -1.0, -0.4])
    # max(0, 0.5 + r - c): 0.5 - 1 -> 0 ; 0.5 + 1 = 1.5 ; 0.5 + 0.1 = 0.6
    expected = torch.tensor([0.0, 1.5, 0.6])
    assert torch.allclose(plad_rank_loss(chosen, rejected, beta=0.5), expected)


def test_margin_loss_hand_values_and_reduces_to_rank():
    chosen, rejected = torch.tensor([-1.0, -1.0]), torch.tensor([-1.2, -0.8])
    cs, rs = torch.tensor([0.9, 0.3]), torch.tensor([0.4, 0.1])
    # beta*(s+ - s-) - c + r : 2*0.5 - 0.2 = 0.8 ; 2*0.2 + 0.2 = 0.6
    out = plad_margin_loss(chosen, rejected, cs, rs, beta=2.0)
    assert torch.allclose(out, torch.tensor([0.8, 0.6]))
    # a unit score gap with scale beta is the ranking loss with margin beta
    ones, zeros = torch.ones(2), torch.zeros(2)
    assert torch.allclose(plad_margin_loss(chosen, rejected, ones, zeros, beta=0.7), plad_rank_loss(chosen, rejected, beta=0.7))


def test_rank_loss_gradient_direction():
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-1.0], requires_grad=True)
    plad_rank_loss(chosen, rejected, beta=1.0).sum().backward()
    # gradient descent raises the chosen log-prob and lowers the rejected one
    assert chosen.grad.item() < 0 and rejected.grad.item() > 0


def test_rank_loss_zero_gradient_when_margin_met():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    loss = plad_rank_loss(chosen, rejected, beta=1.0).sum()
    loss.backward()
    assert loss.item() == 0 and chosen.grad.item() == 0 and rejected.grad.item() == 0


def _naive_kl(p_logits, q_logits, t):
    """KL(p || q) with explicit loops over batch, time and vocabulary."""
    B, T, V = p_logits.shape
    out = torch.zeros(B, T)
    for b in range(B):
        for i in range(T):
            p = torch.softmax(p_logits[b, i] / t, -1)
            q = torch.softmax(q_logits[b, i] / t, -1)
            out[b, i] = sum(p[v] * (math.log(p[v]) - math.log(q[v])) for v in range(V))
    return out


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_directions_against_naive_loops(temperature):
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    assert forward_kl(s, t, temperature=temperature).shape == (2, 3)
    assert torch.allclose(forward_kl(s, t, temperature=temperature), _naive_kl(t, s, temperature), atol=1e-5)
    assert torch.allclose(reverse_kl(s, t, temperature=temperature), _naive_kl(s, t, temperature), atol=1e-5)


def test_kl_zero_for_identical_and_positive_otherwise():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 7)
    assert torch.allclose(forward_kl(x, x), torch.zeros(2, 4), atol=1e-6)
    assert torch.allclose(reverse_kl(x, x), torch.zeros(2, 4), atol=1e-6)
    y = torch.randn(2, 4, 7)
    assert (forward_kl(x, y) > 0).all() and (reverse_kl(x, y) > 0).all()


def test_kl_shape_mismatch_names_vocabulary():
    with pytest.raises(ValueError, match="vocabulary"):
        forward_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
