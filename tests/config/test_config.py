"""Typed configs: every shipped config loads; unknown keys and bad types fail by name."""
from pathlib import Path

import pytest

from prefdistill.config.schema import ConfigError, RunConfig

from prefdistill.config.checks import load_config

CONFIGS = sorted((Path(__file__).parents[2] / "src" / "prefdistill" / "configs").glob("*.yaml"))
BASE = {"teacher": {"name_or_path": "t"}, "student": {"name_or_path": "s"}}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), RunConfig)


def test_shipped_configs_exist():
    assert any(p.name == "demo.yaml" for p in CONFIGS)


def test_unknown_key_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'distill.train.lrr'.*did you mean 'distill.train.lr'"):
        load_config(BASE, ["distill.train.lrr=1e-4"])


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown key 'techer'"):
        load_config({**BASE, "techer": {}})


@pytest.mark.parametrize("override,key", [
    ("distill.train.lr=fast", "distill.train.lr"),
    ("sft.student.steps=2.5", "sft.student.steps"),
    ("student.lora.enabled=maybe", "student.lora.enabled"),
    ("data.truncation=middle", "data.truncation"),
    ("eval.rows=teacher", "eval.rows"),
])
def test_bad_types_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(BASE, [override])


def test_overrides_parse_yaml_values():
    cfg = load_config(BASE, ["distill.train.lr=5e-5", "seed=3", "data.max_test=null", "student.lora.enabled=false"])
    assert cfg.distill.train.lr == 5e-5 and cfg.seed == 3 and cfg.data.max_test is None and not cfg.student.lora.enabled


def test_sft_select_takes_only_its_values_before_any_model_loads():
    """sft.select: which evaluation's weights each SFT keeps; a bad value fails at load, naming the key and the choices."""
    assert load_config(BASE).sft.select == "auto"
    for value in ("auto", "val_loss", "last"):
        assert load_config(BASE, [f"sft.select={value}"]).sft.select == value
    with pytest.raises(ConfigError, match=r"sft\.select: must be one of \['auto', 'val_loss', 'last'\], got 'best'"):
        load_config(BASE, ["sft.select=best"])
    with pytest.raises(ConfigError, match=r"sft\.select: must be one of"):
        load_config({**BASE, "sft": {"select": "win_rate"}})  # the bench's metrics come through `auto`, not here


def test_method_params_validated_by_method():
    with pytest.raises(ConfigError, match="distill.params.betta"):
        load_config(BASE, ["distill.params.betta=1"])
    with pytest.raises(ConfigError, match="distill.method"):
        load_config(BASE, ["distill.method=nope"])
    with pytest.raises(ConfigError, match="pairs.score"):
        load_config(BASE, ["distill.params.variant=margin"])
    assert load_config(BASE, ["distill.params.variant=margin", "pairs.score=rouge"]).pairs.score == "rouge"


def test_missing_model_and_bad_override_syntax():
    with pytest.raises(ConfigError, match="teacher.name_or_path"):
        load_config({"student": {"name_or_path": "s"}})
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(BASE, ["seed"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_base_config_is_merged_under_the_file(tmp_path):
    (tmp_path / "parent.yaml").write_text("teacher: {name_or_path: t, dtype: bfloat16}\nstudent: {name_or_path: s}\nseed: 3\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nteacher: {name_or_path: t2}\nname: child\n")
    cfg = load_config(tmp_path / "child.yaml", ["seed=4"])
    assert (cfg.teacher.name_or_path, cfg.teacher.dtype, cfg.student.name_or_path, cfg.name, cfg.seed) == ("t2", "bfloat16", "s", "child", 4)
    packaged = load_config({"base": "demo", "name": "mine"})
    assert packaged.teacher.name_or_path == "builtin:smollm2-135m-instruct" and packaged.name == "mine"
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="neither a file"):
        load_config({"base": "no-such-config"})


def test_eval_judge_rules(tiny_assets, tmp_path):
    from prefdistill.config.schema import resolved_eval_judge
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path)
    assert resolved_eval_judge(load_config(raw)) == "heldout"  # a trained judge: a held-out one grades
    raw["judge"] = {"kind": "callable", "callable": "math:fsum"}
    assert resolved_eval_judge(load_config(raw)) == "same"
    raw["eval_judge"] = {"kind": "heldout"}
    with pytest.raises(ConfigError, match="eval_judge.kind"):
        load_config(raw)
    raw["eval_judge"] = {"kind": "hf"}
    with pytest.raises(ConfigError, match="eval_judge.name_or_path"):
        load_config(raw)
