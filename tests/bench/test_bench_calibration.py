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
        assert set(row) == {"pairwise_accuracy", "within_source_accuracy", "cross_source_accuracy", "kendall_tau",
                            "rerank_win_rate", "seeds", "vs_sft", "vs_seqkd"}
        for m in ("pairwise_accuracy", "kendall_tau", "rerank_win_rate"):
            assert row[m]["ci"][0] <= row[m]["value"] <= row[m]["ci"][1]
        assert row["pairwise_accuracy"]["n"] == 3 and row["rerank_win_rate"]["n"] == 4  # the all-tied prompt ranks nothing
    assert (teacher["pairwise_accuracy"]["value"], teacher["kendall_tau"]["value"]) == (100.0, pytest.approx(1.0))
    assert (init["pairwise_accuracy"]["value"], init["kendall_tau"]["value"]) == (0.0, pytest.approx(-1.0))
    assert (sft["pairwise_accuracy"]["value"], sft["kendall_tau"]["value"]) == (50.0, 0.0)
    # sources (teacher, teacher, student): one pair within the teacher's samples, two across, per ranked prompt
    assert (teacher["within_source_accuracy"]["value"], teacher["cross_source_accuracy"]["value"]) == (100.0, 100.0)
    assert (init["within_source_accuracy"]["value"], init["cross_source_accuracy"]["value"]) == (0.0, 0.0)
    assert teacher["within_source_accuracy"]["n"] == 3 and plad["calibration"]["vs_sft"]["cross_source_accuracy"]["diff"] == pytest.approx(50.0)
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
    assert "## Calibration (PLaD's claim)" in report and "| TEACHER | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] | 1.00 [1.00, 1.00] |" in report
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


def test_the_calibration_section_is_typed_on_by_default_and_can_be_turned_off(tiny_assets, tmp_path):
    from types import SimpleNamespace

    from prefdistill.errors import ConfigError

    data = tiny_config(tiny_assets, tmp_path, name="b")
    data["bench"] = {"methods": [{"name": "seqkd", "method": "seqkd"}]}
    _, bench = load_bench_config(data)
    assert bench.calibration.enabled and (bench.calibration.teacher_samples, bench.calibration.student_samples) == (4, 4)
    with pytest.raises(ConfigError, match="unknown key 'bench.calibration.samples'"):
        load_bench_config(data, ["bench.calibration.samples=3"])
    with pytest.raises(ConfigError, match="bench.calibration.temperature: must be > 0"):
        load_bench_config(data, ["bench.calibration.temperature=0"])
    _, off = load_bench_config(data, ["bench.calibration.enabled=false"])
    runner = SimpleNamespace(bench=off)  # nothing else is read when it is off: no sampling, scoring or files
    assert calibration.candidate_set(runner) is None and calibration.gather(runner, [], {}) is None
    assert calibration.score_job(runner, None, 1, None) is None and calibration.prepare(runner) is None


def test_records_round_trip():
    cands = CandidateSet("x", {"k": 1}, ["a"], [["y"]], [["teacher"]], [[0.5]], [0.1])
    assert CandidateSet.from_json(json.loads(json.dumps(cands.to_json()))) == cands
    scores = CandidateScores("x", None, 1.0, "text only")
    assert CandidateScores.from_json(scores.to_json()) == scores
    test = {"step": 2, "generations": ["a"], "judge_scores": [0.1], "training_judge_scores": None, "eval_wall_s": 1.0,
            "generation_wall_s": 0.5, "grading_wall_s": 0.5, "calibration_wall_s": 0.3}
    assert TestResult.from_json(test).to_json() == test and TestResult.from_json(test).calibration_wall_s == 0.3


# ----------------------------------------------------------------------------- the tiny bench, end to end


@pytest.fixture(scope="module")
def tiny(tiny_assets, tmp_path_factory):
    """The tiny bench at its smallest (PLaD and SeqKD, one seed, no grid) with calibration on, as configured by default."""
    from prefdistill.bench.runner import Bench

    data = tiny_config(tiny_assets, tmp_path_factory.mktemp("calibration"), name="c")
    data["bench"] = {"methods": [{"name": "plad", "method": "plad", "params": {"beta": 0.5}}, {"name": "seqkd", "method": "seqkd"}],
                     "seeds": [0]}
    cfg, bench = load_bench_config(data)
    results = Bench(cfg, bench, ignore_gap=True).run()
    return {"cfg": cfg, "bench": bench, "results": results, "root": cfg.run_dir / "bench"}


def _test_split(tiny):
    from prefdistill.run.pipeline import Pipeline

    return Pipeline(tiny["cfg"]).artifacts.splits["test"]


def _tested(tiny):
    steps = read_json(tiny["root"] / "main" / "selection.json")
    entries = {m.name: m for m in tiny["bench"].methods}
    return [(Job(n, 0, settings=settings_hash(entries[n])).key, steps[n]["step"]) for n in entries]


def test_the_candidate_set_is_made_once_and_graded(tiny):
    test = _test_split(tiny)
    cands = CandidateSet.from_json(read_json(tiny["root"] / "calibration" / "candidates.json"))
    assert cands.ids == [e.id for e in test] and len(cands.reference_scores) == len(test)
    assert cands.settings == {"teacher_samples": 4, "student_samples": 4, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 8, "seed": 0}
    for texts, sources, judged in zip(cands.candidates, cands.sources, cands.judge_scores):
        assert 1 <= len(texts) <= 8 and len(sources) == len(judged) == len(texts)
        assert all(t.strip() for t in texts) and len({t.strip() for t in texts}) == len(texts)  # no empty or repeated candidate
        assert sources == sorted(sources, key=["teacher", "student"].index)  # the teacher's first
    for row in ("teacher", "student"):  # resumable samples of both sources, K each
        samples = [json.loads(line) for line in (tiny["root"] / "calibration" / "samples" / ("student_sft" if row == "student" else row)
                                                 / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == len(test) and all(len(s["samples"]) == 4 for s in samples)


def test_every_row_scores_the_candidates_by_length_normalised_likelihood(tiny):
    from prefdistill.models import load_model

    cands = CandidateSet.from_json(read_json(tiny["root"] / "calibration" / "candidates.json"))
    for row in ("teacher", "student_init", "student_sft"):
        rec = CandidateScores.from_json(read_json(tiny["root"] / "calibration" / f"{row}.json"))
        assert rec.candidates == cands.id and [len(s) for s in rec.scores] == [len(c) for c in cands.candidates], row
    sft = CandidateScores.from_json(read_json(tiny["root"] / "calibration" / "student_sft.json"))
    lm = load_model(tiny["cfg"].student, checkpoint=tiny["cfg"].run_dir / "checkpoints" / "student_sft")
    prompt = next(e.prompt for e in _test_split(tiny) if e.id == cands.ids[0])
    direct = lm.score([prompt] * len(cands.candidates[0]), cands.candidates[0], normalize=True)
    assert direct == pytest.approx(sft.scores[0], abs=1e-4)
    for key, step in _tested(tiny):
        rec = CandidateScores.from_json(read_json(tiny["root"] / "runs" / key / f"calibration_step{step}.json"))
        test = TestResult.from_json(read_json(tiny["root"] / "runs" / key / f"test_step{step}.json"))
        assert rec.candidates == cands.id and test.calibration_wall_s == rec.wall_s >= 0


def test_results_and_report_carry_each_rows_calibration(tiny):
    results = tiny["results"]
    rows = [*results["base_rows"].values(), *results["rows"]]
    for row in rows:
        cal = row["calibration"]
        for m in ("pairwise_accuracy", "kendall_tau", "rerank_win_rate"):
            assert cal[m]["ci"][0] <= cal[m]["value"] <= cal[m]["ci"][1] and cal[m]["groups"] >= 1
        for key in ("vs_sft", "vs_seqkd"):
            assert cal[key] is None or all(len(cal[key][m]["ci"]) == 2 for m in ("pairwise_accuracy", "kendall_tau", "rerank_win_rate"))
    assert results["base_rows"]["student_sft"]["calibration"]["vs_sft"] is None
    assert results["rows"][1]["calibration"]["vs_seqkd"] is None and results["rows"][0]["calibration"]["vs_seqkd"] is not None
    assert results["calibration"]["n_prompts"] == len(_test_split(tiny))
    assert all(p["calibration"] is not None for p in results["phases_wall_s"].values())
    report = (tiny["root"] / "main" / "report.md").read_text()
    assert "## Calibration (PLaD's claim)" in report and (tiny["root"] / "main" / "plots" / "calibration.png").is_file()


def test_a_resumed_bench_scores_nothing_again(tiny, monkeypatch):
    from prefdistill.bench.runner import Bench

    def refuse(*args, **kwargs):
        raise AssertionError("scored or sampled again")

    monkeypatch.setattr(calibration, "score_candidates", refuse)
    monkeypatch.setattr(calibration, "build_candidates", refuse)
    again = Bench(tiny["cfg"], tiny["bench"], ignore_gap=True).run()
    assert [r["calibration"] for r in again["rows"]] == [r["calibration"] for r in tiny["results"]["rows"]]
    assert again["calibration"] == tiny["results"]["calibration"]


def test_a_job_unit_scores_the_candidates_from_its_tested_weights(tiny, tmp_path):
    """`--job KEY` (what workers and Slurm tasks run) trains, tests and scores a lost job again, to the same numbers."""
    from prefdistill.bench.runner import Bench
    from prefdistill.bench.units import run_key

    key, step = _tested(tiny)[0]
    folder = tiny["root"] / "runs" / key
    before = read_json(folder / f"calibration_step{step}.json")
    shutil.move(str(folder), str(tmp_path / key))
    assert run_key(Bench(tiny["cfg"], tiny["bench"], ignore_gap=True), key) is True
    after = read_json(folder / f"calibration_step{step}.json")
    assert after["candidates"] == before["candidates"]
    assert [s for p in after["scores"] for s in p] == pytest.approx([s for p in before["scores"] for s in p], abs=1e-4)
    assert TestResult.from_json(read_json(folder / f"test_step{step}.json")).calibration_wall_s is not None
    # The plain run after it trains and scores nothing, and its numbers are the first run's.
    again = Bench(tiny["cfg"], tiny["bench"], ignore_gap=True).run()
    assert [r["calibration"] for r in again["rows"]] == [r["calibration"] for r in tiny["results"]["rows"]]
