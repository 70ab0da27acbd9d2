"""Bad configs and model pairs end in an error naming the key or model; loading runs no remote code:
OMP_NUM_THREADS=1 python -m pytest -q tests/config/test_bad_input_config.py

Property-based (hypothesis); the cases and their outcomes are tabulated in docs/bad_input.md.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
import shutil
import types
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdistill.config.checks import load_config
from prefdistill.config.schema import ConfigError, RunConfig
from prefdistill.methods import METHODS

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BASE = {"teacher": {"name_or_path": "t"}, "student": {"name_or_path": "s"}}  # plad: no tokenizer is loaded


def leaves(cls=RunConfig, prefix="") -> list[tuple[str, type, object]]:
    """(dotted key, owning dataclass, annotation) of every field below `cls`, dataclasses expanded."""
    out = []
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}{f.name}", typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += leaves(tp, key + ".")
        else:
            out.append((key, cls, tp))
    return out


LEAVES = [leaf for leaf in leaves() if not leaf[0].startswith(("distill.params", "bench.methods"))]
KEY = re.escape


# ----------------------------------------------------------------------------- unknown keys, wrong types


SECTIONS = sorted({key.rsplit(".", 1)[0] for key, _, _ in LEAVES if "." in key}) + [""]


@FEW
@given(section=st.sampled_from(SECTIONS), name=st.from_regex(r"[a-z][a-z_0-9]{0,12}", fullmatch=True))
def test_unknown_key_is_named(section, name):
    known = {key for key, _, _ in LEAVES} | set(SECTIONS)
    dotted = f"{section}.{name}" if section else name
    if dotted in known or name == "base" or any(k.startswith(dotted + ".") for k in known):
        return
    with pytest.raises(ConfigError, match=rf"unknown key '{KEY(dotted)}'"):
        load_config(BASE, [f"{dotted}=1"])


def wrong_values(tp) -> list:
    """Values no reading of annotation `tp` accepts."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return ["maybe", "yes please", 2, 0.5, [True]]
    if tp is int:
        return ["many", 2.5, [1], {"a": 1}, True]
    if tp is float:
        return ["fast", [0.1], {"lr": 1}, True]
    if tp is str:
        return [5, 1.5, [], {"a": "b"}, True]
    if origin is typing.Literal:
        return ["no-such-choice", 7, ["x"]]
    if origin is list:
        return ["not a list", 3, {"a": 1}]
    if origin in (typing.Union, types.UnionType):
        return [{"a": {"b": 1}}, [[{"x": 1}]]]  # no str / int / float / list[str] reads these
    raise AssertionError(f"no wrong values for {tp}")


TYPED = [leaf for leaf in LEAVES if leaf[2] is not typing.Any and typing.get_origin(leaf[2]) is not dict]


@FEW
@given(data=st.data(), leaf=st.sampled_from(TYPED))
def test_wrong_type_is_named(data, leaf):
    key, _, tp = leaf
    value = data.draw(st.sampled_from(wrong_values(tp)), label="value")
    with pytest.raises(ConfigError, match=rf"^{KEY(key)}(\[\d+\])?: "):
        load_config(BASE, [f"{key}={json.dumps(value)}"])


# ----------------------------------------------------------------------------- ranges


def _field_rule(cls, name: str):
    """The rule a field declares next to itself (prefdistill.config.typed.opt), or None."""
    return next((f.metadata.get("rule") for f in dataclasses.fields(cls) if f.name == name), None)


RANGED = [(key, tp) for key, cls, tp in LEAVES if _field_rule(cls, key.rsplit(".", 1)[-1]) is not None]


def _number_type(tp) -> type:
    return int if int in (tp, *typing.get_args(tp)) else float


def _rule(key: str):
    cls = next(c for k, c, _ in LEAVES if k == key)
    return _field_rule(cls, key.rsplit(".", 1)[-1])


@FEW
@given(data=st.data(), leaf=st.sampled_from(RANGED))
def test_out_of_range_is_named(data, leaf):
    key, tp = leaf
    rule, ok = _rule(key)
    if _number_type(tp) is int:
        value = data.draw(st.integers(-10**6, 10**6).filter(lambda v: not ok(v)) | st.just(-1 if ok(0) else 0), label="value")
    else:
        value = data.draw(st.floats(-1e6, 1e6).filter(lambda v: not ok(v)) | st.sampled_from([float("nan"), float("inf")]),
                          label="value")
    text = {float("inf"): ".inf", float("-inf"): "-.inf"}.get(value, ".nan" if value != value else repr(value))
    with pytest.raises(ConfigError, match=rf"^{KEY(key)}: {KEY(rule)}, got "):
        load_config(BASE, [f"{key}={text}"])


def test_every_leaf_is_covered():
    """Beyond the sampled examples: one wrong type for each of the typed keys, one value outside each range."""
    for key, _, tp in TYPED:
        value = wrong_values(tp)[0]
        with pytest.raises(ConfigError, match=rf"^{KEY(key)}(\[\d+\])?: "):
            load_config(BASE, [f"{key}={json.dumps(value)}"])
    for key, tp in RANGED:
        rule, ok = _rule(key)
        value = next(v for v in (0, -1, 2**32, 1.5, -0.5) if not ok(v) and (_number_type(tp) is float or v == int(v)))
        with pytest.raises(ConfigError, match=rf"^{KEY(key)}: {KEY(rule)}, got "):
            load_config(BASE, [f"{key}={value!r}"])


@FEW
@given(data=st.data(), leaf=st.sampled_from(RANGED))
def test_in_range_values_are_accepted(data, leaf):
    """No false alarms: any value inside its range loads (unless another rule ties it, checked by name)."""
    key, tp = leaf
    _, ok = _rule(key)
    strategy = st.integers(0, 10**4) if _number_type(tp) is int else st.floats(0, 1e4)
    value = data.draw(strategy.filter(ok), label="value")
    try:
        cfg = load_config(BASE, [f"{key}={value!r}"])
    except ConfigError as e:  # a cross-field rule (fraction sums, context lengths): it must name this key
        assert key.rsplit(".", 1)[-1] in str(e), e
        return
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    assert node == value


# ----------------------------------------------------------------------------- contradictions


fraction = st.floats(0, 0.999)


CONTRADICTIONS = st.one_of(
    st.tuples(fraction, fraction).filter(lambda ab: sum(ab) >= 1).map(
        lambda ab: ([f"data.val_fraction={ab[0]!r}", f"data.test_fraction={ab[1]!r}"], "data.val_fraction + data.test_fraction")),
    st.sampled_from(["validation", "test"]).map(
        lambda s: ([f"data.splits.{s}=train"], f"data.splits.train and data.splits.{s}")),
    st.just((["data.splits.validation=dev", "data.splits.test=dev"], "data.splits.validation and data.splits.test")),
    st.text("abcxyz", min_size=1, max_size=5).map(
        lambda c: ([f"data.columns.prompt={c}", f"data.columns.target={c}"], "data.columns.prompt and data.columns.target")),
    st.sampled_from(["pairs.teacher_sampling", "pairs.student_sampling", "eval.sampling"]).map(
        lambda k: ([f"{k}.do_sample=true", f"{k}.temperature=0"], f"{k}.temperature")),
    st.tuples(st.sampled_from(["teacher", "student"]), st.integers(1, 64), st.integers(1, 64), st.integers(1, 64)).filter(
        lambda t: t[2] + t[3] > t[1]).map(
        lambda t: ([f"{t[0]}.max_context={t[1]}", f"data.max_prompt_tokens={t[2]}", f"eval.sampling.max_new_tokens={t[3]}"],
                   f"{t[0]}.max_context")),
    st.sampled_from(["", " ", ".", "..", "a/b", "../other", "/abs", "x\\y"]).map(lambda n: ([f"name='{n}'"], "name")),
    st.sampled_from(["teachr", "student", "student_final"]).map(lambda r: ([f"eval.rows=[teacher,{r}]"], "eval.rows")),
    st.just((["student.backend=openai"], "student.backend")),
    st.just((["bench.methods=[{name: a, method: plad}]", "bench.relabel_method=a", "bench.relabel_shares=[0.5]",
              "pairs.relabel_fraction=0.5"], "bench.relabel_shares")),
    st.just((["judge.kind=hf"], "judge.name_or_path")),
)


@FEW
@given(case=CONTRADICTIONS)
def test_contradictory_options_are_named(case):
    overrides, key = case
    with pytest.raises(ConfigError, match=rf"^{KEY(key)}"):
        load_config(BASE, overrides)


# ----------------------------------------------------------------------------- model pairs


TOKEN_LEVEL = sorted(n for n, s in METHODS.items() if "teacher" in s.needs)


def tiny_cfg(tiny_assets, tmp_path, **roles) -> dict:
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path)
    for role, name in roles.items():
        raw[role]["name_or_path"] = str(tiny_assets[name])
    return raw


@FEW
@given(method=st.sampled_from(TOKEN_LEVEL), foreign_role=st.sampled_from(["teacher", "student"]))
def test_token_level_method_refuses_foreign_tokenizer_when_told_to(tiny_assets, tmp_path, method, foreign_role):
    """vocabulary: shared refuses a foreign tokenizer naming both models; the default aligns it (MiniLLM without
    teacher-mixed sampling); one vocabulary is fine either way."""
    other = "student" if foreign_role == "teacher" else "teacher"
    raw = tiny_cfg(tiny_assets, tmp_path, **{foreign_role: "foreign", other: other})
    with pytest.raises(ConfigError, match=rf"distill\.method={method} .*{KEY(str(tiny_assets['foreign']))}.*"
                                          rf"{KEY(str(tiny_assets[other]))}|{KEY(str(tiny_assets[other]))}.*{KEY(str(tiny_assets['foreign']))}"):
        load_config(raw, [f"distill.method={method}", "distill.params={vocabulary: shared}"])
    aligned = "{mix_weight: 0}" if method == "minillm" else "{}"
    load_config(tiny_cfg(tiny_assets, tmp_path, **{foreign_role: "foreign", other: other}),
                [f"distill.method={method}", f"distill.params={aligned}"])
    load_config(tiny_cfg(tiny_assets, tmp_path), [f"distill.method={method}", "distill.params={vocabulary: shared}"])


def test_loaded_models_with_foreign_tokenizer_are_refused(tiny_assets):
    """The same check on loaded models (done before any step when the config-time check was deferred)."""
    from prefdistill.config.schema import ModelConfig
    from prefdistill.methods.registry import get_method, require_shared_vocabulary
    from prefdistill.models.hf import LocalLM

    student = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    foreign = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["foreign"])))
    with pytest.raises(ConfigError, match=rf"{KEY(str(tiny_assets['foreign']))} has .* tokens, {KEY(str(tiny_assets['student']))}"):
        require_shared_vocabulary(get_method("kd"), student, foreign)


@pytest.mark.parametrize("role", ["teacher", "foreign"])  # neither tokenizer has a chat template
def test_chat_format_without_chat_template_names_the_model(tiny_assets, tmp_path, role):
    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.hf import LocalLM

    raw = tiny_cfg(tiny_assets, tmp_path, teacher=role)
    with pytest.raises(ConfigError, match=rf"teacher\.prompt_format: 'chat', but the tokenizer of {KEY(str(tiny_assets[role]))} "
                                          "has no chat template"):
        load_config(raw, ["teacher.prompt_format=chat"])
    with pytest.raises(ValueError, match=rf"{KEY(str(tiny_assets[role]))}: prompt_format is 'chat' but the tokenizer has no chat"):
        LocalLM.load(ModelConfig(name_or_path=str(tiny_assets[role]), prompt_format="chat"))
    assert load_config(raw, ["student.prompt_format=chat"]).student.prompt_format == "chat"  # the student has one


@pytest.fixture(scope="module")
def short_student(tiny_assets):
    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.hf import LocalLM

    return LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"]), max_context=40))


@FEW
@given(n=st.integers(1, 5), data=st.data(), extra=st.integers(1, 200))
def test_prompt_longer_than_context_names_its_index(short_student, n, data, extra):
    from prefdistill.config.schema import SamplingConfig

    k = data.draw(st.integers(0, n - 1), label="long prompt")
    prompts = ["the model learns"] * n
    prompts[k] = "the " * (40 + extra)
    with pytest.raises(ValueError, match=rf"{KEY(short_student.name)}: prompt {k} has \d+ tokens.*context of 40"):
        short_student.generate(prompts, SamplingConfig(max_new_tokens=4), seed=0, desc="")


@FEW
@given(n=st.integers(1, 4), data=st.data(), target_words=st.integers(41, 400))
def test_target_longer_than_context_is_refused_by_the_model(short_student, n, data, target_words):
    """Huge targets are kept by data (documented); scoring or training on one is refused, naming the model."""
    k = data.draw(st.integers(0, n - 1), label="long target")
    targets = ["the model"] * n
    targets[k] = " ".join(["summary"] * target_words)
    with pytest.raises(ValueError, match=rf"{KEY(short_student.name)}: prompt \+ completion {k} of this batch .* over the "
                                         "context of 40"):
        short_student.completion_logps(["the model learns"] * n, targets)


# ----------------------------------------------------------------------------- loading safety


SRC = Path(__file__).parents[2] / "src" / "prefdistill"
NO_CODE_LOADERS = {"PeftModel", "GenerationConfig"}  # adapters and generation JSON: nothing to execute


def test_every_from_pretrained_call_passes_trust_remote_code():
    """Static: remote code runs only when a call says so, and every call says (from ModelConfig or False)."""
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
                kwargs = {k.arg for k in node.keywords}
                if owner not in NO_CODE_LOADERS and "trust_remote_code" not in kwargs:
                    missing.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not missing, f"from_pretrained without trust_remote_code: {missing}"


@pytest.fixture
def remote_code_folder(tiny_assets, tmp_path):
    """A copy of the tiny student whose config maps its classes to a local custom.py that leaves a marker."""
    folder, marker = tmp_path / "custom_model", tmp_path / "remote_code_ran"
    shutil.copytree(tiny_assets["student"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model",
                          "AutoModelForSequenceClassification": "custom.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class Config(LlamaConfig):\n    pass\n"
        "class Model(LlamaForCausalLM):\n    config_class = Config\n")
    return folder, marker


def test_remote_code_runs_only_when_the_config_says_so(remote_code_folder):
    from prefdistill.config.schema import ModelConfig
    from prefdistill.judges.hf import load_reward_model
    from prefdistill.models import load_tokenizer
    from prefdistill.models.hf import LocalLM

    folder, marker = remote_code_folder
    LocalLM.load(ModelConfig(name_or_path=str(folder)))
    load_tokenizer(ModelConfig(name_or_path=str(folder)))
    with pytest.raises((ValueError, OSError)):  # not a reward model; what matters is that nothing ran
        load_reward_model(folder)
    assert not marker.exists()
    lm = LocalLM.load(ModelConfig(name_or_path=str(folder), trust_remote_code=True))
    assert marker.exists() and type(lm.model).__name__ == "Model"


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_safetensors_preferred_and_bin_fallback_logged(tiny_assets, tmp_path, caplog):
    from transformers import AutoModelForCausalLM

    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.hf import LocalLM

    folder = tmp_path / "both"
    shutil.copytree(tiny_assets["student"], folder)
    safe = _weights(AutoModelForCausalLM.from_pretrained(folder))
    pickled = {k: v + 1.0 for k, v in safe.items()}  # other values, so the test sees which file was read
    torch.save(pickled, folder / "pytorch_model.bin")
    with caplog.at_level(logging.WARNING, logger="prefdistill.models.assets"):
        lm = LocalLM.load(ModelConfig(name_or_path=str(folder)))
        assert all(torch.equal(lm.model.state_dict()[k], v) for k, v in safe.items())
        assert not [r for r in caplog.records if r.name == "prefdistill.models.assets"]
        (folder / "model.safetensors").unlink()
        lm = LocalLM.load(ModelConfig(name_or_path=str(folder)))
    assert all(torch.equal(lm.model.state_dict()[k], v) for k, v in pickled.items())
    assert any("no .safetensors weights: loading its .bin (pickle) weights" in r.getMessage() for r in caplog.records)
