"""chunked_positions equals the whole batch's logits path, values and gradients, for every per-position function
(log_probs_pair works in float32, hence the tolerances)."""
import functools

import pytest
import torch

from prefdistill.losses import (LMHead, chunked_positions, coarsen, generalized_jsd_from_log_probs, js_from_log_probs,
                                kl_from_log_probs, log_probs_pair, skew_forward_kl_from_log_probs, skew_reverse_kl_from_log_probs,
                                token_argmax_dpkd_loss, total_variation_from_log_probs)
from prefdistill.models.logprobs import per_token_logps

B, C, H, V_OUT, VOCAB = 3, 5, 8, 13, 11  # an output layer padded past the tokens

DIVERGENCES = {  # (log q, log p) -> (B, C)
    "forward_kl": lambda q, p: kl_from_log_probs(p, q),
    "reverse_kl": kl_from_log_probs,
    "skew_forward": functools.partial(skew_forward_kl_from_log_probs, alpha=0.1),
    "skew_reverse": functools.partial(skew_reverse_kl_from_log_probs, alpha=0.2),
    "jsd_0.5": functools.partial(generalized_jsd_from_log_probs, beta=0.5),
    "jsd_0.9": functools.partial(generalized_jsd_from_log_probs, beta=0.9),
    "tv": total_variation_from_log_probs,
    "js": js_from_log_probs,
}


def _setup(seed=0, softcap=None):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, C, H, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V_OUT, H, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(V_OUT, generator=g, dtype=torch.float64, requires_grad=True)
    t_hidden = torch.randn(B, C, H, generator=g, dtype=torch.float64)
    t_weight = torch.randn(V_OUT, H, generator=g, dtype=torch.float64)
    labels = torch.randint(0, VOCAB, (B, C), generator=g)
    labels[0, :2] = -100  # a left-padded row
    head = LMHead(weight, bias, VOCAB, softcap)
    return hidden, head, t_hidden, LMHead(t_weight, None, VOCAB, softcap), labels


def _grads(out, mask, leaves):
    loss = (out * mask).sum()
    return [g.clone() for g in torch.autograd.grad(loss, leaves)]


def _both(fn, *, teacher=True, aligned=(), chunk, softcap=None, active=True):
    hidden, head, t_hidden, t_head, labels = _setup(softcap=softcap)
    mask = labels != -100
    aligned = tuple(a(labels) for a in aligned)
    leaves = [hidden, head.weight, head.bias]
    # The whole batch's logits, as the model computes them, and the function once over them.
    logits = head(hidden)
    t_logits = t_head(t_hidden) if teacher else None
    want = fn(logits, t_logits, *aligned)
    want = want if isinstance(want, tuple) else (want,)
    got = chunked_positions(fn, (hidden, head), teacher=(t_hidden, t_head) if teacher else None, aligned=aligned, chunk=chunk,
                            active=mask if active else None)
    for w, g in zip(want, got):
        torch.testing.assert_close(g * mask, w * mask, atol=1e-6, rtol=1e-5)
        if w.requires_grad:
            for gw, gg in zip(_grads(w, mask, leaves), _grads(g, mask, leaves)):
                torch.testing.assert_close(gg, gw, atol=1e-6, rtol=1e-5)
    return got


@pytest.mark.parametrize("chunk", [1, 4, 15, 100])
@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_every_divergence_in_chunks_equals_the_whole_batch(name, chunk):
    div = DIVERGENCES[name]
    _both(lambda s, t: div(*log_probs_pair(s, t, 1.5)), chunk=chunk)


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_cross_entropy_and_several_outputs_in_chunks(chunk):
    fn = lambda s, _, y: (per_token_logps(s, y), s.argmax(-1).float())  # noqa: E731
    _both(fn, teacher=False, aligned=(lambda y: y,), chunk=chunk)
    _both(fn, teacher=False, aligned=(lambda y: y,), chunk=chunk, active=False)


@pytest.mark.parametrize("chunk", [1, 6])
def test_the_topk_coarsening_and_token_argmax_in_chunks(chunk):
    g = torch.Generator().manual_seed(1)
    ids = torch.stack([torch.randperm(VOCAB, generator=g)[:4] for _ in range(B * C)]).view(B, C, 4)
    logps = torch.log_softmax(torch.randn(B, C, VOCAB, generator=g, dtype=torch.float64), -1).gather(-1, ids)
    logps[1, 2, -1] = float("-inf")  # a padded slot
    fn = lambda s, _, i, lp: generalized_jsd_from_log_probs(*reversed(coarsen(s, i, lp)), beta=0.5)  # noqa: E731
    _both(fn, teacher=False, aligned=(lambda y: ids, lambda y: logps), chunk=chunk)
    _both(lambda s, t: token_argmax_dpkd_loss(s, t, beta=0.1), chunk=chunk)


def test_softcapping_and_the_vocabulary_cut():
    hidden, head, *_ = _setup(softcap=2.0)
    logits = head(hidden)
    assert logits.shape[-1] == VOCAB and logits.abs().max() < 2.0
    plain = hidden @ head.weight[:VOCAB].T + head.bias[:VOCAB]
    torch.testing.assert_close(logits, torch.tanh(plain / 2.0) * 2.0)
    _both(lambda s, t: kl_from_log_probs(*log_probs_pair(s, t, 1.0)), chunk=4, softcap=2.0)


def test_chunk_zero_is_one_call_on_the_whole_batch_and_no_active_position_keeps_a_graph():
    hidden, head, _, _, labels = _setup()
    calls = []

    def fn(s, _):
        calls.append(s.shape)
        return s.logsumexp(-1)

    chunked_positions(fn, (hidden, head), chunk=0)
    assert calls == [(B, C, VOCAB)]
    calls.clear()
    chunked_positions(fn, (hidden, head), chunk=4)
    assert [c[1] for c in calls] == [4, 4, 4, 3] and all(c[0] == 1 for c in calls)
    out, = chunked_positions(fn, (hidden, head), chunk=4, active=torch.zeros(B, C, dtype=torch.bool))
    assert out.shape == (B, C) and not out.any()
    out.sum().backward()  # nothing active: zero gradients, no error
    assert not hidden.grad.any()


def test_the_backward_pass_recomputes_each_chunk_instead_of_keeping_its_logits():
    hidden, head, *_ = _setup()
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, = chunked_positions(lambda s, _: s.logsumexp(-1), (hidden, head), chunk=2)
    assert shapes and not [s for s in shapes if s and s[-1] == VOCAB]  # no logits kept for the backward pass, not even a chunk's
    out.sum().backward()
    assert hidden.grad is not None and head.weight.grad is not None


def test_positions_that_fit_in_one_chunk_run_once_and_are_not_recomputed():
    hidden, head, *_ = _setup()
    calls = []

    def fn(s, _):
        calls.append(s.shape[1])
        return s.logsumexp(-1)

    out, = chunked_positions(fn, (hidden, head), chunk=B * C)  # every position in one chunk
    out.sum().backward()
    assert calls == [B * C]  # the forward's call only: no recomputation in the backward pass
    want = head(hidden.detach()).logsumexp(-1)
    torch.testing.assert_close(out, want)
    calls.clear()
    out, = chunked_positions(fn, (hidden, head), chunk=B * C - 1)
    out.sum().backward()
    assert sorted(calls) == [1, 1, B * C - 1, B * C - 1]  # two chunks, each recomputed once
