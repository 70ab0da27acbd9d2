"""On-policy methods with a served teacher (signal: served): its top-k over HTTP at every step, never in training memory.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/signal/test_served_teacher.py

The teacher is conftest's `counting` model (it passes the echo probe), served by the in-process
stand-in `servers.LogitServer`; the student is the tiny student grown to the same vocabulary.
"""
import math

import pytest
import torch

from prefdistill.methods import ResolvedMethod, resolve_method
from prefdistill.errors import ConfigError
from prefdistill.methods import get_method
from prefdistill.methods.gkd import GKDParams
from prefdistill.methods.minillm import MiniLLMParams
from prefdistill.models.api_topk import completion_pieces
from prefdistill.models.common import plain_prompt
from prefdistill.models.rollout import rollout
from prefdistill.models.tiny import tiny_rows
from servers import LogitServer, api_lm
from prefdistill.run.artifacts import Artifacts
from prefdistill.run.train_job import train_job
from prefdistill.training.job import TrainingData, TrainJob


def _pair_rows(n):
    return [{"id": f"{i}#0", "prompt": f"Summarize : {r['document']}", "chosen": r["summary"],
             "rejected": " ".join(r["document"].split()[:3])} for i, r in enumerate(tiny_rows(n, seed=5))]


def _loss_and_grads(method, lm, rows, params, **extras):
    lm.model.zero_grad()
    torch.manual_seed(0)  # the same coin and the same fresh student samples for every signal
    loss, stats = get_method(method).loss(lm, rows, params, **extras)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}, stats


def _assert_same(got, want):
    (loss, grads, _), (loss_want, grads_want, _) = got, want
    assert loss == pytest.approx(loss_want, rel=1e-5, abs=1e-6)
    assert grads.keys() == grads_want.keys() and grads
    for name, g in grads_want.items():
        assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6), name


# ----------------------------------------------------------------------------- (a) GKD on-policy, (b) MiniLLM
def test_gkd_on_policy_from_a_served_teacher_equals_live_at_k_equal_v_and_bounds_it_below(counting, student):
    rows, vocab, given = _pair_rows(3), len(student.tokenizer), {"on_policy_fraction": 1.0, "beta": 0.5, "max_new_tokens": 6}
    live = _loss_and_grads("gkd", student, rows, GKDParams(**given), teacher=counting)
    local = _loss_and_grads("gkd", student, rows, GKDParams(signal="served", k=vocab, **given), served_teacher=counting)
    _assert_same(local, live)  # an hf teacher as the served one: its top-k taken from its logits
    with LogitServer(counting) as server:
        teacher = api_lm(server.url, max_concurrency=2)
        served = _loss_and_grads("gkd", student, rows, GKDParams(signal="served", k=vocab, **given), served_teacher=teacher)
        small = _loss_and_grads("gkd", student, rows, GKDParams(signal="served", k=3, **given), served_teacher=teacher)
    _assert_same(served, live)
    assert served[2]["on_policy"] == 1.0 and served[2]["topk_teacher_mass"] == pytest.approx(1.0, abs=1e-5)
    assert math.isfinite(small[0]) and small[0] <= live[0] + 1e-6 and 0 < small[2]["topk_teacher_mass"] < 1
    # The server scored the student's fresh samples, the same ones the live teacher scored: redraw them with the seed.
    torch.manual_seed(0)
    torch.rand(())  # GKD's coin
    sampled = rollout(student, [r["prompt"] for r in rows], max_new_tokens=6)
    asked = server.payloads[2:]  # after the probe's two echoes
    sent = [plain_prompt(r["prompt"]) + completion_pieces(student.tokenizer, ids)[0] for r, ids in zip(rows, sampled.completions)]
    assert len(asked) == 6 and sorted(p["prompt"] for p in asked[:3]) == sorted(sent) == sorted(p["prompt"] for p in asked[3:])
    assert all(p["echo"] and p["logprobs"] == vocab for p in asked[:3]) and all(p["logprobs"] == 3 for p in asked[3:])


def test_minillm_from_a_served_teacher_equals_live_without_mixing(counting, student):
    rows, vocab = _pair_rows(3), len(student.tokenizer)
    live = _loss_and_grads("minillm", student, rows, MiniLLMParams(mix_weight=0.0, max_new_tokens=6), teacher=counting)
    with LogitServer(counting) as server:
        teacher = api_lm(server.url, max_concurrency=2)
        served = _loss_and_grads("minillm", student, rows, MiniLLMParams(signal="served", k=vocab, mix_weight=0.0, max_new_tokens=6),
                                 served_teacher=teacher)
        small = _loss_and_grads("minillm", student, rows, MiniLLMParams(signal="served", k=3, mix_weight=0.0, max_new_tokens=6),
                                served_teacher=teacher)
    _assert_same(served, live)
    assert served[2]["mean_reward"] == pytest.approx(live[2]["mean_reward"], rel=1e-5, abs=1e-6)  # the per-token rewards
    assert math.isfinite(small[0]) and all(torch.isfinite(g).all() for g in small[1].values())
    assert small[2]["mean_reward"] == pytest.approx(live[2]["mean_reward"], rel=1e-5, abs=1e-6)  # exact outside the top-k too


# ----------------------------------------------------------------------------- (c), (e) the pipeline
@pytest.fixture(scope="module")
def student_dir(student, tmp_path_factory):
    path = tmp_path_factory.mktemp("served_student")
    student.model.save_pretrained(path)
    student.tokenizer.save_pretrained(path)
    return path


def _config(tiny_assets, tmp_path, method="gkd", params=None, *, url="http://127.0.0.1:9/v1", student=None):
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path)
    raw["teacher"] = {"name_or_path": "teacher", "backend": "openai", "api": {"base_url": url, "max_retries": 1}}
    if student is not None:
        raw["student"] = {"name_or_path": str(student)}
    raw["sft"] = {"teacher": {**raw["sft"]["teacher"], "enabled": False}, "student": {**raw["sft"]["student"], "enabled": False}}
    raw["distill"] = {**raw["distill"], "method": method,
                      "params": {"signal": "served", "k": 5, "on_policy_fraction": 1.0, "max_new_tokens": 4} if params is None else params}
    return raw


def _pipeline(raw, monkeypatch):
    """The pipeline of `raw`, its loads recorded; transformers may load the student only."""
    from prefdistill.config.checks import load_config
    from prefdistill.models.hf import LocalLM
    from prefdistill.run.pipeline import Pipeline

    pipe, loaded, student_path = Pipeline(load_config(raw)).artifacts, [], raw["student"]["name_or_path"]
    load_local = LocalLM.load.__func__

    def only_the_student(cls, cfg, **kw):
        assert cfg.name_or_path == student_path, f"{cfg.name_or_path} was loaded through transformers"
        return load_local(cls, cfg, **kw)

    monkeypatch.setattr(LocalLM, "load", classmethod(only_the_student))

    def load(role, *a, **k):
        model = Artifacts.load(pipe, role, *a, **k)
        loaded.append((role, type(model).__name__))
        return model

    pipe.load = load
    return pipe, loaded


def test_served_training_never_holds_the_teacher(tiny_assets, tmp_path, counting, student_dir, monkeypatch):
    with LogitServer(counting) as server:
        pipe, loaded = _pipeline(_config(tiny_assets, tmp_path, url=server.url + "/v1", student=student_dir), monkeypatch)
        spec, params = get_method("gkd"), GKDParams(signal="served", k=5, on_policy_fraction=1.0, max_new_tokens=4)
        log = train_job(TrainJob(ResolvedMethod.of(spec, params), TrainingData(_pair_rows(4)), pipe.cfg.distill.train, tmp_path / "ckpt", seed=0), pipe).log
    assert loaded == [("teacher", "APILM"), ("student", "LocalLM")]
    assert len(log) == 2 and all(math.isfinite(r["loss"]) and r["on_policy"] == 1.0 for r in log)
    assert sum(r["tokens_teacher_scored"] for r in log) > 0
    assert len(server.payloads) == 2 + 2 * 2  # the probe's two echoes, then one per fresh sample (2 steps of 2 rows)


def test_a_shifted_echo_is_refused_with_the_probes_reason_before_any_step(tiny_assets, tmp_path, counting, student_dir,
                                                                         monkeypatch):
    with LogitServer(counting, shift_echo=True) as server:
        pipe, loaded = _pipeline(_config(tiny_assets, tmp_path, url=server.url + "/v1", student=student_dir), monkeypatch)
        spec, params = get_method("gkd"), GKDParams(signal="served", k=5, on_policy_fraction=1.0, max_new_tokens=4)
        with pytest.raises(ValueError) as err:
            train_job(TrainJob(ResolvedMethod.of(spec, params), TrainingData(_pair_rows(4)), pipe.cfg.distill.train, tmp_path / "ckpt", seed=0), pipe).log
    assert "sanity check" in str(err.value) and "shifts echoed log-probs" in str(err.value)
    assert loaded == [("teacher", "APILM")] and len(server.payloads) == 1  # the probe; the student never loaded
    assert not list(tmp_path.glob("ckpt*"))  # no step, no state


def test_the_pipeline_builds_a_topk_cache_from_a_server(tiny_assets, tmp_path, counting, student_dir, monkeypatch):
    """signal: topk with teacher.backend: openai: the cache comes from the server's echo, and training runs without it."""
    from prefdistill.methods import method_params

    with LogitServer(counting) as server:
        raw = _config(tiny_assets, tmp_path, "kd", {"signal": "topk", "k": 4}, url=server.url + "/v1", student=student_dir)
        pipe, loaded = _pipeline(raw, monkeypatch)
        spec, params = get_method("kd"), method_params(pipe.cfg)
        data = pipe.training_data(ResolvedMethod.of(spec, params))
        rows, asked = data.rows, len(server.payloads)
        log = train_job(TrainJob(ResolvedMethod.of(spec, params), data, pipe.cfg.distill.train, tmp_path / "ckpt", seed=0), pipe).log
    assert asked == 2 + len(rows) == len(server.payloads)  # the probe's two echoes, one per row; none during training
    assert loaded == [("teacher", "APILM"), ("student", "LocalLM")]
    assert len(log) == 2 and all(math.isfinite(r["loss"]) and 0 < r["topk_teacher_mass"] <= 1 for r in log)


# ----------------------------------------------------------------------------- (d) config refusals
@pytest.mark.parametrize("method, params, message", [
    ("minillm", {"signal": "served"}, r"distill.params.mix_weight: 0.2 samples from the teacher-mixed policy.*set mix_weight: 0"),
    ("minillm", {"signal": "topk"}, r"minillm takes live or served, not topk.*\(signal: topk\): distillm, fdistill, gkd, kd$"),
    ("gkd", {}, r"gkd reads the teacher's next-token distributions.*set distill.params.signal: served \(a server that returns "
                r"top-k log-probs of given text.*or signal: topk \(a cache"),
    ("minillm", {}, r"minillm reads .*set distill.params.signal: served \(a server[^.]*\)\. Methods that need only its text"),
    ("dpkd", {"mode": "token_argmax"}, r"dpkd reads .*in the training loop\. Methods that need only its text"),
    ("kd", {"signal": "served", "temperature": 2.0}, r"distill.params.temperature: 2 with signal: served.*set temperature: 1"),
])
def test_what_a_served_teacher_cannot_do_is_refused_when_the_config_loads(tiny_assets, tmp_path, method, params, message):
    from prefdistill.config.checks import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(_config(tiny_assets, tmp_path, method, params))


def test_served_and_cached_signals_accept_a_teacher_behind_an_api(tiny_assets, tmp_path):
    from prefdistill.config.checks import load_config
    from prefdistill.methods import method_params

    for method, params, need in (("gkd", None, "served_teacher"), ("minillm", {"signal": "served", "mix_weight": 0.0}, "served_teacher"),
                                 ("kd", {"signal": "topk"}, "teacher_topk")):
        needs = method_params(load_config(_config(tiny_assets, tmp_path, method, params))).requirements()[1]
        assert need in needs and "teacher" not in needs
