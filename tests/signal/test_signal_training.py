"""Token-level methods trained from a cached or served teacher over several optimizer steps, in `train()`.

The single-call tests (test_topk_methods.py, test_served_teacher.py) pin one loss. These run the
whole method and its schedule together: 3 optimizer steps of 2 micro-batches of one row, so the
cache lookup per row, the micro-batching and the fresh samples of each step all take part. At
k = V the cached and served signals must follow the live teacher's run step for step (losses
and final weights); at a small k the run is finite and moves the weights.
"""
import math

import pytest
import torch

from prefdistill.config.schema import LoraConfig, ModelConfig, TrainConfig, from_dict
from prefdistill.methods import get_method
from prefdistill.methods.common import teacher_side
from prefdistill.models.tiny import tiny_rows
from prefdistill.signal.topk_cache import build_topk_cache
from prefdistill.training.loop import train

CFG = TrainConfig(steps=3, batch_size=1, grad_accum=2, lr=1e-3, save_every=100, log_every=1)


def _targets():
    return [{"id": str(i), "prompt": f"Summarize : {r['document']}", "target": r["summary"]} for i, r in enumerate(tiny_rows(6, seed=3))]


def _pairs():
    return [{"id": f"{i}#0", "prompt": f"Summarize : {r['document']}", "chosen": r["summary"],
             "rejected": " ".join(r["document"].split()[:3])} for i, r in enumerate(tiny_rows(6, seed=3))]


def _run(student_path, method, rows, params, out, **extras):
    """(per-step losses, final weights) of `method` trained from the student at `student_path`."""
    from prefdistill.models.hf import LocalLM

    lm = LocalLM.load(ModelConfig(name_or_path=str(student_path)), for_training=True)
    log = train(lm, get_method(method), params, [dict(r) for r in rows], CFG, LoraConfig(enabled=False), out_dir=out,
                parent=None, seed=0, desc=method, extras=extras)
    assert len(log) == CFG.steps
    _run.last_log = log
    return [r["loss"] for r in log], {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def _assert_same_run(got, want):
    (losses, weights), (losses_want, weights_want) = got, want
    assert losses == pytest.approx(losses_want, rel=1e-4, abs=1e-6)
    # Adam moves a weight by about lr per step whatever its gradient's size, so where a gradient is
    # near 0 the signals' rounding (1e-6 relative) can move it a little differently: a tenth of lr.
    for name, w in weights_want.items():
        assert torch.allclose(weights[name], w, rtol=0, atol=0.1 * CFG.lr), name
    assert sum((weights[n] - w).abs().sum() for n, w in weights_want.items()) < 1e-3 * CFG.lr * sum(w.numel() for w in weights_want.values())


def _moved(run, start_path):
    from prefdistill.models.hf import LocalLM

    start = dict(LocalLM.load(ModelConfig(name_or_path=str(start_path))).model.named_parameters())
    losses, weights = run
    return all(math.isfinite(x) for x in losses) and any(not torch.equal(w, start[n].detach()) for n, w in weights.items())


# ----------------------------------------------------------------------------- from a cache
TOPK_CASES = {
    "kd": (_targets, {"temperature": 1.5}),
    "distillm": (_targets, {"alpha": 0.1}),
    "gkd": (_pairs, {"beta": 0.5, "on_policy_fraction": 0.0}),
    "fdistill": (_pairs, {"divergence": "tv", "student_prefixes": False}),
}


@pytest.fixture(scope="module")
def teacher(tiny_assets):
    from prefdistill.models.hf import LocalLM

    return LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))


@pytest.mark.parametrize("method", sorted(TOPK_CASES))
def test_training_from_a_cache_follows_the_live_teacher_step_for_step(method, tiny_assets, teacher, tmp_path):
    from prefdistill.models.hf import LocalLM

    make_rows, given = TOPK_CASES[method]
    spec, rows = get_method(method), make_rows()
    tokenizer = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"]))).tokenizer
    vocab = len(tokenizer)
    live = _run(tiny_assets["student"], method, rows, from_dict(spec.params_cls, given), tmp_path / "live", teacher=teacher)
    for k in (vocab, 3):
        params = from_dict(spec.params_cls, {**given, "signal": "topk", "k": k, "topk_dtype": "float32"})
        cached = [dict(r) for r in rows]
        cache = build_topk_cache(teacher, cached, k, tmp_path / f"k{k}.bin", tokenizer=tokenizer, teacher_id="t",
                                 temperature=params.temperature, dtype="float32",
                                 text_key="target" if spec.consumes == "targets" else teacher_side)
        run = _run(tiny_assets["student"], method, cached, params, tmp_path / f"topk{k}", teacher_topk=cache)  # no teacher
        if k == vocab:
            _assert_same_run(run, live)
        else:
            assert _moved(run, tiny_assets["student"])


# ----------------------------------------------------------------------------- from a server
@pytest.fixture(scope="module")
def served_student(tiny_assets, counting, tmp_path_factory):
    """The tiny student grown to the counting teacher's vocabulary, saved (each run starts from it)."""
    from prefdistill.models.hf import LocalLM

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    torch.manual_seed(0)
    lm.model.resize_token_embeddings(len(counting.tokenizer))
    path = tmp_path_factory.mktemp("signal_student")
    lm.model.save_pretrained(path)
    counting.tokenizer.save_pretrained(path)
    return path


SERVED_CASES = {
    "gkd": {"beta": 0.5, "on_policy_fraction": 0.5, "max_new_tokens": 5},  # the coin picks on- or off-policy per step
    "minillm": {"mix_weight": 0.0, "max_new_tokens": 5},
}


@pytest.mark.parametrize("method", sorted(SERVED_CASES))
def test_training_from_a_served_teacher_follows_the_live_teacher_step_for_step(method, counting, served_student, tmp_path):
    from servers import LogitServer, api_lm

    spec, rows, given = get_method(method), _pairs(), SERVED_CASES[method]
    live = _run(served_student, method, rows, from_dict(spec.params_cls, given), tmp_path / "live", teacher=counting)
    if method == "gkd":  # the seed's coins gave both kinds of micro-batch, so both paths ran with the server
        assert 0 < sum(r["on_policy"] for r in _run.last_log) < CFG.steps
    vocab = len(counting.tokenizer)
    with LogitServer(counting) as server:
        teacher = api_lm(server.url, max_concurrency=2)
        served = _run(served_student, method, rows, from_dict(spec.params_cls, {**given, "signal": "served", "k": vocab}),
                      tmp_path / "served", served_teacher=teacher)
        small = _run(served_student, method, rows, from_dict(spec.params_cls, {**given, "signal": "served", "k": 3}),
                     tmp_path / "small", served_teacher=teacher)
        asked = len(server.payloads)
    _assert_same_run(served, live)
    assert _moved(small, served_student)
    assert asked > 1  # the server scored during training (after its probe)
