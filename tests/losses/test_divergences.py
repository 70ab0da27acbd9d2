"""TV, JS and skew KL: naive loops, closed forms and limiting cases."""
import math

import pytest
import torch

from prefdistill.losses import forward_kl, js_divergence, reverse_kl, skew_forward_kl, skew_reverse_kl, total_variation


def _probs(logits, t=1.0):
    return torch.softmax(logits / t, -1)


def _naive(fn, s_logits, t_logits, t=1.0):
    """Apply fn(p, q) (teacher p, student q: 1-D distributions) at every position by explicit loops."""
    B, T, _ = s_logits.shape
    out = torch.zeros(B, T)
    for b in range(B):
        for i in range(T):
            out[b, i] = fn(_probs(t_logits[b, i], t), _probs(s_logits[b, i], t))
    return out


def _kl(a, b):
    return sum(a[v] * (math.log(a[v]) - math.log(b[v])) for v in range(len(a)))


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(2, 3, 6) * 2, torch.randn(2, 3, 6) * 2


@pytest.mark.parametrize("t", [1.0, 1.5])
def test_against_naive_loops(logits, t):
    s, te = logits
    assert torch.allclose(total_variation(s, te, temperature=t), _naive(lambda p, q: 0.5 * (p - q).abs().sum(), s, te, t), atol=1e-5)
    jsd = lambda p, q: 0.5 * _kl(p, (p + q) / 2) + 0.5 * _kl(q, (p + q) / 2)  # noqa: E731
    assert torch.allclose(js_divergence(s, te, temperature=t), _naive(jsd, s, te, t), atol=1e-5)
    skf = lambda p, q: _kl(p, 0.1 * p + 0.9 * q)  # noqa: E731
    assert torch.allclose(skew_forward_kl(s, te, alpha=0.1, temperature=t), _naive(skf, s, te, t), atol=1e-5)
    skr = lambda p, q: _kl(q, 0.1 * q + 0.9 * p)  # noqa: E731
    assert torch.allclose(skew_reverse_kl(s, te, alpha=0.1, temperature=t), _naive(skr, s, te, t), atol=1e-5)


def test_zero_for_identical_inputs(logits):
    x, _ = logits
    for fn in (total_variation, js_divergence):
        assert torch.allclose(fn(x, x), torch.zeros(2, 3), atol=1e-6)
    assert torch.allclose(skew_forward_kl(x, x, alpha=0.3), torch.zeros(2, 3), atol=1e-6)
    assert torch.allclose(skew_reverse_kl(x, x, alpha=0.3), torch.zeros(2, 3), atol=1e-6)


def test_bounds_and_symmetry(logits):
    s, te = logits
    tv, js = total_variation(s, te), js_divergence(s, te)
    assert ((tv >= 0) & (tv <= 1)).all() and ((js >= 0) & (js <= math.log(2) + 1e-6)).all()
    assert torch.allclose(js, js_divergence(te, s), atol=1e-6)
    assert torch.allclose(tv, total_variation(te, s), atol=1e-6)


def test_disjoint_supports_reach_the_bounds():
    big = 50.0
    s = torch.tensor([[[big, 0.0, 0.0, 0.0]]])
    te = torch.tensor([[[0.0, 0.0, 0.0, big]]])
    assert total_variation(s, te).item() == pytest.approx(1.0, abs=1e-6)
    assert js_divergence(s, te).item() == pytest.approx(math.log(2), abs=1e-5)


def test_skew_limits(logits):
    s, te = logits
    assert torch.allclose(skew_forward_kl(s, te, alpha=0.0), forward_kl(s, te), atol=1e-6)
    assert torch.allclose(skew_reverse_kl(s, te, alpha=0.0), reverse_kl(s, te), atol=1e-6)
    assert torch.allclose(skew_forward_kl(s, te, alpha=1.0), torch.zeros(2, 3), atol=1e-6)
    # skewing toward p can only shrink the divergence
    assert (skew_forward_kl(s, te, alpha=0.1) <= forward_kl(s, te) + 1e-6).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        skew_forward_kl(s, te, alpha=1.5)


def test_gradients_pull_student_toward_teacher(logits):
    s, te = logits
    for fn in (total_variation, js_divergence, lambda a, b: skew_forward_kl(a, b, alpha=0.1)):
        student = s.clone().requires_grad_(True)
        before = fn(student, te).sum()
        before.backward()
        with torch.no_grad():
            after = fn(student - 0.05 * student.grad, te).sum()
        assert after < before
