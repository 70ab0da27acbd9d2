"""The reward stage feeds the judges the untrained student's answers and retrains them on a recipe change:
python -m pytest -q tests/run/test_reward_stage.py"""
from __future__ import annotations

from prefdistill.config.checks import load_config
from prefdistill.io import read_json, read_jsonl, text_key
from prefdistill.models.tiny import tiny_config
from prefdistill.run.pipeline import Pipeline
from prefdistill.run.stages import stage_reward


def test_the_reward_stage_samples_the_initial_student_for_its_negatives_and_retrains_on_a_new_recipe(tiny_assets, tmp_path):
    raw = tiny_config(tiny_assets, tmp_path, name="reward")
    raw["stages"] = ["reward"]
    pipe = Pipeline(load_config(raw))
    pipe.run(["reward"])
    run, splits = pipe.run_dir, pipe.artifacts.splits
    answers = {r["prompt"]: r["samples"] for r in read_jsonl(run / "samples" / "student_init" / "samples.jsonl")}
    reward_prompts = {text_key(e.prompt) for part in ("sft", "distill", "validation") for e in splits[part]}
    assert {text_key(p) for p in answers} == reward_prompts  # the judges' data and validation, never a test prompt
    assert not reward_prompts & {text_key(e.prompt) for e in splits["test"]}
    for which in ("", "heldout/"):
        metrics = read_json(run / f"reward/{which}metrics.json")
        assert {"template", "loop", "student_init"} <= set(metrics["per_kind"]) == set(metrics["negatives"])
        assert metrics["recipe"]["negatives"] == metrics["negatives"]
    assert stage_reward(pipe.artifacts) is False  # done, with this recipe: reused

    raw["reward"] = {**raw["reward"], "negatives": ["loop", "truncated"]}  # another recipe in the same folder
    again = Pipeline(load_config(raw), allow_config_change=True)
    assert stage_reward(again.artifacts) is True  # trained again, not reused
    for which in ("", "heldout/"):
        assert set(read_json(run / f"reward/{which}metrics.json")["per_kind"]) == {"loop", "truncated"}
