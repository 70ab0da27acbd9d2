"""The bench's calibration measure: the numbers from hand-made records (and an older bench without them), the report's
section, and the shared candidate unit and every row's scores on the tiny bench, with resume and a `--job` unit."""
import dataclasses
import json
import shutil

import pytest

from prefdistill.bench import calibration
from prefdistill.bench.calibration import dedupe
from prefdistill.bench.numbers import summarize
from prefdistill.bench.plan import Job, settings_hash
from prefdistill.bench.records import (Calibration, CandidateScores, CandidateSet, Choice, Cost, JobResult, Scored, TestResult)
from prefdistill.config.checks import load_bench_config
from prefdistill.io import read_json
from prefdistill.models.tiny import tiny_config
from prefdistill.reporting.bench_report import build_bench_report

# Four prompts, three candidates each, scored 3 > 2 > 1 by the judge (the last prompt: all tied, so unranked); the
# references score 2.5: only the best candidate wins.
JUDGE = [[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0], [1.0, 1.0, 1.0]]
REFS = [2.5, 2.5, 2.5, 0.5]
AGREE = [[-1.0, -2.0, -3.0], [-3.0, -1.0, -2.0], [-2.0, -3.0, -1.0], [-1.0, -2.0, -3.0]]  # the judge's order
REVERSE = [[-x for x in p] for p in AGREE]
TIED = [[-1.0] * 3 for _ in range(4)]


def _scores(rows):
    return CandidateScores("set1", rows, 0.5)


def _records(tmp_path, calibrated=True, missing_job=False):
    paths = {k: tmp_path / k for k in ("teacher", "student", "data", "encoder")}
    data = tiny_config(paths, tmp_path, name="b")
    data["bench"] = {"methods": [{"name": "plad", "method": "plad"}, {"name": "seqkd", "method": "seqkd"}], "seeds": [0, 1]}
    cfg, bench = load_bench_config(data)
    entries = {m.name: m for m in bench.methods}
    jobs = [Job(n, s, settings=settings_hash(entries[n])) for n in ("plad", "seqkd") for s in (0, 1)]
    cost = Cost(8, 2, 1.0, 100.0, "process RSS", sampling_wall_s=0.0, validation_wall_s=0.1)
    val = {2: {"win_rate": 50.0, "rougeL": 30.0}}
    runs = {j.key: JobResult(j, j.entry, j.entry.upper(), 2, val, cost, 0.5) for j in jobs}
    tests = {j.key: TestResult(2, ["a b"] * 4, [1.0, 0.0, 1.0, 0.0], None, 1.0, 0.75, 0.25, 0.4) for j in jobs}
    cands = CandidateSet("set1", {"teacher_samples": 2, "student_samples": 1}, ["d0", "d1", "d2", "d3"],
                         [["a", "b", "c"]] * 4, [["teacher", "teacher", "student"]] * 4, JUDGE, REFS)
    job_scores = {jobs[0].key: _scores(AGREE), jobs[1].key: _scores(AGREE), jobs[2].key: _scores(TIED), jobs[3].key: _scores(TIED)}
    if missing_job:
        del job_scores[jobs[1].key]  # plad's second seed was tested before calibration existed
    cal = Calibration(cands, {"teacher": _scores(AGREE), "student_init": _scores(REVERSE), "student_sft": _scores(TIED)}, job_scores)
    base = ("teacher", "student_init", "student_sft")
    scored = Scored(
        references=["the model learns"] * 4, groups=[0, 0, 1, 2], jobs=jobs, runs=runs, tests=tests,
        grid={j.key: runs[j.key] for j in jobs if j.seed == 0}, chosen={n: Choice({}, 2, val[2]) for n in entries},
        base={r: ["x"] * 4 for r in base}, labels={r: r.upper() for r in base},
        eval_scores={"reference": [0.5] * 4, **{r: [1.0] * 4 for r in base}}, training_scores=None, gap_validation={"diff": 1.0},
        val_reference={"student_init": {"win_rate": 10.0, "rougeL": 10.0}}, n_val=5, sft_logs={}, sft_choices={},
        calibration=cal if calibrated else None)
    return cfg, bench, scored


def test_every_row_carries_its_calibration_with_intervals_and_paired_differences(tmp_path):
    cfg, bench, scored = _records(tmp_path)
    results = summarize(cfg, bench, scored)
    base, (plad, seqkd) = results["base_rows"], results["rows"]
    teacher, init, sft = (base[r]["calibration"] for r in ("teacher", "student_init", "student_sft"))
    for row in (teacher, init, sft, plad["calibration"], seqkd["calibration"]):
        assert set(row) == {"pairwise_accuracy", "kendall_tau", "rerank_win_rate", "seeds", "vs_sft", "vs_seqkd"}
        for m in ("pairwise_accuracy", "kendall_tau", "rerank_win_rate"):
            assert row[m]["ci"][0] <= row[m]["value"] <= row[m]["ci"][1]
        assert row["pairwise_accuracy"]["n"] == 3 and row["rerank_win_rate"]["n"] == 4  # the all-tied prompt ranks nothing
    assert (teacher["pairwise_accuracy"]["value"], teacher["kendall_tau"]["value"]) == (100.0, pytest.approx(1.0))
    assert (init["pairwise_accuracy"]["value"], init["kendall_tau"]["value"]) == (0.0, pytest.approx(-1.0))
    assert (sft["pairwise_accuracy"]["value"], sft["kendall_tau"]["value"]) == (50.0, 0.0)
    # Re-ranking: the judge's best wins on the three ranked prompts and everything ties a reference at 0.5 on the last
    # (1 of 1); the reversed order picks the worst (0 on three, 1 on the last); all tied averages (1/3 each, then 1).
    assert teacher["rerank_win_rate"]["value"] == 100.0 and init["rerank_win_rate"]["value"] == 25.0
    assert sft["rerank_win_rate"]["value"] == pytest.approx(100 * (3 * (1 / 3) + 1) / 4)
    assert plad["calibration"]["seeds"] == 2 and plad["calibration"]["kendall_tau"]["value"] == pytest.approx(1.0)
    assert plad["calibration"]["vs_sft"]["pairwise_accuracy"]["diff"] == pytest.approx(50.0)
    assert plad["calibration"]["vs_sft"]["kendall_tau"]["diff"] == pytest.approx(1.0)  # τ as it is, not ×100
    assert plad["calibration"]["vs_seqkd"]["pairwise_accuracy"]["seeds"] == [2, 2]
    assert sft["vs_sft"] is None and seqkd["calibration"]["vs_seqkd"] is None  # never against itself
    assert init["vs_sft"]["pairwise_accuracy"]["diff"] == pytest.approx(-50.0) and init["vs_sft"]["pairwise_accuracy"]["groups"] == 2
    summary = results["calibration"]
    assert summary["n_prompts"] == 4 and summary["candidates_per_prompt"] == 3.0 and summary["ranked_prompts"] == 3
    assert summary["teacher_share"] == pytest.approx(2 / 3) and summary["oracle_rerank_win_rate"]["value"] == 100.0
    assert results["phases_wall_s"]["plad"]["calibration"] == 0.4
    report = build_bench_report(tmp_path / "report", results)
    assert "## Calibration (PLaD's claim)" in report and "| TEACHER | 100.0 [100.0, 100.0] | 1.00 [1.00, 1.00] |" in report
    assert (tmp_path / "report" / "plots" / "calibration.png").stat().st_size > 1000
    json.dumps(results)


def test_an_older_bench_without_calibration_still_summarises(tmp_path):
    cfg, bench, scored = _records(tmp_path, calibrated=False)
    fields = {f.name: getattr(scored, f.name) for f in dataclasses.fields(Scored) if f.name != "calibration"}
    old = Scored(**fields)  # built as before the field existed
    results = summarize(cfg, bench, old)
    assert results["calibration"] is None and all(r["calibration"] is None for r in results["rows"])
    assert all(r["calibration"] is None for r in results["base_rows"].values())
    assert "Calibration (PLaD's claim)" not in build_bench_report(tmp_path / "report", results)
    # One seed of a method tested before calibration: that row has none; the others keep theirs.
    cfg, bench, partial = _records(tmp_path, missing_job=True)
    plad, seqkd = summarize(cfg, bench, partial)["rows"]
    assert plad["calibration"] is None and seqkd["calibration"]["vs_seqkd"] is None and seqkd["calibration"]["vs_sft"]


def test_candidates_drop_empty_and_repeated_samples_keeping_the_first():
    texts, sources = dedupe({"teacher": ["a b", " ", "c", "a b "], "student": ["c", "d", ""]})
    assert texts == ["a b", "c", "d"] and sources == ["teacher", "teacher", "student"]
    assert dedupe({"teacher": [], "student": [""]}) == ([], [])


def test_records_round_trip():
    cands = CandidateSet("x", {"k": 1}, ["a"], [["y"]], [["teacher"]], [[0.5]], [0.1])
    assert CandidateSet.from_json(json.loads(json.dumps(cands.to_json()))) == cands
    scores = CandidateScores("x", None, 1.0, "text only")
    assert CandidateScores.from_json(scores.to_json()) == scores
    test = {"step": 2, "generations": ["a"], "judge_scores": [0.1], "training_judge_scores": None, "eval_wall_s": 1.0,
            "generation_wall_s": 0.5, "grading_wall_s": 0.5, "calibration_wall_s": 0.3}
    assert TestResult.from_json(test).to_json() == test and TestResult.from_json(test).calibration_wall_s == 0.3
