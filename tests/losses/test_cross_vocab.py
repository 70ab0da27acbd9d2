"""shared_outcomes: two vocabularies' next-token distributions on their shared tokens and a rest outcome, against closed
forms and naive loops; exactly the same-vocabulary divergences when every token is shared."""
import pytest
import torch
import torch.nn.functional as F

from prefdistill.losses import (generalized_jsd_from_log_probs, js_from_log_probs, kl_from_log_probs, log_probs_pair,
                                shared_outcomes, skew_forward_kl_from_log_probs, skew_reverse_kl_from_log_probs,
                                total_variation_from_log_probs)

DIVERGENCES = {  # (log q, log p) -> (...), as the methods call them
    "forward_kl": lambda q, p: kl_from_log_probs(p, q),
    "reverse_kl": kl_from_log_probs,
    "jsd_0.3": lambda q, p: generalized_jsd_from_log_probs(q, p, beta=0.3),
    "tv": total_variation_from_log_probs,
    "js": js_from_log_probs,
    "skew_forward": lambda q, p: skew_forward_kl_from_log_probs(q, p, alpha=0.1),
    "skew_reverse": lambda q, p: skew_reverse_kl_from_log_probs(q, p, alpha=0.1),
}


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_one_vocabulary_is_the_same_divergence_exactly(name, temperature):
    s = _logits(2, 5, 11, seed=1).float().requires_grad_(True)
    t = _logits(2, 5, 11, seed=2).float()
    ids = torch.arange(11)
    div = DIVERGENCES[name]
    cross = div(*shared_outcomes(s, t, ids, ids, temperature=temperature))
    same = div(*log_probs_pair(s, t, temperature))
    assert torch.equal(cross, same)
    (g_cross,) = torch.autograd.grad(cross.sum(), s)
    (g_same,) = torch.autograd.grad(same.sum(), s)
    assert torch.equal(g_cross, g_same)


def test_images_by_a_naive_loop():
    s, t = _logits(3, 6, seed=3), _logits(3, 9, seed=4)  # V_s 6, V_t 9
    s_ids, t_ids = torch.tensor([0, 2, 5]), torch.tensor([7, 1, 3])  # student 0 ~ teacher 7, 2 ~ 1, 5 ~ 3
    log_q, log_p = shared_outcomes(s, t, s_ids, t_ids)
    q, p = F.softmax(s, -1), F.softmax(t, -1)
    for n in range(3):
        want_q = [q[n, 0], q[n, 2], q[n, 5], q[n, 1] + q[n, 3] + q[n, 4]]
        want_p = [p[n, 7], p[n, 1], p[n, 3], sum(p[n, v] for v in (0, 2, 4, 5, 6, 8))]
        assert torch.allclose(log_q[n].exp(), torch.stack(want_q), atol=1e-6)
        assert torch.allclose(log_p[n].exp(), torch.stack(want_p), atol=1e-6)
    assert torch.allclose(log_q.exp().sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-6)


def test_a_permuted_vocabulary_is_compared_exactly():
    """A teacher whose vocabulary is the student's under other ids (every token shared): the divergence is the
    same-vocabulary one of the teacher's logits put back in the student's order."""
    s, t = _logits(4, 8, seed=5), _logits(4, 8, seed=6)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))  # teacher id of student token v: perm[v]
    log_q, log_p = shared_outcomes(s, t, torch.arange(8), perm)
    assert log_q.shape[-1] == 8  # no rest when both sides are all shared
    same = kl_from_log_probs(*reversed(log_probs_pair(s, t[:, perm], 1.0)))
    assert torch.allclose(kl_from_log_probs(log_p, log_q).float(), same, atol=1e-6)


def test_rest_outcome_of_a_side_with_all_tokens_shared_has_no_mass():
    s, t = _logits(2, 4, seed=7), _logits(2, 6, seed=8)
    log_q, log_p = shared_outcomes(s, t, torch.arange(4), torch.tensor([5, 4, 3, 2]))
    assert torch.isneginf(log_q[:, -1]).all() and (log_p[:, -1] > -torch.inf).all()
    assert torch.isinf(kl_from_log_probs(log_p, log_q)).all()  # the teacher's mass on tokens the student lacks
    assert torch.isfinite(kl_from_log_probs(log_q, log_p)).all()  # the reverse direction does not read it


def test_gradients_reach_the_student_only_and_point_to_the_teacher():
    s = _logits(1, 5, seed=9).float().requires_grad_(True)
    t = _logits(1, 7, seed=10).float().requires_grad_(True)
    s_ids, t_ids = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    log_q, log_p = shared_outcomes(s, t, s_ids, t_ids)
    assert not log_p.requires_grad
    kl = kl_from_log_probs(log_p, log_q).sum()
    kl.backward()
    assert t.grad is None and s.grad is not None
    with torch.no_grad():  # a small step against the gradient lowers the divergence
        stepped = s - 0.1 * s.grad
        assert kl_from_log_probs(*reversed(shared_outcomes(stepped, t, s_ids, t_ids))).sum() < kl
    assert torch.allclose(s.grad.sum(-1), torch.zeros(1), atol=1e-6)  # softmax: gradients sum to 0 over the logits


def test_equal_images_have_zero_divergence():
    # the student puts the teacher's shared probabilities on the same tokens and the same rest mass, spread otherwise
    p = torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.1]])  # teacher: shared ids 0, 1; rest 0.3 over 3 tokens
    q = torch.tensor([[0.5, 0.2, 0.3]])  # student: shared ids 0, 1; rest 0.3 on one token
    log_q, log_p = shared_outcomes(q.log(), p.log(), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert torch.allclose(kl_from_log_probs(log_p, log_q), torch.zeros(1), atol=1e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="leading"):
        shared_outcomes(torch.zeros(2, 3), torch.zeros(3, 3), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="two \\(M,\\) lists"):
        shared_outcomes(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="temperature"):
        shared_outcomes(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0]), torch.tensor([0]), temperature=0.0)
