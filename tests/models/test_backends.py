"""Backends declare what they can do (`Capabilities`); config checks, the method registry and the pipeline read that."""
import dataclasses
import typing
from types import SimpleNamespace

import pytest

from prefdistill.config.schema import ModelConfig
from prefdistill.errors import ConfigError
from prefdistill.methods.registry import check_teacher_signal, get_method
from prefdistill.models.backends import (BACKENDS, Capabilities, backends_with, capabilities, get_backend, load_model, loaded_as,
                                         register_backend, serving, topk_source)


def test_each_backends_table():
    from prefdistill.models.vllm_backend import PROMPTS_PER_CALL, VLLM_MAX_LOGPROBS

    hf, vllm, api = capabilities("hf"), capabilities("vllm"), capabilities("openai")
    assert hf.in_loop and hf.trainable and hf.temperature_any and hf.topk and hf.max_logprobs is None and hf.local
    assert not vllm.in_loop and not vllm.trainable and vllm.stand_in == "hf" and vllm.topk and not vllm.temperature_any
    assert vllm.max_logprobs == VLLM_MAX_LOGPROBS and vllm.prompts_per_call == PROMPTS_PER_CALL and vllm.local
    assert api.echo and not api.local and not api.in_loop and not api.trainable and api.stand_in is None
    assert all(capabilities(n).generate for n in BACKENDS)


def test_the_schema_offers_exactly_the_registered_backends():
    choices = typing.get_args(typing.get_type_hints(ModelConfig)["backend"])
    assert set(choices) == set(BACKENDS)


def test_loaded_models_agree_with_their_declared_table():
    from prefdistill.models.api import APILM
    from prefdistill.models.api_client import APIClient
    from prefdistill.models.hf import LocalLM
    from prefdistill.models.vllm_backend import VLLMLM

    assert LocalLM.can_score is capabilities("hf").can_score is True
    assert VLLMLM.can_score is capabilities("vllm").can_score is True
    # A backend that gives the top-k of given text itself has `completion_topk`; one in the loop gives logits.
    assert hasattr(VLLMLM, "completion_topk") and hasattr(APILM, "completion_topk")
    assert hasattr(LocalLM, "completion_logits")
    # A server may give less than its backend declares (scores only where its echo works), never more.
    off = APILM(APIClient("http://127.0.0.1:9/v1"), "m", logprobs="off")
    assert capabilities("openai").can_score and off.can_score is False and off.score_unavailable == "api.logprobs is off"


def test_the_backend_that_loads_weights_where_logits_or_training_are_needed():
    assert serving("hf", "in_loop") == "hf" and serving("vllm", "in_loop") == "hf" and serving("openai", "in_loop") is None
    assert backends_with("trainable") == ["hf", "vllm"] and "openai" in backends_with("topk")
    vllm = ModelConfig(name_or_path="m", backend="vllm")
    assert loaded_as(vllm, in_loop=True).backend == "hf" and loaded_as(vllm, for_training=True).backend == "hf"
    assert loaded_as(vllm).backend == "vllm"
    api = ModelConfig(name_or_path="m", backend="openai")
    assert loaded_as(api, in_loop=True) is api  # nothing stands in: the checks refuse it before


def test_topk_source_reads_k_temperature_and_the_stand_in():
    assert topk_source("vllm", 20, 1.0, served=True) == "vllm"
    assert topk_source("vllm", 21, 1.0, served=True) is None and topk_source("vllm", 21, 1.0, served=False) == "hf"
    assert topk_source("vllm", 5, 2.0, served=False) == "hf" and topk_source("vllm", 5, 2.0, served=True) is None
    assert topk_source("openai", 50, 1.0, served=True) == "openai" and topk_source("openai", 5, 2.0, served=False) is None
    assert topk_source("hf", 1000, 0.5, served=True) == "hf"


def test_unknown_and_duplicate_backends_are_refused():
    with pytest.raises(ValueError, match="unknown model backend 'telepathy'; available: hf, vllm, openai"):
        get_backend("telepathy")
    with pytest.raises(ValueError, match="twice"):
        register_backend("hf", Capabilities(), lambda cfg, **k: None)


@pytest.fixture
def fake_backend():
    """Register a backend for one test: fake_backend(capabilities, **registration) -> its name."""
    names = []

    def make(caps: Capabilities, **kwargs) -> str:
        name = f"fake{len(names)}"
        register_backend(name, caps, kwargs.pop("load", lambda cfg, **k: SimpleNamespace(name=cfg.name_or_path)), **kwargs)
        names.append(name)
        return name

    yield make
    for name in names:
        BACKENDS.pop(name)


def _teacher_cfg(backend: str):
    return SimpleNamespace(teacher=SimpleNamespace(backend=backend))


def _params(method: str, **values):
    return get_method(method).params_cls(**values)


def test_a_backend_with_no_topk_is_refused_for_signal_topk_naming_the_capability(fake_backend):
    name = fake_backend(Capabilities(can_score=True, topk=False, local=False))
    for signal, served in (("topk", False), ("served", True)):
        with pytest.raises(ConfigError, match=rf"signal: {signal}, but a teacher on backend {name} gives no top-k.*topk false"):
            check_teacher_signal(_teacher_cfg(name), _params("kd", signal=signal), served)


def test_a_backend_without_topk_is_served_by_a_stand_in_for_a_cache_only(fake_backend):
    name = fake_backend(Capabilities(topk=False, stand_in="hf"))
    check_teacher_signal(_teacher_cfg(name), _params("kd", signal="topk", k=50), served=False)  # the stand-in gives it
    with pytest.raises(ConfigError, match="topk false"):
        check_teacher_signal(_teacher_cfg(name), _params("kd", signal="served"), served=True)


def test_a_backends_max_logprobs_and_temperature_are_read_from_its_table(fake_backend):
    name = fake_backend(Capabilities(topk=True, max_logprobs=5, local=False), describe="a small server")
    check_teacher_signal(_teacher_cfg(name), _params("kd", signal="served", k=5), served=True)
    with pytest.raises(ConfigError, match=r"distill.params.k: 6 with signal: served, but a small server gives at most 5 log-probs"):
        check_teacher_signal(_teacher_cfg(name), _params("kd", signal="served", k=6), served=True)
    with pytest.raises(ConfigError, match=rf"temperature: 2 .*served by {name} gives log-probs at temperature 1 only"):
        check_teacher_signal(_teacher_cfg(name), _params("kd", signal="topk", k=5, temperature=2.0), served=False)
    anywhere = fake_backend(Capabilities(topk=True, temperature_any=True, local=False))
    check_teacher_signal(_teacher_cfg(anywhere), _params("kd", signal="served", k=500, temperature=2.0), served=True)


def _tiny_cfg(tiny_assets, tmp_path, **distill):
    from prefdistill.config.checks import load_config
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path)
    raw["distill"] = {**raw["distill"], **distill}
    return load_config(raw)


def _on(cfg, role: str, backend: str):
    return dataclasses.replace(cfg, **{role: dataclasses.replace(getattr(cfg, role), backend=backend)})


def test_the_checks_refuse_by_capability_not_by_name(tiny_assets, tmp_path, fake_backend):
    from prefdistill.config.checks import check_run
    from prefdistill.methods.registry import validate_method

    cfg = _tiny_cfg(tiny_assets, tmp_path, method="kd", params={})
    remote = fake_backend(Capabilities(can_score=True, topk=True, local=False))
    with pytest.raises(ConfigError, match=rf"distill.method=kd reads the teacher's next-token distributions, which a teacher "
                                          rf"behind an API \(teacher.backend={remote}\) cannot give in the training loop"):
        validate_method(_on(cfg, "teacher", remote))
    with pytest.raises(ConfigError, match=rf"student.backend: the student is trained here, so it must be local \(hf or vllm\), "
                                          rf"not {remote}"):
        check_run(_on(cfg, "student", remote))
    with pytest.raises(ConfigError, match="sft.teacher.enabled: a teacher behind an API cannot be fine-tuned here"):
        check_run(_on(cfg, "teacher", remote))  # the tiny config fine-tunes its teacher
    trainable = fake_backend(Capabilities(in_loop=True, trainable=True, topk=True, temperature_any=True))
    validate_method(_on(cfg, "teacher", trainable))
    check_run(_on(_on(cfg, "student", trainable), "teacher", trainable))


def test_a_backend_that_cannot_score_is_refused_for_stored_teacher_log_probs(tiny_assets, tmp_path, fake_backend):
    from prefdistill.methods.registry import validate_method

    cfg = _tiny_cfg(tiny_assets, tmp_path, method="dpkd", params={})
    texts = fake_backend(Capabilities(can_score=False, local=False))
    with pytest.raises(ConfigError, match=rf"distill.method=dpkd needs the teacher's log-probabilities .*backend {texts}.*"
                                          r"can_score false\). Methods that need only its text: .*plad"):
        validate_method(_on(cfg, "teacher", texts))
    validate_method(_on(cfg, "teacher", fake_backend(Capabilities(can_score=True, local=False))))


def test_a_backends_own_config_rule_runs_with_the_checks(tiny_assets, tmp_path, fake_backend):
    from prefdistill.config.checks import check_run

    seen = []
    name = fake_backend(Capabilities(in_loop=True, trainable=True), check=lambda model, role: seen.append((role, model.backend)))
    cfg = _tiny_cfg(tiny_assets, tmp_path)
    check_run(_on(_on(cfg, "student", name), "teacher", name))
    assert seen == [("teacher", name), ("student", name)]


def test_load_model_uses_the_registered_loader_and_the_stand_in_for_training(fake_backend):
    calls = []

    def load(cfg, **kwargs):
        calls.append((cfg.backend, kwargs))
        return SimpleNamespace(name=cfg.name_or_path)

    trains = fake_backend(Capabilities(in_loop=True, trainable=True), load=load)
    serves = fake_backend(Capabilities(stand_in=trains), load=load)
    load_model(ModelConfig(name_or_path="m", backend=serves))
    load_model(ModelConfig(name_or_path="m", backend=serves), for_training=True)
    assert calls == [(serves, {}), (trains, {"for_training": True})]
