"""The bench's typed records: they read and write the run folder's JSON layout unchanged, and the numbers are
computed from them (summarize on hand-made records, no model or judge)."""
import json

import pytest

from prefdistill.bench.numbers import summarize
from prefdistill.bench.plan import Job, settings_hash
from prefdistill.bench.records import PHASE_TOTALS, PHASES, Choice, Cost, JobResult, Scored, TestResult, phases
from prefdistill.config.checks import load_bench_config
from prefdistill.models.tiny import tiny_config
from prefdistill.reporting.bench_report import build_bench_report
from prefdistill.reporting.phases import phase_table

RESULT = {  # a result.json as the bench has written it since jobs had a settings hash
    "job": {"entry": "plad", "seed": 1, "setting": {"beta": 0.5, "lr": 0.001}, "data_share": 0.5, "relabel_share": 0.0,
            "settings": "a1b2c3"},
    "method": "plad", "label": "PLaD", "steps": 16,
    "val": {"8": {"win_rate": 40.0, "rougeL": 20.0, "word_count": 12.5}, "16": {"win_rate": 45.0, "rougeL": 21.0, "word_count": 11.0}},
    "cost": {"rows": 32, "steps": 16, "train_wall_s": 12.3, "peak_memory_mb": 812.4, "memory_kind": "process RSS",
             "data_teacher_generated": 900, "data_student_generated": 700, "count_samples": 0.0, "tokens_teacher_scored": 1234.0},
    "final_loss": 0.69,
}


def test_a_result_json_round_trips_through_its_record_and_reads_typed():
    result = JobResult.from_json(json.loads(json.dumps(RESULT)))
    assert json.dumps(result.to_json()) == json.dumps(RESULT)  # same keys, values and order
    assert result.job == Job("plad", 1, (("beta", 0.5), ("lr", 0.001)), 0.5, 0.0, settings="a1b2c3")
    assert result.job.key == "plad-a1b2c3-beta0.5-lr0.001-seed1-data0.5-relabel0"
    assert sorted(result.val) == [8, 16] and result.val[16]["win_rate"] == 45.0
    assert result.cost.data_tokens == {"data_teacher_generated": 900, "data_student_generated": 700}
    assert result.cost.counts == {"count_samples": 0.0, "tokens_teacher_scored": 1234.0}
    assert "memory_kind" not in result.cost.numbers() and result.cost.numbers()["rows"] == 32
    empty = JobResult.from_json({**RESULT, "final_loss": None})
    assert empty.final_loss is None and empty.to_json()["final_loss"] is None
    assert result.oracle is None and "oracle" not in result.to_json()  # a method that asks no oracle, or a file from before
    teacher = {**RESULT, "oracle": "teacher (τ=0.3)"}  # a win-rate job names the oracle it trained with
    assert JobResult.from_json(teacher).oracle == "teacher (τ=0.3)" and JobResult.from_json(teacher).to_json() == teacher


def test_test_results_and_choices_round_trip():
    test = {"step": 8, "generations": ["a b", "c"], "judge_scores": [0.1, -0.2], "training_judge_scores": None, "eval_wall_s": 1.5}
    assert TestResult.from_json(test).to_json() == test and TestResult.from_json(test).training_judge_scores is None
    judged = {**test, "training_judge_scores": [0.3, 0.4]}
    assert TestResult.from_json(judged).to_json() == judged
    choice = {"setting": {"lr": 0.001}, "step": 16, "val": {"win_rate": 45.0, "rougeL": 21.0}}
    assert Choice.from_json(choice).to_json() == choice


def test_phase_timings_round_trip_and_split_the_wall_times():
    """A job timed by phase: sampling and validation inside train_wall_s, generation and grading inside eval_wall_s."""
    timed = {**RESULT, "cost": {**RESULT["cost"], "sampling_wall_s": 5.0, "validation_wall_s": 2.3}}
    result = JobResult.from_json(json.loads(json.dumps(timed)))
    assert result.to_json() == timed and result.cost.counts == JobResult.from_json(RESULT).cost.counts
    assert (result.cost.sampling_wall_s, result.cost.validation_wall_s) == (5.0, 2.3)
    test = {"step": 8, "generations": ["a"], "judge_scores": [0.1], "training_judge_scores": None, "eval_wall_s": 4.0,
            "generation_wall_s": 3.5, "grading_wall_s": 0.5}
    assert TestResult.from_json(test).to_json() == test
    split = phases(result, TestResult.from_json(test))
    assert tuple(split) == PHASE_TOTALS + PHASES
    assert split == {"train_wall": 12.3, "test_wall": 4.0, "training": 5.0, "sampling": 5.0, "validation": 2.3,
                     "test_generation": 3.5, "grading": 0.5, "calibration": None}  # tested before calibration was timed
    old = phases(JobResult.from_json(RESULT), None)  # a job trained before the timers: the totals only
    assert old["train_wall"] == 12.3 and all(old[p] is None for p in PHASES) and old["test_wall"] is None
    table = phase_table({"plad": split, "old": old}, {"plad": "PLaD"})
    assert "| PLaD | 12.3 | 5.0 | 5.0 | 2.3 | 4.0 | 3.5 | 0.5 | — | 41% |" in table and "| old | 12.3 | — |" in table


REFS = ["the model learns", "data results", "a summary", "short text"]


def _result(job: Job, val: dict, counts: dict, train_s: float) -> JobResult:
    cost = Cost(8, 2, train_s, 100.0, "process RSS", counts=counts, sampling_wall_s=train_s / 2, validation_wall_s=train_s / 10)
    return JobResult(job, job.entry, job.entry.upper(), 2, val, cost, 0.5)


def _test(scores: list[float], eval_s: float) -> TestResult:
    return TestResult(2, ["the model learns"] * 4, scores, None, eval_s, 0.75 * eval_s, 0.25 * eval_s)


@pytest.fixture
def scored(tmp_path):
    paths = {k: tmp_path / k for k in ("teacher", "student", "data", "encoder")}
    data = tiny_config(paths, tmp_path, name="b")
    data["bench"] = {"methods": [{"name": "plad", "method": "plad"}, {"name": "seqkd", "method": "seqkd"}], "seeds": [0, 1]}
    cfg, bench = load_bench_config(data)
    plad, seqkd = ({m.name: m for m in bench.methods}[n] for n in ("plad", "seqkd"))
    jobs = [Job(e.name, s, settings=settings_hash(e)) for e in (plad, seqkd) for s in (0, 1)]
    good, bad = {1: {"win_rate": 60.0, "rougeL": 30.0}, 2: {"win_rate": 70.0, "rougeL": 35.0}}, {2: {"win_rate": 5.0, "rougeL": 35.0}}
    runs = {jobs[0].key: _result(jobs[0], good, {"count_samples": 4.0}, 10.0), jobs[1].key: _result(jobs[1], bad, {}, 20.0),
            jobs[2].key: _result(jobs[2], good, {}, 1.0), jobs[3].key: _result(jobs[3], good, {}, 3.0)}
    tests = {jobs[0].key: _test([1.0] * 4, 1.0), jobs[1].key: _test([0.0] * 4, 3.0),  # plad wins every prompt on seed 0, none on 1
             jobs[2].key: _test([1.0, 0.0, 1.0, 0.0], 2.0), jobs[3].key: _test([1.0, 0.0, 1.0, 0.0], 2.0)}
    half = [0.5] * 4
    return cfg, bench, Scored(
        references=REFS, groups=[0, 1, 2, 3], jobs=jobs, runs=runs, tests=tests, grid={j.key: runs[j.key] for j in jobs if j.seed == 0},
        chosen={e.name: Choice({}, 2, good[2]) for e in (plad, seqkd)}, base={r: ["x"] * 4 for r in ("teacher", "student_init", "student_sft")},
        labels={"teacher": "Teacher", "student_init": "Student", "student_sft": "SFT"},
        eval_scores={"reference": half, "teacher": [1.0] * 4, "student_init": [0.0] * 4, "student_sft": [0.0] * 4},
        training_scores=None, gap_validation={"diff": 10.0}, val_reference={"student_init": {"win_rate": 10.0, "rougeL": 10.0}},
        n_val=5, sft_logs={}, sft_choices={})


def test_summarize_computes_the_numbers_from_the_records(scored, tmp_path):
    cfg, bench, records = scored
    results = summarize(cfg, bench, records)
    plad, seqkd = results["rows"]
    assert (plad["name"], plad["label"], seqkd["label"]) == ("plad", "PLAD", "SEQKD")
    assert plad["oracle"] is None and seqkd["oracle"] is None  # neither asks an oracle (a win-rate row names its own)
    assert plad["per_seed_win_rate"] == [100.0, 0.0] and plad["win_rate"] == pytest.approx(50.0)
    assert seqkd["per_seed_win_rate"] == [50.0, 50.0]
    assert plad["selected"] == {"setting": {}, "step": 2, "val": {"win_rate": 70.0, "rougeL": 35.0}}
    assert plad["curves"] == {"0": {"1": {"win_rate": 60.0, "rougeL": 30.0}, "2": {"win_rate": 70.0, "rougeL": 35.0}},
                              "1": {"2": {"win_rate": 5.0, "rougeL": 35.0}}}
    assert plad["grid"] == [{"setting": {}, "val": plad["curves"]["0"]}]
    # Seed 1 fell below the initial student's validation win rate at step 2; nothing else did.
    assert plad["collapse"] == [{"seed": 1, "setting": {}, "step": 2, "metric": "win_rate", "value": 5.0, "floor": 10.0}]
    assert seqkd["collapse"] == []
    cost = results["costs"]["plad"]  # means over seeds; a counter one seed lacks counts 0 there
    assert cost["count_samples"] == 2.0 and cost["train_wall_s"] == 15.0 and cost["eval_wall_s"] == 2.0
    assert cost["memory_kind"] == "process RSS" and cost["label"] == "PLAD" and plad["cost"] == cost
    assert results["wall_s"]["jobs"] == pytest.approx(10 + 1 + 20 + 3 + 1 + 2 + 3 + 2)
    assert seqkd["vs_seqkd"] is None and plad["vs_seqkd"]["diff"] == pytest.approx(0.0)
    assert results["n_val"] == 5 and results["teacher_gap_validation"] == {"diff": 10.0}
    assert results["teacher_gap"]["diff"] == pytest.approx(100.0)  # the teacher beats every reference, the SFT student none
    assert results["phases_wall_s"]["plad"] == {"train_wall": 15.0, "test_wall": 2.0, "training": 6.0, "sampling": 7.5,
                                                "validation": 1.5, "test_generation": 1.5, "grading": 0.5,
                                                "calibration": None}  # means over seeds; no calibration timed
    assert cost["sampling_wall_s"] == 7.5 and cost["validation_wall_s"] == 1.5
    assert "## Wall time by phase" in build_bench_report(tmp_path, results)
    json.dumps(results)  # JSON-ready


def test_summarize_checks_the_judge_on_the_rows_outputs(scored, tmp_path):
    """results.json's judge_check from a hand-made Scored: every base row and method row, similarity and prompts given."""
    import dataclasses

    cfg, bench, records = scored
    loops = ["the data of the data of the data of the data"] * 4  # the initial student loops, and the judge likes it
    sims = {**{r: [0.1 * (i + 1)] * 4 for i, r in enumerate(records.base)}, **{k: [0.5] * 4 for k in records.tests}}
    records = dataclasses.replace(records, base={**records.base, "student_init": loops},
                                  eval_scores={**records.eval_scores, "student_init": [1.0] * 4},
                                  prompts=[f"Summarize text {i}." for i in range(4)], similarity=sims)
    check = summarize(cfg, bench, records)["judge_check"]
    assert list(check["rows"]) == ["teacher", "student_init", "student_sft", "plad", "seqkd"]
    assert check["rows"]["student_init"]["accuracy"] == 0.0 and check["rows"]["student_init"]["degenerate"]["kinds"] == {"loop": 4}
    assert check["rows"]["plad"]["n"] == 8  # two seeds of four prompts
    assert check["rows"]["plad"]["accuracy"] == pytest.approx(0.5)  # seed 0 beat every reference, seed 1 none
    assert check["verdict"]["cannot_tell_degenerate"]
    ra = {t["row"]: t for t in check["rank_agreement"]["rows"]}
    assert ra["student_sft"]["similarity"] == pytest.approx(0.3) and ra["plad"]["similarity"] == pytest.approx(0.5)
    assert ra["teacher"]["win_rate"] == 100.0 and check["rank_agreement"]["n_rows"] == 5
    first = check["sample"][0]  # a degenerate output the judge preferred ("x" by the teacher is one too: no content word)
    assert first["degenerate"] and first["judge_prefers"] == "output" and first["prompt_head"].startswith("Summarize text")
    assert "student_init" in {s["row"] for s in check["sample"]}
    results = summarize(cfg, bench, records)
    report = build_bench_report(tmp_path, results)
    assert "## Is the judge right on model text?" in report and "**The judge cannot tell degenerate outputs" in report
    assert "Spearman ρ" in report and "Outputs to check by hand" in report
    from prefdistill.reporting.bench_report import console_summary

    assert "Judge check: the judge cannot tell degenerate outputs" in console_summary(results)
    json.dumps(results)


def test_a_scored_without_similarity_still_checks_the_judge(scored):
    cfg, bench, records = scored  # made as before the judge check: no prompts, no similarity
    check = summarize(cfg, bench, records)["judge_check"]
    assert check["rank_agreement"]["similarity"] == {"spearman": None, "kendall": None}
    assert all(s["prompt_head"] == "" for s in check["sample"])
