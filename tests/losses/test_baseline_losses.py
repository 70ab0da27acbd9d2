"""Generalised JSD, skew reverse KL and MiniLLM's policy gradient: limits, naive loops, gradient directions."""
import math

import pytest
import torch

from prefdistill.losses import (
    forward_kl,
    generalized_jsd,
    js_divergence,
    minillm_loss,
    normalized_future_returns,
    reverse_kl,
    skew_reverse_kl,
)


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(2, 3, 6), torch.randn(2, 3, 6)  # student, teacher: (B, T, V)


def _kl(a, b):
    """KL(a ‖ b) of two 1-D distributions, summed term by term."""
    return sum(float(a[v]) * (math.log(float(a[v])) - math.log(float(b[v]))) for v in range(len(a)))


# ---------------------------------------------------------------- generalised JSD (GKD)
def test_generalized_jsd_zero_for_identical_logits(logits):
    x, _ = logits
    for beta in (0.0, 0.3, 0.5, 0.9, 1.0):
        assert torch.allclose(generalized_jsd(x, x, beta=beta), torch.zeros(2, 3), atol=1e-6)


def test_generalized_jsd_endpoints_are_the_two_kls(logits):
    s, t = logits
    assert torch.equal(generalized_jsd(s, t, beta=0.0), forward_kl(s, t))
    assert torch.equal(generalized_jsd(s, t, beta=1.0), reverse_kl(s, t))
    assert torch.equal(generalized_jsd(s, t, beta=0.0, temperature=2.0), forward_kl(s, t, temperature=2.0))


def test_generalized_jsd_is_continuous_at_the_endpoints(logits):
    """The 1/(β(1 − β)) scaling makes β → 0 and β → 1 approach the two KLs (unscaled JSD_β would vanish)."""
    s, t = logits
    fwd, rev = forward_kl(s, t), reverse_kl(s, t)
    assert ((fwd - rev).abs() > 0.05 * fwd).any()  # the two limits are distinguishable at this tolerance
    assert torch.allclose(generalized_jsd(s, t, beta=1e-4), fwd, rtol=1e-2, atol=1e-4)
    assert torch.allclose(generalized_jsd(s, t, beta=1 - 1e-4), rev, rtol=1e-2, atol=1e-4)
    # and the approach is monotone in the distance to the endpoint (error is O(β))
    err = [(generalized_jsd(s, t, beta=b) - fwd).abs().max() for b in (1e-1, 1e-2, 1e-3)]
    assert err[0] > err[1] > err[2]


def test_generalized_jsd_at_half_is_four_times_js(logits):
    s, t = logits
    assert torch.allclose(generalized_jsd(s, t, beta=0.5), 4 * js_divergence(s, t), atol=1e-6)


@pytest.mark.parametrize("beta,temp", [(0.3, 1.0), (0.7, 2.0)])
def test_generalized_jsd_against_naive_loop(logits, beta, temp):
    s, t = logits
    B, T, _ = s.shape
    expected = torch.zeros(B, T)
    for b in range(B):
        for i in range(T):
            p = torch.softmax(t[b, i] / temp, -1).double()
            q = torch.softmax(s[b, i] / temp, -1).double()
            m = beta * p + (1 - beta) * q  # explicit mixture
            expected[b, i] = (beta * _kl(p, m) + (1 - beta) * _kl(q, m)) / (beta * (1 - beta))
    assert torch.allclose(generalized_jsd(s, t, beta=beta, temperature=temp), expected, atol=1e-5)


def test_generalized_jsd_swap_symmetry_and_non_negative():
    torch.manual_seed(3)
    s, t = torch.randn(4, 5, 8) * 3, torch.randn(4, 5, 8) * 3
    for beta in (0.0, 0.1, 0.5, 0.8, 1.0):
        out = generalized_jsd(s, t, beta=beta)
        assert (out >= 0).all() and (out > 0).any()
        # JSD_β(p, q) = JSD_{1−β}(q, p): same mixture, same weights
        assert torch.allclose(out, generalized_jsd(t, s, beta=1 - beta), atol=1e-5)


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_generalized_jsd_rejects_bad_beta(logits, beta):
    s, t = logits
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(s, t, beta=beta)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_generalized_jsd_gradient_step_pulls_student_to_teacher(beta):
    # the teacher is sure of token 0, the student of token 4: far apart
    t = torch.tensor([[[4.0, 0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, -1.0, 0.0]]])
    s0 = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 4.0], [0.0, -1.0, 0.0, 3.0, 0.0]]])
    s = s0.clone().requires_grad_(True)
    before = generalized_jsd(s, t, beta=beta)
    before.sum().backward()
    with torch.no_grad():
        stepped = s0 - 0.5 * s.grad
        after = generalized_jsd(stepped, t, beta=beta)
        assert (after < before).all()
        top = t.argmax(-1, keepdim=True)  # (1, 2, 1): the teacher's most likely token
        q_top_before = torch.softmax(s0, -1).gather(-1, top)
        q_top_after = torch.softmax(stepped, -1).gather(-1, top)
        assert (q_top_after > q_top_before).all()


# ---------------------------------------------------------------- skew KL (only what test_divergences lacks)
def test_skew_reverse_kl_vanishes_at_alpha_one_and_only_shrinks(logits):
    s, t = logits
    assert torch.allclose(skew_reverse_kl(s, t, alpha=1.0), torch.zeros(2, 3), atol=1e-6)
    assert (skew_reverse_kl(s, t, alpha=0.1) <= reverse_kl(s, t) + 1e-6).all()
    assert (skew_reverse_kl(s, t, alpha=0.1) > 0).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        skew_reverse_kl(s, t, alpha=-0.2)


# ---------------------------------------------------------------- MiniLLM
def _naive_future_returns(rewards, mask):
    B, T = rewards.shape
    out = torch.zeros(B, T)
    for b in range(B):
        for i in range(T):
            later = [float(rewards[b, j]) for j in range(i + 1, T) if mask[b, j]]
            out[b, i] = sum(later) / len(later) if later else 0.0
    return out


def test_normalized_future_returns_against_double_loop():
    torch.manual_seed(4)
    rewards = torch.randn(3, 6)
    # completions sit at the right edge: rows are left-padded
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
    rewards[mask == 0] = 1e3  # rewards under padding must not leak into the returns
    out = normalized_future_returns(rewards, mask)
    assert out.shape == (3, 6)
    on = mask.bool()
    assert torch.allclose(out[on], _naive_future_returns(rewards, mask)[on], atol=1e-5)
    assert (out[:, -1] == 0).all()  # nothing follows the last token
    # hand value: row 2 has two tokens, the first one's return is the second one's reward
    assert out[2, 4].item() == pytest.approx(rewards[2, 5].item())


def test_minillm_loss_against_naive_loop():
    torch.manual_seed(5)
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    tokens = torch.randint(0, 5, (2, 4))
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    w = torch.rand(2, 4) + 0.5
    out = minillm_loss(s, t, tokens, mask, importance=w)
    log_q, log_p = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    for b in range(2):
        valid = [i for i in range(4) if mask[b, i]]
        for i in range(4):
            if not mask[b, i]:
                assert out[b, i].item() == 0.0
                continue
            rewards = [float(log_p[b, j, tokens[b, j]] - log_q[b, j, tokens[b, j]]) for j in valid if j > i]
            ret = sum(rewards) / len(rewards) if rewards else 0.0
            kl = _kl(log_q[b, i].exp(), log_p[b, i].exp())
            expected = float(w[b, i]) * kl - float(w[b, i]) * ret * float(log_q[b, i, tokens[b, i]])
            assert out[b, i].item() == pytest.approx(expected, abs=1e-5)


def test_minillm_loss_zero_when_student_equals_teacher():
    torch.manual_seed(6)
    s = torch.randn(2, 3, 5).requires_grad_(True)
    t = s.detach().clone()
    tokens = torch.randint(0, 5, (2, 3))
    mask = torch.ones(2, 3, dtype=torch.long)
    out = minillm_loss(s, t, tokens, mask)
    out.sum().backward()
    assert torch.allclose(out, torch.zeros(2, 3), atol=1e-6)  # KL term 0 and rewards 0
    assert torch.allclose(s.grad, torch.zeros_like(s), atol=1e-6)


def _two_step(later_teacher, later_student):
    """Position 0: student = teacher (no single-step pull); position 1: the given logits. Vocab 3."""
    earlier = [0.0, 0.5, -0.5]
    s = torch.tensor([[earlier, later_student]]).requires_grad_(True)  # (1, 2, 3) leaf
    t = torch.tensor([[earlier, later_teacher]])
    tokens = torch.tensor([[1, 2]])  # y_0 = 1, y_1 = 2
    return s, t, tokens, torch.ones(1, 2, dtype=torch.long)


@pytest.mark.parametrize("teacher_prefers_later_token", [True, False])
def test_minillm_long_term_gradient_follows_the_future_reward(teacher_prefers_later_token):
    high, low = [-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]  # p(y_1 = 2) high or low
    s, t, tokens, mask = _two_step(high, low) if teacher_prefers_later_token else _two_step(low, high)
    minillm_loss(s, t, tokens, mask).sum().backward()
    q0 = torch.softmax(s.detach()[0, 0], -1)
    # the return seen by y_0 is the reward of y_1 (one token follows)
    ret = (torch.log_softmax(t[0, 1], -1)[2] - torch.log_softmax(s.detach()[0, 1], -1)[2]).item()
    assert (ret > 0) == teacher_prefers_later_token
    # hand gradient at position 0: −R·∇ log q(y_0) = −R·(onehot(y_0) − q_0)
    assert torch.allclose(s.grad[0, 0], -ret * (torch.nn.functional.one_hot(torch.tensor(1), 3) - q0), atol=1e-6)
    with torch.no_grad():
        logq_y0_before = torch.log_softmax(s[0, 0], -1)[1]
        logq_y0_after = torch.log_softmax(s[0, 0] - 0.1 * s.grad[0, 0], -1)[1]
    assert (logq_y0_after > logq_y0_before) == teacher_prefers_later_token
    # the last position has no future: its gradient is the exact reverse-KL gradient (returns are detached)
    s2 = s.detach().clone().requires_grad_(True)
    reverse_kl(s2, t)[0, 1].backward()
    assert torch.allclose(s.grad[0, 1], s2.grad[0, 1], atol=1e-6)


def test_minillm_single_step_descent_reduces_reverse_kl():
    t = torch.tensor([[[2.0, 0.0, -1.0]]])
    s = torch.tensor([[[-1.0, 0.5, 2.0]]]).requires_grad_(True)  # leaf, far from the teacher
    tokens, mask, w = torch.tensor([[2]]), torch.ones(1, 1), torch.ones(1, 1)
    kls = [reverse_kl(s.detach(), t).item()]
    for _ in range(10):
        s.grad = None
        minillm_loss(s, t, tokens, mask, importance=w).sum().backward()
        with torch.no_grad():
            s -= 1.0 * s.grad
        kls.append(reverse_kl(s.detach(), t).item())
    assert all(a > b for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.5 * kls[0]


def test_minillm_importance_scales_each_position_linearly():
    torch.manual_seed(7)
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    tokens, mask = torch.randint(0, 5, (2, 4)), torch.ones(2, 4)
    base = minillm_loss(s, t, tokens, mask)
    assert torch.equal(minillm_loss(s, t, tokens, mask, importance=torch.ones(2, 4)), base)
    w = torch.tensor([[0.0, 0.5, 1.0, 2.0], [3.0, 1.5, 0.25, 1.0]])
    assert torch.allclose(minillm_loss(s, t, tokens, mask, importance=w), w * base, atol=1e-6)
    assert torch.allclose(minillm_loss(s, t, tokens, mask, importance=2 * w), 2 * w * base, atol=1e-6)


def test_minillm_padding_is_exactly_zero_and_invariant():
    torch.manual_seed(8)
    s_row, t_row = torch.randn(1, 3, 5), torch.randn(1, 3, 5)
    tok_row = torch.tensor([[4, 0, 2]])
    # the same row left-padded by two positions with garbage logits and -100 labels
    s = torch.cat([torch.randn(1, 2, 5) * 10, s_row], 1).requires_grad_(True)
    t = torch.cat([torch.randn(1, 2, 5) * 10, t_row], 1)
    tokens = torch.cat([torch.full((1, 2), -100), tok_row], 1)
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    out = minillm_loss(s, t, tokens, mask)
    out.sum().backward()
    assert torch.equal(out[:, :2], torch.zeros(1, 2))
    assert torch.equal(s.grad[:, :2], torch.zeros(1, 2, 5))
    assert torch.allclose(out[:, 2:], minillm_loss(s_row, t_row, tok_row, torch.ones(1, 3)), atol=1e-6)
