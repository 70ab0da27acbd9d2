"""The whole pipeline end to end on tiny models built from configs, through the CLI."""
import dataclasses
import json

import pytest
import torch
import yaml

from prefdistill.cli import main
from prefdistill.config.checks import load_config
from prefdistill.config.schema import ConfigError
from prefdistill.run.artifacts import Artifacts
from prefdistill.io import read_jsonl
from prefdistill.methods import get_method
from prefdistill.models.tiny import tiny_config
from prefdistill.run import pipeline as pipeline_mod


@pytest.fixture(scope="module")
def tiny_run(tiny_assets, tmp_path_factory):
    """The tiny pipeline run once through `prefdistill demo --tiny` (shared by the checks below)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["demo", "--tiny", "--output-dir", str(out)]) == 0
    return out / "demo-tiny"


def test_run_folder_has_every_output(tiny_run):
    for rel in ["config.yaml", "data/sft.jsonl", "data/distill.jsonl", "data/test.jsonl", "reward/metrics.json",
                "checkpoints/teacher_sft/prefdistill_checkpoint.json", "checkpoints/student_sft/prefdistill_checkpoint.json",
                "checkpoints/student_distill/prefdistill_checkpoint.json", "pairs/pairs.jsonl", "metrics.json", "report.md"]:
        assert (tiny_run / rel).is_file(), rel
    assert list((tiny_run / "plots").glob("*.png"))


def test_metrics_table_rows(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert set(metrics["rows"]) == {"teacher", "student_init", "student_sft", "student_distill"}
    row = metrics["rows"]["student_distill"]
    for key in ["word_count", "rouge1", "rouge2", "rougeL", "win_rate", "win_rate_ci", "ts_win_rate", "length_buckets"]:
        assert key in row
    assert 0 <= row["win_rate"] <= 100
    assert 0 <= metrics["judge"]["heldout_accuracy"] <= 1
    report = (tiny_run / "report.md").read_text()
    assert "Held-out pairwise accuracy" in report
    assert "PLaD student" in report and "Paired over the same" in report
    assert set(metrics["timings_s"]) >= {"reward", "sft", "pairs", "distill", "eval", "total"}
    assert metrics["comparison"]["win_rate_diff"]["n"] == metrics["n_test"]


def test_eval_intervals_resample_the_test_groups(tiny_run):
    """The eval stage passes the test examples' io.group_of to every interval, and the report says so."""
    from prefdistill.io import group_of, read_examples

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    test = read_examples(tiny_run / "data" / "test.jsonl")
    groups = len({group_of(e) for e in test})
    assert metrics["resampled"] == f"groups ({len(test)} prompts in {groups} groups)"
    assert all(row["groups"] == groups for row in metrics["rows"].values())
    for key in ("comparison", "training_judge_comparison"):
        assert metrics[key]["win_rate_diff"]["groups"] == metrics[key]["head_to_head"]["groups"] == groups
    assert f"Every interval in this report resampled groups ({len(test)} prompts" in (tiny_run / "report.md").read_text()


def test_rows_are_graded_by_a_held_out_judge_and_by_the_training_judge(tiny_run):
    """The grader is not the judge training used: two reward models from disjoint documents, both in the report."""
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    grader, training = metrics["judges"]["eval"], metrics["judges"]["training"]
    assert grader["name"] == "heldout" and training["name"] == "trained" and "oracle" in training
    assert grader["trained_on"]["half"] == "heldout" and training["trained_on"]["half"] == "training"
    assert grader["seed"] != training["seed"]
    sft = read_jsonl(tiny_run / "data/sft.jsonl") + read_jsonl(tiny_run / "data/distill.jsonl")
    assert grader["trained_on"]["examples"] + training["trained_on"]["examples"] == len(sft)
    for row in metrics["rows"].values():
        assert 0 <= row["training_judge_win_rate"] <= 100 and len(row["training_judge_win_rate_ci"]) == 2
    assert metrics["training_judge_comparison"]["win_rate_diff"]["n"] == metrics["n_test"]
    report = (tiny_run / "report.md").read_text()
    assert "## Evaluation judge" in report and "## Training judge" in report and "Win rate, training judge" in report
    eval_scores = json.loads((tiny_run / "eval/judge_scores.json").read_text())
    training_scores = json.loads((tiny_run / "eval/training_judge_scores.json").read_text())
    assert eval_scores["reference"] != training_scores["reference"]  # two different models


def test_split_by_document_keeps_documents_whole():
    from prefdistill.io import Example
    from prefdistill.judges.heldout import split_by_document

    examples = [Example(f"{d}-{a}", f"doc {d}", f"summary {d} {a}", {"group": f"paper{d}"}) for d in range(7) for a in range(3)]
    first, second = split_by_document(examples, seed=0)
    docs = lambda xs: {e.meta["group"] for e in xs}  # noqa: E731
    assert len(docs(first)) == 4 and len(docs(second)) == 3 and not docs(first) & docs(second)
    assert len(first) + len(second) == len(examples)
    assert split_by_document(examples, seed=0) == (first, second) and split_by_document(examples, seed=1) != (first, second)


def test_splits_are_disjoint_halves(tiny_run):
    sft = {r["meta"].get("group") for r in read_jsonl(tiny_run / "data/sft.jsonl")}
    distill = {r["meta"].get("group") for r in read_jsonl(tiny_run / "data/distill.jsonl")}
    assert sft and distill and not sft & distill


def test_pairs_load_in_datasets_with_metadata(tiny_run):
    import datasets

    ds = datasets.load_dataset("json", data_files=str(tiny_run / "pairs/pairs.jsonl"), split="train")
    assert {"prompt", "chosen", "rejected", "chosen_source", "rejected_source", "teacher_sampling"} <= set(ds.column_names)
    assert all(c != r for c, r in zip(ds["chosen"], ds["rejected"]))


def test_export_pairs_parquet(tiny_run, tmp_path):
    import datasets

    out = tmp_path / "pairs.parquet"
    assert main(["export-pairs", str(tiny_run), "--format", "parquet", "--out", str(out)]) == 0
    assert len(datasets.Dataset.from_parquet(str(out))) > 0


def test_rerun_skips_every_stage(tiny_run, monkeypatch):
    """With all outputs present, no model is loaded and nothing is regenerated."""
    def boom(*a, **k):
        raise AssertionError("a model was loaded although every output exists")

    monkeypatch.setattr(Artifacts, "load", boom)
    before = {p: p.stat().st_mtime_ns for p in (tiny_run / "samples").rglob("samples.jsonl")}
    assert before
    timings = json.loads((tiny_run / "timings.json").read_text())
    assert main(["demo", "--tiny", "--output-dir", str(tiny_run.parent)]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (tiny_run / "samples").rglob("samples.jsonl")}
    assert json.loads((tiny_run / "timings.json").read_text()) == timings  # skipped stages keep their times


def test_pair_generation_resumes_missing_prompts_only(tiny_run):
    """Lost prompts of the first chunk are regenerated (same seed, same text); the rest is kept byte for byte."""
    journal = tiny_run / "samples" / "teacher" / "samples.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    chunk_size = yaml.safe_load((tiny_run / "config.yaml").read_text())["pairs"]["chunk_size"]
    first_chunk = {e["id"] for e in map(json.loads, (tiny_run / "data" / "distill.jsonl").read_text().splitlines()[:chunk_size])}
    kept = [line for line in lines if json.loads(line)["id"] not in first_chunk]
    assert len(kept) < len(lines) and kept
    journal.write_text("".join(kept) + '{"id": "cut short by a cra')  # a crash mid-line
    (tiny_run / "pairs" / "pairs.jsonl").unlink()
    assert main(["demo", "--tiny", "--output-dir", str(tiny_run.parent)]) == 0
    after = journal.read_text().splitlines(keepends=True)
    assert after[:len(kept)] == kept  # nothing finished was touched
    assert sorted(after) == sorted(lines)  # the lost prompts came back identical, once each


def test_changed_config_is_refused(tiny_run):
    with pytest.raises(ConfigError, match="distill.train.lr"):
        pipeline_mod.Pipeline(load_config(str(tiny_run / "config.yaml"), ["distill.train.lr=0.5"]))


def test_cli_reports_config_errors(capsys, tmp_path):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def _trainable_after(cfg_dict, stages, crash_at=None, monkeypatch=None):
    cfg = load_config(cfg_dict)
    if crash_at is not None:
        spec = get_method("plad")
        calls = {"n": 0}

        def crashing(policy, rows, params):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt("simulated crash")
            return spec.loss(policy, rows, params)

        from prefdistill.run import stages as stages_mod  # the distill stage looks the method up there

        original = stages_mod.resolve_method
        patched = type(spec)(**{**spec.__dict__, "loss": crashing})
        monkeypatch.setattr(stages_mod, "resolve_method", lambda c: dataclasses.replace(original(c), spec=patched))
        with pytest.raises(KeyboardInterrupt):
            pipeline_mod.Pipeline(cfg).run(stages)
        monkeypatch.undo()
    pipeline_mod.Pipeline(cfg).run(stages)
    from safetensors.torch import load_file

    return load_file(str(cfg.run_dir / "checkpoints" / "student_distill" / "adapter_model.safetensors"))


def test_crash_mid_training_resumes_to_the_same_weights(tiny_assets, tmp_path, monkeypatch):
    base = tiny_config(tiny_assets, tmp_path)
    base["distill"]["train"] = {"steps": 4, "batch_size": 2, "lr": 1e-2, "save_every": 1}
    base["stages"] = ["sft", "pairs", "distill"]
    clean = _trainable_after({**base, "name": "clean"}, None)
    resumed = _trainable_after({**base, "name": "crashed"}, None, crash_at=3, monkeypatch=monkeypatch)
    assert clean.keys() == resumed.keys()
    for k in clean:
        assert torch.allclose(clean[k], resumed[k], atol=1e-6), k


def test_python_api_quickstart(tiny_assets, tmp_path):
    import prefdistill as pd

    cfg = pd.load_config(tiny_config(tiny_assets, tmp_path), ["name=api"])
    pipe = pd.Pipeline(cfg)
    pipe.run(["reward", "sft"])
    assert (cfg.run_dir / "checkpoints" / "student_sft").is_dir() and pipe.results() == {}
    metrics = pipe.run(["pairs", "distill", "eval"])
    assert metrics["rows"]["student_distill"]["n"] == len(pipe.artifacts.splits["test"])


@pytest.mark.parametrize("overrides", [
    ["distill.params.variant=margin", "pairs.score=rouge", "student.lora.enabled=false"],
    ["pairs.relabel_fraction=1.0", "pairs.score=judge", "distill.params.variant=margin"],
], ids=["margin-rouge-full-ft", "relabel-judge"])
def test_pipeline_variants(overrides, tiny_assets, tmp_path):
    cfg = load_config(tiny_config(tiny_assets, tmp_path), overrides + ["eval.rows=[student_sft,student_distill]"])
    metrics = pipeline_mod.Pipeline(cfg).run()
    pairs = read_jsonl(cfg.run_dir / "pairs" / "pairs.jsonl")
    assert all(isinstance(p["chosen_score"], float) for p in pairs)
    assert set(metrics["rows"]) == {"student_sft", "student_distill"}
    if cfg.pairs.relabel_fraction:
        assert all(p["relabelled"] for p in pairs)
        assert all(p["judge_chosen"] >= p["judge_rejected"] for p in pairs)
        assert metrics["pairs"]["swapped"] == sum(p["swapped"] for p in pairs)
    else:
        meta = json.loads((cfg.run_dir / "checkpoints" / "student_distill" / "prefdistill_checkpoint.json").read_text())
        assert meta["kind"] == "full"


def test_a_moved_run_folder_reuses_its_samples_and_checkpoints(tiny_run, tmp_path, monkeypatch):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(tiny_run, moved / tiny_run.name)
    (moved / tiny_run.name / "eval" / "rows.json").unlink()  # force the eval stage to run again

    def boom(*a, **k):
        raise AssertionError("a model was loaded although the moved folder holds every sample")

    monkeypatch.setattr(Artifacts, "load", boom)
    cfg = load_config(str(tiny_run / "config.yaml"), [f"output_dir={moved}"])
    metrics = pipeline_mod.Pipeline(cfg, allow_config_change=True).run(["eval"])
    assert metrics["rows"]["student_distill"]["n"] == metrics["n_test"]
    from prefdistill.models.hf import checkpoint_chain

    full, adapters = checkpoint_chain(moved / tiny_run.name / "checkpoints" / "student_distill")
    assert full is None and [a.name for a in adapters] == ["student_sft", "student_distill"]
    assert all(str(moved) in str(a) for a in adapters)


def test_a_method_that_reads_only_prompts_skips_the_sampling(tiny_assets, tmp_path):
    """The data stage computes what the configured methods consume: SPPO reads prompts, so no teacher or student samples."""
    raw = tiny_config(tiny_assets, tmp_path, name="prompts-only")
    raw["distill"] = {**raw["distill"], "method": "sppo", "params": {"samples": 2, "max_new_tokens": 4}}
    pipe = pipeline_mod.Pipeline(load_config(raw))
    assert pipe.artifacts.consumed() == {"prompts"}
    pipe.run(["reward", "sft", "pairs", "distill"])
    run = pipe.run_dir
    assert not (run / "pairs" / "pairs.jsonl").exists()
    # the only samples are the reward stage's "student_init" negatives, none for distillation
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["student_init"]
    assert (run / "checkpoints" / "student_distill" / "prefdistill_checkpoint.json").is_file()
    rows = pipe.artifacts.training_data(pipe.artifacts.methods[0]).rows
    assert [r["prompt"] for r in rows] == [e.prompt for e in pipe.artifacts.splits["distill"]]
