"""A method resolved once from its config (`ResolvedMethod`), and the lists of methods derived from the registry."""
import dataclasses
from dataclasses import dataclass

import pytest

from prefdistill.errors import ConfigError
from prefdistill.methods import METHODS, ResolvedMethod, get_method, method_params, register, resolve, resolve_method
from prefdistill.methods.registry import (CONSUMES, FAMILIES, NEEDS, SFT_ROW, Claim, across_tokenizers, family_methods,
                                          on_policy_methods, paper_orderings, requirements, signal_methods,
                                          text_only_teacher)

TEACHER_SIGNAL = {"teacher", "teacher_topk", "served_teacher", "teacher_pair_logps", "teacher_samples"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_resolves_under_its_defaults(name):
    spec = get_method(name)
    method = resolve(name, {}, "distill.params")
    assert isinstance(method, ResolvedMethod) and method.spec is spec and method.name == name
    assert isinstance(method.params, spec.params_cls)
    assert (method.consumes, method.needs) == requirements(spec, method.params)  # the thin function agrees
    assert method.consumes in CONSUMES and method.needs <= set(NEEDS)
    assert method.family in FAMILIES and method.label == spec.label


@pytest.mark.parametrize("name", sorted(METHODS))
def test_on_policy_and_family_agree_with_what_the_method_declares(name):
    spec = get_method(name)
    fields = {f.name for f in dataclasses.fields(spec.params_cls)}
    # A method that samples from the student sets the length of its samples; one that does not has no such knob.
    assert spec.on_policy == ("max_new_tokens" in fields), name
    if spec.consumes == "prompts":  # it has nothing to train on but what it samples
        assert spec.on_policy
    if spec.family == "kd":  # PLaD's KD baselines read the teacher (its distributions or its samples), no oracle
        assert spec.needs & TEACHER_SIGNAL and "oracle" not in spec.needs
    if spec.family == "preference":  # teacher ≻ student pairs
        assert spec.consumes == "pairs" and {"teacher_samples", "student_samples"} <= spec.needs
    if spec.family == "win_rate":
        assert "oracle" in spec.needs
    if spec.family == "imitation":
        assert not spec.needs & TEACHER_SIGNAL and not spec.on_policy


@pytest.mark.parametrize("name, params, on_policy", [
    ("gkd", {"on_policy_fraction": 0.0}, False), ("gkd", {"on_policy_fraction": 0.5}, True),
    ("fdistill", {"student_prefixes": False}, False), ("fdistill", {}, True),
    ("distillm", {"student_fraction": 0.0}, False), ("distillm", {"student_fraction": 0.3}, True),
    ("kd", {}, False), ("wind", {}, True),
])
def test_params_that_draw_no_student_samples_are_not_on_policy(name, params, on_policy):
    assert resolve(name, params, "distill.params").on_policy is on_policy


def test_params_that_change_what_a_method_reads_change_its_resolution():
    cached = resolve("kd", {"signal": "topk"}, "distill.params")
    assert cached.needs == {"teacher_topk"} and cached.consumes == "targets"
    argmax = resolve("dpkd", {"mode": "token_argmax"}, "distill.params")
    assert argmax.consumes == "targets" and argmax.needs == {"teacher"}


def test_resolve_method_reads_the_config_once_and_agrees_with_method_params(tiny_assets, tmp_path):
    from prefdistill.config.checks import load_config
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path)
    raw["distill"] = {**raw["distill"], "method": "gkd", "params": {"on_policy_fraction": 0.0, "k": 3}}
    cfg = load_config(raw)
    method = resolve_method(cfg)
    assert method.name == "gkd" and method.params == method_params(cfg) and not method.on_policy
    assert method.params.k == 3


def test_bad_params_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"bench\.methods\.x\.params"):
        resolve("plad", {"betta": 1.0}, "bench.methods.x.params")
    with pytest.raises(KeyError, match="registered"):
        resolve("nope", {}, "distill.params")


def test_register_refuses_an_unknown_family():
    @dataclass
    class P:
        pass

    with pytest.raises(ValueError, match="family"):
        register("x_family", consumes="targets", params=P, family="telepathy")


@pytest.fixture
def throwaway():
    """A method registered for one test, removed after it."""
    @dataclass
    class P:
        max_new_tokens: int = 4

    register("zz_throwaway", consumes="pairs", params=P, needs=("teacher_samples",), family="kd", on_policy=True,
             claims=(Claim("Paper", "zz_throwaway", SFT_ROW, "rougeL"),))(lambda policy, rows, params: (0.0, {}))
    try:
        yield "zz_throwaway"
    finally:
        METHODS.pop("zz_throwaway", None)


def test_the_lists_of_methods_come_from_the_registry(throwaway):
    assert throwaway in on_policy_methods() and throwaway in family_methods("kd")
    assert throwaway in across_tokenizers() and throwaway in text_only_teacher()
    assert throwaway not in signal_methods("topk")
    claims = paper_orderings()
    assert Claim("Paper", throwaway, SFT_ROW, "rougeL") in claims
    # PLaD's claim over the KD family now covers the new member too, in both directions of its two claims.
    assert Claim("PLaD", "plad", throwaway, "win_rate") in claims and Claim("PLaD", throwaway, SFT_ROW, "win_rate") in claims


def test_the_lists_forget_a_removed_method(throwaway):
    assert throwaway in on_policy_methods()
    METHODS.pop(throwaway)
    assert throwaway not in on_policy_methods() and throwaway not in family_methods("kd")
    assert all(throwaway not in (c.better, c.worse) for c in paper_orderings())


def test_every_claim_names_registered_methods_or_the_sft_student():
    for c in paper_orderings():
        for side in (c.better, c.worse):
            assert side == SFT_ROW or side in METHODS, c
        assert c.better != c.worse


def test_every_keyword_a_loss_takes_is_a_need_it_can_be_given():
    """The loss functions' keyword-only arguments are needs that the one need -> provider table provides."""
    import inspect

    from prefdistill.run.train_job import PROVIDERS

    for name, spec in METHODS.items():
        keywords = {p.name for p in inspect.signature(spec.loss).parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert keywords <= set(PROVIDERS) and set(PROVIDERS) <= set(NEEDS), (name, keywords - set(PROVIDERS))
