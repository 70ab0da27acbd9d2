"""The cached and served top-k signals with the LM head and the coarsened divergences in chunks of positions equal the
whole batch's path (logits_chunk 0), values and gradients.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/signal/test_chunked_signals.py
"""
import pytest
import torch

from prefdistill.config.schema import from_dict
from prefdistill.methods import get_method
from prefdistill.methods.common import teacher_side
from prefdistill.models.tiny import tiny_rows
from prefdistill.signal.topk_cache import build_topk_cache
from servers import LogitServer, api_lm

CHUNKS = [1, 4]


def _pair_rows(n):
    return [{"id": f"{i}#0", "prompt": f"Summarize : {r['document']}", "chosen": r["summary"],
             "rejected": " ".join(r["document"].split()[:2 + i])} for i, r in enumerate(tiny_rows(n, seed=5))]


def _loss_and_grads(method, lm, rows, params, chunk, **extras):
    lm.logits_chunk = chunk
    lm.model.zero_grad()
    torch.manual_seed(0)
    loss, stats = get_method(method).loss(lm, rows, params, **extras)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}


def _assert_chunks_agree(method, lm, rows, params, **extras):
    want_loss, want = _loss_and_grads(method, lm, rows, params, 0, **extras)
    assert want
    for chunk in CHUNKS:
        loss, grads = _loss_and_grads(method, lm, rows, params, chunk, **extras)
        torch.testing.assert_close(loss, want_loss, atol=1e-5, rtol=1e-5)
        assert grads.keys() == want.keys()
        for name, g in want.items():
            torch.testing.assert_close(grads[name], g, atol=1e-5, rtol=1e-4, msg=lambda m: f"chunk {chunk}, {name}: {m}")


@pytest.mark.parametrize("method, given", [("kd", {"ce_weight": 0.5, "temperature": 1.5}), ("gkd", {"on_policy_fraction": 0.0}),
                                           ("distillm", {"divergence": "skew_reverse"}), ("fdistill", {"student_prefixes": False})])
@pytest.mark.parametrize("k", [3, "V"])
def test_a_cached_topk_in_chunks(method, given, k, counting, student, tmp_path):
    spec, rows = get_method(method), _pair_rows(3)
    if spec.consumes == "targets":
        rows = [{"prompt": r["prompt"], "target": r["chosen"]} for r in rows]
    k = len(student.tokenizer) if k == "V" else k
    params = from_dict(spec.params_cls, {**given, "signal": "topk", "k": k, "topk_dtype": "float32"})
    cached = [dict(r) for r in rows]
    cache = build_topk_cache(counting, cached, k, tmp_path / "c.bin", tokenizer=student.tokenizer, teacher_id="t",
                             temperature=params.temperature, dtype="float32",
                             text_key="target" if spec.consumes == "targets" else teacher_side)
    _assert_chunks_agree(method, student, cached, params, teacher_topk=cache)


@pytest.mark.parametrize("method, given", [("gkd", {"on_policy_fraction": 1.0, "max_new_tokens": 5}),
                                           ("minillm", {"mix_weight": 0.0, "max_new_tokens": 5})])
def test_a_served_topk_in_chunks(method, given, counting, student):
    spec, rows = get_method(method), _pair_rows(3)
    params = from_dict(spec.params_cls, {**given, "signal": "served", "k": 3})
    _assert_chunks_agree(method, student, rows, params, served_teacher=counting)  # a local model as the served teacher
    with LogitServer(counting) as server:
        _assert_chunks_agree(method, student, rows, params, served_teacher=api_lm(server.url, max_concurrency=2))
