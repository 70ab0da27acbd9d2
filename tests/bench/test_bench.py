"""`prefdistill bench`: job planning, choice on validation, nested data shares, config checks, the teacher-gap
stop, and a tiny end-to-end bench (through the CLI) with its resume."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from prefdistill.bench.plan import (Job, as_setting, choose, collapse, scored_steps, seed_jobs, selection_jobs, settings,
                                    settings_hash, subset)
from prefdistill.bench import runner
from prefdistill.bench.runner import Bench
from prefdistill.cli import main
from prefdistill.config.checks import load_bench_config
from prefdistill.config.schema import ConfigError
from prefdistill.errors import TeacherGapError
from prefdistill.evaluation.metrics import bootstrap_ci, summarize_generations, summarize_seeds
from prefdistill.io import read_json, read_jsonl
from prefdistill.models.tiny import tiny_config
from prefdistill.run.folder import BenchFolder
from prefdistill.run.pipeline import Pipeline

METHODS = [{"name": "kd", "method": "kd"}, {"name": "plad", "method": "plad", "params": {"beta": 0.5}},
           {"name": "seqkd", "method": "seqkd"}]


def _bench_cfg(tiny_assets, tmp_path, **bench):
    data = tiny_config(tiny_assets, tmp_path, name="b")
    data["bench"] = {"methods": [dict(m) for m in METHODS], "seeds": [0], **bench}
    return data


def _load(tiny_assets, tmp_path, **bench):
    return load_bench_config(_bench_cfg(tiny_assets, tmp_path, **bench))


LR = [(("lr", 1e-3),), (("lr", 3e-3),)]


# ----------------------------------------------------------------------------- planning


def test_selection_jobs_cover_every_grid_point_of_every_entry_on_the_first_seed(tiny_assets, tmp_path):
    data = _bench_cfg(tiny_assets, tmp_path, seeds=[3, 4], grid={"lr": [1e-3, 3e-3]})
    data["bench"]["methods"][1]["grid"] = {"beta": [0.1, 0.5]}  # added to bench.grid for plad only
    _, bench = load_bench_config(data)
    jobs = selection_jobs(bench)
    assert {j.seed for j in jobs} == {3} and all(j.is_main for j in jobs)
    got = {(j.entry, j.setting) for j in jobs}
    plad = {(("beta", b), ("lr", lr)) for b in (0.1, 0.5) for lr in (1e-3, 3e-3)}
    assert got == {("kd", s) for s in LR} | {("seqkd", s) for s in LR} | {("plad", s) for s in plad}
    assert len(jobs) == 8 and len({j.key for j in jobs}) == 8
    # An entry's own grid key replaces bench.grid's.
    data["bench"]["methods"][0]["grid"] = {"lr": [5e-4]}
    assert [j.setting for j in selection_jobs(load_bench_config(data)[1]) if j.entry == "kd"] == [(("lr", 5e-4),)]
    # No grid at all: one job per entry with the configured lr.
    _, plain = _load(tiny_assets, tmp_path, seeds=[3, 4])
    assert [(j.entry, j.seed, j.setting) for j in selection_jobs(plain)] == [("kd", 3, ()), ("plad", 3, ()), ("seqkd", 3, ())]


def test_seed_jobs_train_the_chosen_setting_on_the_other_seeds_and_sweep_on_the_first(tiny_assets, tmp_path):
    _, bench = _load(tiny_assets, tmp_path, seeds=[3, 4, 5], grid={"lr": [1e-3, 3e-3]}, data_shares=[0.5, 1.0],
                     data_share_methods=["plad"], relabel_shares=[0.0, 1.0])
    chosen = {"kd": LR[0], "plad": LR[1], "seqkd": LR[0]}
    jobs = seed_jobs(bench, chosen)
    main_jobs = [j for j in jobs if j.is_main]
    assert sorted((j.entry, j.seed) for j in main_jobs) == [(e, s) for e in ("kd", "plad", "seqkd") for s in (4, 5)]
    assert all(j.setting == chosen[j.entry] for j in jobs)
    sweeps = [(j.entry, j.seed, j.data_share, j.relabel_share) for j in jobs if not j.is_main]
    assert sweeps == [("plad", 3, 0.5, 0.0), ("plad", 3, 1.0, 1.0)]  # shares 1.0 / 0.0 are the first seed's selection job
    first = {j.key for j in selection_jobs(bench)}
    assert len({j.key for j in jobs}) == len(jobs) and not first & {j.key for j in jobs}
    # The chosen first-seed job is one of the selection jobs (its weights are reused, not retrained).
    for name, point in chosen.items():
        entry = next(m for m in bench.methods if m.name == name)
        assert Job(name, 3, point, settings=settings_hash(entry)).key in first
    # data_share_methods None: every entry is swept.
    _, everyone = _load(tiny_assets, tmp_path, seeds=[3], data_shares=[0.5])
    assert sorted(j.entry for j in seed_jobs(everyone, {"kd": (), "plad": (), "seqkd": ()})) == ["kd", "plad", "seqkd"]
    # An ablation entry with its own, fewer seeds: its grid on its first seed, no other seed.
    data = _bench_cfg(tiny_assets, tmp_path, seeds=[3, 4])
    data["bench"]["methods"][0]["seeds"] = [7]
    _, ablation = load_bench_config(data)
    assert [(j.entry, j.seed) for j in selection_jobs(ablation)] == [("kd", 7), ("plad", 3), ("seqkd", 3)]
    assert sorted((j.entry, j.seed) for j in seed_jobs(ablation, {"kd": (), "plad": (), "seqkd": ()})) == [("plad", 4), ("seqkd", 4)]


def test_job_keys_follow_the_entry_params_and_the_grid_point(tiny_assets, tmp_path):
    a = selection_jobs(_load(tiny_assets, tmp_path, grid={"lr": [1e-3, 3e-3]})[1])
    data = _bench_cfg(tiny_assets, tmp_path, grid={"lr": [1e-3, 3e-3]})
    data["bench"]["methods"][1]["params"] = {"beta": 2.0}
    b = selection_jobs(load_bench_config(data)[1])
    keys_a, keys_b = {(j.entry, j.setting): j.key for j in a}, {(j.entry, j.setting): j.key for j in b}
    for point in LR:
        assert keys_a[("kd", point)] == keys_b[("kd", point)]
        assert keys_a[("plad", point)] != keys_b[("plad", point)]  # edited params: new jobs
    assert keys_a[("kd", LR[0])] != keys_a[("kd", LR[1])]  # another grid point: another job
    # Adding a grid value keeps the jobs already run (their keys do not depend on the rest of the grid).
    c = selection_jobs(_load(tiny_assets, tmp_path, grid={"lr": [1e-3, 3e-3, 1e-2]})[1])
    assert {j.key for j in a} < {j.key for j in c}
    # A job's key does not depend on how the setting was spelt (dict, JSON pairs or tuple).
    job = next(j for j in a if j.entry == "kd")
    assert as_setting(dict(job.setting)) == as_setting([list(p) for p in job.setting]) == job.setting
    assert Job("kd", 0, as_setting({"lr": 1e-3}), settings="x").key == Job("kd", 0, (("lr", 1e-3),), settings="x").key


def test_an_entrys_own_oracle_is_part_of_its_job_key():
    import dataclasses
    import hashlib

    from prefdistill.config.schema import BenchMethod, OracleConfig

    plain = BenchMethod("wind", "wind", {"samples": 2})
    variants = [plain, *(dataclasses.replace(plain, oracle=o) for o in (
        OracleConfig(kind="teacher", temperature=0.3), OracleConfig(kind="teacher", temperature=1.0), OracleConfig()))]
    hashes = [settings_hash(v) for v in variants]
    assert len(set(hashes)) == 4  # same name, method and params: the oracle alone makes another job
    assert len({Job("wind", 0, settings=h).key for h in hashes}) == 4
    # Without an oracle of its own an entry keeps the key it had before entries could have one: its finished jobs count.
    assert hashes[0] == hashlib.sha256(json.dumps({"method": "wind", "params": {"samples": 2}}, sort_keys=True).encode()).hexdigest()[:6]


def test_an_entrys_own_oracle_reaches_its_training_job_and_its_row(tiny_assets, tmp_path, monkeypatch):
    from prefdistill.bench.plan import scored_steps
    from prefdistill.io import write_json
    from prefdistill.training.job import TrainResult
    from prefdistill.training.loop import total_steps

    data = _bench_cfg(tiny_assets, tmp_path)
    wind = {"method": "wind", "params": {"samples": 2, "max_new_tokens": 4}}
    data["bench"]["methods"] += [{"name": "wind", **wind, "oracle": {"kind": "teacher", "temperature": 0.3}},
                                 {"name": "wind_judge", **wind}]
    cfg, bench = load_bench_config(data)
    b, given = Bench(cfg, bench), {}

    def fake_train_job(job, art):  # what a job was handed; its validation scores as the hook would write them
        given[job.out.parent.name] = job.oracle
        for step in scored_steps(bench, total_steps(job.train, len(job.data.rows))):
            write_json(b.paths.val_scores(job.out.parent.name, step), {"scores": {"win_rate": 50.0, "rougeL": 1.0}})
        return TrainResult(job.out, [{"step": 1, "loss": 0.5}], 0.0)

    monkeypatch.setattr(runner, "train_job", fake_train_job)
    results = {j.entry: b.train(j) for j in selection_jobs(bench) if j.entry in ("wind", "wind_judge", "kd")}
    by_entry = {k.split("-")[0]: v for k, v in given.items()}
    assert by_entry["wind"] == bench.methods[3].oracle and by_entry["wind_judge"] is None  # None: the run's oracle
    assert {e: r.oracle for e, r in results.items()} == {"wind": "teacher (τ=0.3)", "wind_judge": "judge (τ=1)", "kd": None}
    again = {e: runner.JobResult.from_json(read_json(b.paths.result(r.job.key))) for e, r in results.items()}
    assert again == results  # result.json keeps each row's oracle


def test_settings_are_the_grid_product_in_a_fixed_order(tiny_assets, tmp_path):
    data = _bench_cfg(tiny_assets, tmp_path, grid={"lr": [3e-3, 1e-3]})
    data["bench"]["methods"][1]["grid"] = {"beta": [0.5, 0.1]}
    _, bench = load_bench_config(data)
    assert settings(bench.methods[1], bench) == [(("beta", 0.5), ("lr", 3e-3)), (("beta", 0.5), ("lr", 1e-3)),
                                                 (("beta", 0.1), ("lr", 3e-3)), (("beta", 0.1), ("lr", 1e-3))]
    assert settings(bench.methods[0], bench) == [(("lr", 3e-3),), (("lr", 1e-3),)]


def test_scored_steps_are_the_checkpoints_below_the_last_and_the_last():
    class B:
        checkpoints = [8, 1, 16, 40]

    assert scored_steps(B, 16) == [1, 8, 16]
    assert scored_steps(B, 5) == [1, 5]
    B.checkpoints = []
    assert scored_steps(B, 3) == [3]


def test_subsets_are_nested_and_sized():
    rows = [{"i": i} for i in range(40)]
    small, large = subset(rows, 0.1, seed=0), subset(rows, 0.3, seed=0)
    assert len(small) == 4 and len(large) == 12
    assert {r["i"] for r in small} <= {r["i"] for r in large}
    assert subset(rows, 0.1, seed=0) == small and subset(rows, 0.1, seed=1) != small
    assert len(subset(rows[:3], 0.05, seed=0)) == 1  # never empty
    assert subset(rows, 1.0, seed=0) == rows


# ----------------------------------------------------------------------------- choice on validation


def _cand(name, step, win, rouge_l):
    return {"setting": (("lr", name),), "step": step, "val": {"win_rate": win, "rougeL": rouge_l, "word_count": 5.0}}


def test_choose_maximises_the_metric_then_rouge_then_takes_the_earliest():
    cands = [_cand(1, 1, 50.0, 30.0), _cand(1, 2, 60.0, 10.0), _cand(2, 1, 60.0, 20.0), _cand(2, 2, 60.0, 20.0),
             _cand(3, 1, 40.0, 90.0)]
    assert choose(cands, "win_rate") is cands[2]  # 60 three times: ROUGE-L 20 beats 10; full tie: the earlier one
    assert choose(cands, "rougeL") is cands[4]
    assert choose(list(reversed(cands)), "win_rate") is cands[3]  # earliest means first in the list given
    assert choose([cands[0]], "win_rate") is cands[0]
    # Equal dicts are still told apart by position (identity, not equality).
    twins = [_cand(1, 1, 60.0, 20.0), _cand(1, 1, 60.0, 20.0)]
    assert choose(twins, "win_rate") is twins[0]
    with pytest.raises(ValueError, match="no candidates"):
        choose([], "win_rate")


def test_collapse_flags_exactly_the_steps_below_the_floor():
    floor = {"win_rate": 50.0, "rougeL": 20.0}
    curve = {4: {"win_rate": 50.0, "rougeL": 20.0}, 1: {"win_rate": 49.9, "rougeL": 25.0}, 2: {"win_rate": 60.0, "rougeL": 19.0},
             3: {"win_rate": 10.0, "rougeL": 5.0}, 5: {"win_rate": 80.0, "rougeL": 30.0}}
    got = [(c["step"], c["metric"]) for c in collapse(curve, floor)]
    assert got == [(1, "win_rate"), (2, "rougeL"), (3, "win_rate"), (3, "rougeL")]  # equal to the floor is not below
    assert collapse(curve, floor)[0] == {"step": 1, "metric": "win_rate", "value": 49.9, "floor": 50.0}
    assert collapse({1: {"win_rate": 50.0, "rougeL": 20.0}}, floor) == []


# ----------------------------------------------------------------------------- config checks


@pytest.mark.parametrize("change, match", [
    (lambda b: b["methods"].append({"name": "x", "method": "nope"}), r"bench.methods\[3\] \(x\).*unknown method"),
    (lambda b: b["methods"].append({"name": "kd", "method": "seqkd"}), "used twice"),
    (lambda b: b.update(data_shares=[0.0]), "data_shares"),
    (lambda b: b.update(data_share_methods=["gkd"]), "'gkd' is not one of bench.methods"),
    (lambda b: b.update(relabel_shares=[1.0], relabel_method="dpkd"), "'dpkd' is not one of bench.methods"),
    (lambda b: b["methods"][1].update(params={"beta": -1.0}), r"bench.methods\[1\] \(plad\).*distill.params.beta: must be >= 0"),
    (lambda b: b["methods"][1].update(grid={"beta": [0.5, -1.0]}),
     r"bench.methods\[1\] \(plad\) at grid point \{'beta': -1.0\}: .*distill.params.beta: must be >= 0"),
    (lambda b: b.update(grid={"lr": [1e-3, -1e-3]}), r"bench.methods\[0\] \(kd\): grid lr=-0.001 must be positive"),
    (lambda b: b["methods"][0].update(grid={"nonsense": [1]}), r"bench.methods\[0\] \(kd\) at grid point \{'nonsense': 1\}"),
    (lambda b: b.update(grid={"lr": []}), r"bench.methods\[0\] \(kd\): grid key 'lr' needs a non-empty list"),
    (lambda b: b["methods"][2].update(grid={"lr": []}), r"bench.methods\[2\] \(seqkd\): grid key 'lr' needs a non-empty list"),
    (lambda b: b.update(seqkd_entry="sequence_kd"), r"bench.seqkd_entry: 'sequence_kd' is not one of bench.methods"),
    (lambda b: b.update(methods=b["methods"][:2]), r"bench.seqkd_entry: 'seqkd' is not one of bench.methods"),
    (lambda b: b.update(checkpoints=[1, 3]), r"bench.checkpoints: 3 is not a step of the distillation run \(1..2\)"),
    (lambda b: b.update(checkpoints=[0]), r"bench.checkpoints: 0 is not a step"),
    (lambda b: b["methods"][1].update(oracle={"kind": "teacher"}),
     r"bench.methods\[1\].oracle: plad \(plad\) asks no preference oracle; the win-rate methods do \(wind, sppo, bond, jbond\)"),
    (lambda b: b["methods"].append({"name": "w", "method": "wind", "oracle": {"kind": "teacher", "temprature": 0.3}}),
     r"unknown key 'bench.methods\[3\].oracle.temprature' \(did you mean 'bench.methods\[3\].oracle.temperature'\?\)"),
    (lambda b: b["methods"].append({"name": "w", "method": "wind", "oracle": {"kind": "teacher", "temperature": 0}}),
     r"bench.methods\[3\].oracle.temperature: must be > 0"),
    (lambda b: b["methods"].append({"name": "w", "method": "wind", "oracle": {"kind": "api"}}),
     r"bench.methods\[3\].oracle.api.base_url and bench.methods\[3\].oracle.model: required"),
])
def test_bad_bench_entries_are_refused(change, match, tiny_assets, tmp_path):
    data = _bench_cfg(tiny_assets, tmp_path)
    change(data["bench"])
    with pytest.raises(ConfigError, match=match):
        load_bench_config(data)


def test_good_variants_of_the_refused_entries_load(tiny_assets, tmp_path):
    """The refusals above come from the one bad value, not from the rest of the config."""
    data = _bench_cfg(tiny_assets, tmp_path, grid={"lr": [1e-3, 3e-3]}, checkpoints=[1, 2])
    data["bench"]["methods"][1]["grid"] = {"beta": [0.5, 0.0]}
    load_bench_config(data)
    data = _bench_cfg(tiny_assets, tmp_path, seqkd_entry=None)
    data["bench"]["methods"] = data["bench"]["methods"][:2]
    load_bench_config(data)


def test_token_level_bench_entry_with_vocabulary_shared_needs_one_vocabulary(tiny_assets, tmp_path):
    data = _bench_cfg(tiny_assets, tmp_path)
    data["teacher"]["name_or_path"] = str(tiny_assets["foreign"])
    load_bench_config(data)  # vocabulary: auto aligns the teacher to the student's tokens
    data["bench"]["methods"][0]["params"] = {"vocabulary": "shared"}
    with pytest.raises(ConfigError, match=r"bench.methods\[0\] \(kd\).*one vocabulary.*plad"):
        load_bench_config(data)


def test_relabel_sweep_needs_unrelabelled_pairs(tiny_assets, tmp_path):
    data = _bench_cfg(tiny_assets, tmp_path, relabel_shares=[1.0])
    data["pairs"]["relabel_fraction"] = 0.5
    with pytest.raises(ConfigError, match="relabel_fraction"):
        load_bench_config(data)


# ----------------------------------------------------------------------------- statistics


def test_two_level_bootstrap():
    rng = np.random.default_rng(0)
    one = rng.random(30)
    assert bootstrap_ci([one], seed=1) == bootstrap_ci(one, seed=1)  # one seed: the example bootstrap
    assert bootstrap_ci(np.full((3, 20), 0.25)) == (0.25, 0.25, 0.25)
    # Seeds that disagree widen the interval beyond what the examples alone give.
    shifted = np.stack([one * 0.2, one * 0.2 + 0.8])
    _, lo2, hi2 = bootstrap_ci(shifted, seed=0)
    _, lo1, hi1 = bootstrap_ci(shifted.mean(0), seed=0)
    assert hi2 - lo2 > 2 * (hi1 - lo1)


def test_summarize_seeds_with_one_seed_is_summarize_generations():
    gens, refs = ["a b c", "d e", "f"], ["a b", "d e f", "g"]
    scores, ref_scores, opp = [0.5, 0.1, 0.9], [0.2, 0.3, 0.9], [0.1, 0.2, 0.3]
    one = summarize_generations(gens, refs, scores, ref_scores, opponent_scores=opp, n_boot=200)
    many = summarize_seeds([gens], refs, [scores], ref_scores, opponent_scores=opp, n_boot=200)
    assert many == one and many["seeds"] == 1 and many["win_rate_seed_sd"] == 0.0
    two = summarize_seeds([gens, gens], refs, [scores, [0.0, 0.0, 0.0]], ref_scores, n_boot=200)
    assert two["win_rate"] == pytest.approx((50 + 0) / 2)  # win, loss, tie; then three losses
    assert two["win_rate_seed_sd"] > 0
    with pytest.raises(ValueError, match="generations\\[1\\]"):
        summarize_seeds([gens, gens[:2]], refs, [scores, scores], ref_scores)


# ----------------------------------------------------------------------------- the tiny bench, end to end

# Small but complete: 3 methods (SeqKD the control), 2 learning rates, a scored checkpoint before the last
# step, 2 seeds, a data-share and a relabel sweep point.
E2E = dict(seeds=[0, 1], grid={"lr": [1e-3, 3e-3]}, checkpoints=[1], data_shares=[0.5], data_share_methods=["plad"],
           relabel_shares=[1.0])


@pytest.fixture(scope="module")
def gap_stop(tiny_assets, tmp_path_factory):
    """The tiny bench with the gap check on: the tiny teacher is no better than the SFT student, so it stops."""
    out = tmp_path_factory.mktemp("bench")
    data = _bench_cfg(tiny_assets, out, **E2E)
    for role in ("teacher", "student"):  # each SFT evaluated at steps 1 and 2: its step is chosen too
        data["sft"][role]["eval_every"] = 1
    config = out / "bench.yaml"
    config.write_text(yaml.safe_dump(data))
    cfg, bench = load_bench_config(config)
    try:
        Bench(cfg, bench).run()
        error = None
    except TeacherGapError as e:
        error = e
    return {"config": config, "cfg": cfg, "bench": bench, "error": error}


def test_gap_check_stops_the_bench_and_keeps_what_it_computed(gap_stop):
    error, cfg = gap_stop["error"], gap_stop["cfg"]
    assert isinstance(error, TeacherGapError)
    assert "--ignore-gap" in str(error) and "gap_floor" in str(error)
    run = cfg.run_dir
    for role in ("teacher", "student"):
        assert (run / "checkpoints" / f"{role}_sft" / "prefdistill_checkpoint.json").is_file(), role
    assert (run / "reward" / "metrics.json").is_file()
    gap = read_json(run / "bench" / "gap_validation.json")
    assert gap["n"] == len(Pipeline(cfg).artifacts.splits["validation"])
    assert not (gap["ci"][0] > 0 and gap["diff"] >= gap_stop["bench"].gap_floor)
    # It stopped before spending anything on pairs or on the methods.
    assert not (run / "pairs" / "pairs.jsonl").exists() and not (run / "bench" / "runs").exists()


def test_gap_check_passes_a_clear_gap_and_cli_exits_3_on_a_stop(gap_stop, capsys):
    cfg, bench = gap_stop["cfg"], gap_stop["bench"]
    # The same validation numbers pass with the floor below them and the CI taken as given.
    gap = read_json(cfg.run_dir / "bench" / "gap_validation.json")
    assert Bench(cfg, bench, ignore_gap=True).check_gap() == {**gap, "floor": bench.gap_floor, "passed": False, "ignored": True}
    capsys.readouterr()
    assert main(["bench", str(gap_stop["config"])]) == 3
    err = capsys.readouterr().err
    assert "prefdistill: stopped:" in err and "--ignore-gap" in err
    assert main(["bench", str(gap_stop["config"]), "bench.checkpoints=[5]"]) == 2  # a config error: 2, not 3


def test_gap_check_passes_when_the_teacher_is_clearly_better(gap_stop, tmp_path):
    """A clear, significant gap lets the bench go on (the pass side of the rule, on stored numbers)."""
    b = Bench(gap_stop["cfg"], gap_stop["bench"])
    b.paths = BenchFolder(tmp_path, "main")  # where it reads the stored validation gap
    (tmp_path / "gap_validation.json").write_text(json.dumps({"n": 12, "diff": 25.0, "ci": [5.0, 40.0]}))
    assert b.check_gap()["passed"] is True
    (tmp_path / "gap_validation.json").write_text(json.dumps({"n": 12, "diff": 25.0, "ci": [-1.0, 40.0]}))
    with pytest.raises(TeacherGapError):
        b.check_gap()
    (tmp_path / "gap_validation.json").write_text(json.dumps({"n": 12, "diff": 9.0, "ci": [1.0, 20.0]}))
    with pytest.raises(TeacherGapError):
        b.check_gap()


@pytest.fixture(scope="module")
def tiny_bench(gap_stop):
    """The same bench through `prefdistill bench CONFIG --ignore-gap`, reusing what the stopped run computed;
    records the learning rate and seed every training got."""
    trained = []
    real = runner.train_job

    def recording(job, art):
        trained.append({"job": Path(job.out).parent.name, "lr": job.train.lr, "seed": job.seed})
        return real(job, art)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "train_job", recording)
        assert main(["bench", str(gap_stop["config"]), "--ignore-gap"]) == 0
    cfg = gap_stop["cfg"]
    return {**gap_stop, "trained": trained, "results": read_json(cfg.run_dir / "bench" / "main" / "results.json")}


def test_tiny_bench_results_shape(tiny_bench):
    results, cfg = tiny_bench["results"], tiny_bench["cfg"]
    rows = results["rows"]
    assert isinstance(rows, list) and [r["name"] for r in rows] == ["kd", "plad", "seqkd"]
    assert [r["method"] for r in rows] == ["kd", "plad", "seqkd"]
    assert set(results["base_rows"]) == {"teacher", "student_init", "student_sft"}
    n_test = len(Pipeline(cfg).artifacts.splits["test"])
    assert results["n_test"] == n_test and results["seeds"] == [0, 1]
    assert set(results["teacher_gap"]) >= {"diff", "ci"} and len(results["teacher_gap"]["ci"]) == 2
    assert results["teacher_gap_validation"]["ignored"] is True and results["teacher_gap_validation"]["passed"] is False
    assert results["judges"]["eval"]["name"] == "heldout" and results["judges"]["training"]["name"] == "trained"
    # every shared part is timed, once each (the gap check ran in the stopped run and is not redone here)
    assert set(results["timings_s"]) >= {"reward", "sft", "gap_check", "pairs", "calibration_candidates",
                                         "validation_reference", "base_test_rows"}
    assert all(v >= 0 for v in results["timings_s"].values())
    for row in rows:
        assert 0 <= row["win_rate"] <= 100 and row["seeds"] == 2 and len(row["per_seed_win_rate"]) == 2
        assert set(row["vs_sft"]) >= {"diff", "ci"} and len(row["vs_sft"]["ci"]) == 2
        assert row["vs_sft"]["ci"][0] <= row["vs_sft"]["diff"] <= row["vs_sft"]["ci"][1]
        assert set(row["selected"]) >= {"setting", "step"} and row["selected"]["step"] in (1, 2)
        assert set(row["selected"]["setting"]) == {"lr"}
        assert [g["setting"]["lr"] for g in row["grid"]] == [1e-3, 3e-3]
        assert all(set(g["val"]) == {"1", "2"} for g in row["grid"])  # checkpoint 1 and the last step
        assert set(row["curves"]) == {"0", "1"}
        assert isinstance(row["collapse"], list)
        assert 0 <= row["training_judge_win_rate"] <= 100 and len(row["vs_sft_training_judge"]["ci"]) == 2
    for row in rows[:2]:
        assert len(row["vs_seqkd"]["ci"]) == 2 and len(row["rougeL_vs_seqkd"]["ci"]) == 2
    assert rows[2]["vs_seqkd"] is None  # SeqKD against itself
    # Collapse: exactly the scored (job, step)s below the initial student on validation.
    floor = results["val_reference"]["student_init"]
    for row in rows:
        expected = {(str(g["setting"]["lr"]), int(s), k) for g in row["grid"] for s, v in g["val"].items()
                    for k in ("win_rate", "rougeL") if v[k] < floor[k]}
        seed1 = row["curves"]["1"]
        expected |= {("seed1", int(s), k) for s, v in seed1.items() for k in ("win_rate", "rougeL") if v[k] < floor[k]}
        got = {("seed1" if c["seed"] == 1 else str(c["setting"]["lr"]), c["step"], c["metric"]) for c in row["collapse"]}
        assert got == expected, row["name"]
    costs = results["costs"]
    assert costs["kd"]["tokens_teacher_scored"] > 0 and "data_teacher_generated" not in costs["kd"]
    assert costs["plad"]["data_teacher_generated"] > 0 and costs["plad"]["data_student_generated"] > 0
    assert costs["plad"]["steps"] == cfg.distill.train.steps
    for name, p in results["phases_wall_s"].items():  # none of these methods samples inside its loop
        assert p["sampling"] == 0.0 and p["validation"] >= 0 and p["training"] >= 0 and p["test_generation"] >= 0, name
        assert p["training"] + p["sampling"] + p["validation"] == pytest.approx(p["train_wall"], abs=0.25), name
        assert p["test_generation"] + p["grading"] == pytest.approx(p["test_wall"], abs=0.25), name
    check = results["judge_check"]  # the grader on the rows' test outputs, MiniLM's stand-in (the tiny encoder) for similarity
    assert list(check["rows"]) == ["teacher", "student_init", "student_sft", "kd", "plad", "seqkd"]
    assert check["rows"]["kd"]["n"] == 2 * n_test and 0 <= check["rows"]["student_sft"]["accuracy"] <= 1
    assert all(-1 <= t["similarity"] <= 1 for t in check["rank_agreement"]["rows"]) and len(check["sample"]) == 5
    assert isinstance(check["verdict"]["cannot_tell_degenerate"], bool)
    assert [p["share"] for p in results["data_sweep"]["plad"]] == [0.5, 1.0]
    assert [p["share"] for p in results["relabel_sweep"]["points"]] == [0.0, 1.0]
    relabelled = read_jsonl(cfg.run_dir / "bench" / "pairs" / "relabel1.jsonl")
    assert relabelled and all(p["relabelled"] for p in relabelled)
    folder = cfg.run_dir / "bench" / "main"
    report = (folder / "report.md").read_text()
    for section in ("Table 1 analogue", "Against SFT and SeqKD", "Settings chosen on validation", "Teacher–student gap",
                    "Figure 2 analogue", "Figure 4 analogue", "## Cost", "## Wall time by phase", "## Is the judge right on model text?"):
        assert section in report, section
    assert (folder / "plots" / "win_rates.png").stat().st_size > 1000
    assert not any((cfg.run_dir / "bench" / "runs").glob("*/checkpoint"))  # keep_checkpoints is off
    assert not any((cfg.run_dir / "bench" / "runs").glob("*/step*"))


def _candidates(bench, run_dir, entry):
    """(setting dict, step, val) of every scored checkpoint of an entry's grid, in grid order then step order,
    read from the jobs' result.json files."""
    out = []
    for job in selection_jobs(bench):
        if job.entry == entry:
            val = read_json(run_dir / "bench" / "runs" / job.key / "result.json")["val"]
            out += [(dict(job.setting), int(s), v) for s, v in sorted(val.items(), key=lambda kv: int(kv[0]))]
    return out


def test_tiny_bench_intervals_resample_the_test_and_validation_groups(tiny_bench):
    """Every interval (rows, paired differences, teacher gap on test and on validation) resamples io.group_of's groups."""
    from prefdistill.io import group_of

    results, cfg = tiny_bench["results"], tiny_bench["cfg"]
    splits = Pipeline(cfg).artifacts.splits
    n, g = len(splits["test"]), len({group_of(e) for e in splits["test"]})
    assert results["resampled"] == f"groups ({n} prompts in {g} groups) and seeds (2)"
    assert results["teacher_gap"]["groups"] == g
    val = results["teacher_gap_validation"]
    assert val["groups"] == len({group_of(e) for e in splits["validation"]}) and val["resampled"].startswith("groups (")
    for row in results["rows"]:
        assert row["groups"] == g and row["resampled"] == f"groups ({n} prompts in {g} groups) and seeds (2)"
        assert all(row[k]["groups"] == g for k in ("vs_sft", "rougeL_vs_sft"))
    assert all(r["groups"] == g for r in results["base_rows"].values())
    assert "resampled here: groups (" in (cfg.run_dir / "bench" / "main" / "report.md").read_text()


def test_tiny_bench_chooses_the_validation_argmax_and_trains_it_on_the_second_seed(tiny_bench):
    results, cfg, bench, trained = tiny_bench["results"], tiny_bench["cfg"], tiny_bench["bench"], tiny_bench["trained"]
    selection = read_json(cfg.run_dir / "bench" / "main" / "selection.json")
    for row in results["rows"]:
        cands = _candidates(bench, cfg.run_dir, row["name"])
        assert len(cands) == 4  # 2 learning rates × (checkpoint 1, last step 2)
        best = max((v["win_rate"], v["rougeL"]) for _, _, v in cands)
        setting, step, val = next(c for c in cands if (c[2]["win_rate"], c[2]["rougeL"]) == best)  # the earliest of the best
        assert row["selected"]["setting"] == setting and row["selected"]["step"] == step, row["name"]
        assert row["selected"]["val"] == val and selection[row["name"]]["setting"] == setting
        entry = next(m for m in bench.methods if m.name == row["name"])
        for seed in (0, 1):  # the chosen setting on both seeds, tested from the chosen step's weights
            job = Job(entry.name, seed, as_setting(setting), settings=settings_hash(entry))
            result = read_json(cfg.run_dir / "bench" / "runs" / job.key / "result.json")
            assert result["job"]["seed"] == seed and result["job"]["setting"] == setting
            assert (cfg.run_dir / "bench" / "runs" / job.key / f"test_step{step}.json").is_file()
        second = [t for t in trained if t["seed"] == 1 and t["job"].startswith(f"{entry.name}-")]
        assert second == [{"job": Job(entry.name, 1, as_setting(setting), settings=settings_hash(entry)).key,
                           "lr": setting["lr"], "seed": 1}]
    # Each grid point trained once on seed 0, with its own learning rate; the sweeps with the chosen one.
    first = [t for t in trained if t["seed"] == 0]
    grid_runs = {(t["job"].split("-")[0], t["lr"]) for t in first if t["job"].endswith("-data1-relabel0")}
    assert grid_runs == {(e, lr) for e in ("kd", "plad", "seqkd") for lr in (1e-3, 3e-3)}
    chosen_plad = next(r for r in results["rows"] if r["name"] == "plad")["selected"]["setting"]["lr"]
    sweeps = [t for t in first if not t["job"].endswith("-data1-relabel0")]
    assert sorted(t["job"].rsplit("-", 2)[1:] for t in sweeps) == [["data0.5", "relabel0"], ["data1", "relabel1"]]
    assert all(t["lr"] == chosen_plad for t in sweeps)
    assert len(trained) == len({t["job"] for t in trained}) == 6 + 3 + 2  # nothing trained twice


def test_tiny_bench_keeps_each_sft_step_by_the_select_metric_as_for_every_method(tiny_bench):
    """The SFT baselines get their best step chosen as every method's: `choose` on bench.select_metric of the same
    validation scores (same prompts, sampling and grader), among their evaluations."""
    results, cfg, bench = tiny_bench["results"], tiny_bench["cfg"], tiny_bench["bench"]
    for role in ("teacher", "student"):
        choice = read_json(cfg.run_dir / "checkpoints" / f"{role}_sft" / "choice.json")
        assert choice["criterion"] == bench.select_metric == "win_rate" and choice["rule"] == {"val_prompts": bench.val_prompts}
        assert [c["step"] for c in choice["curve"]] == [1, 2] and choice["budget"] == 2
        assert all(set(c["val"]) == {"loss", "win_rate", "rougeL", "word_count"} for c in choice["curve"])
        assert choice["step"] == choose(choice["curve"], bench.select_metric)["step"], role
        assert results["sft"][role]["kept_step"] == choice["step"] and results["sft"][role]["curve"] == choice["curve"]
    # Those are the bench's validation scores of the kept weights: the SFT row's validation reference, generated from the
    # kept checkpoint, is the kept evaluation's.
    student = read_json(cfg.run_dir / "checkpoints" / "student_sft" / "choice.json")
    kept = next(c["val"] for c in student["curve"] if c["step"] == student["step"])
    reference = results["val_reference"]["student_sft"]
    assert {k: reference[k] for k in ("win_rate", "rougeL")} == pytest.approx({k: kept[k] for k in ("win_rate", "rougeL")})
    report = (cfg.run_dir / "bench" / "main" / "report.md").read_text()
    assert f"| student | 2 | {student['step']} (win_rate) |" in report


def test_the_bench_chooses_the_sft_step_by_its_select_metric_unless_sft_select_says_otherwise(tiny_assets, tmp_path):
    cfg, bench = _load(tiny_assets, tmp_path, select_metric="rougeL", val_prompts=3)
    selection = Bench(cfg, bench).pipe.artifacts.sft_selection()
    assert selection.record() == {"criterion": "rougeL", "val_prompts": 3} and selection.score is not None
    candidates = [{"step": 1, "val": {"rougeL": 5.0, "win_rate": 90.0}}, {"step": 2, "val": {"rougeL": 5.0, "win_rate": 10.0}}]
    assert selection.pick(candidates) is candidates[0]  # choose's rule: the metric, then ROUGE-L, then the earliest
    cfg, bench = load_bench_config(_bench_cfg(tiny_assets, tmp_path / "v", select_metric="rougeL"), ["sft.select=val_loss"])
    assert Bench(cfg, bench).pipe.artifacts.sft_selection().record() == {"criterion": "val_loss"}
    assert Pipeline(cfg).artifacts.sft_selection().record() == {"criterion": "val_loss"}


def test_tiny_bench_resume_retrains_only_the_lost_job(tiny_bench):
    cfg, bench, before = tiny_bench["cfg"], tiny_bench["bench"], tiny_bench["results"]
    plad = next(r for r in before["rows"] if r["name"] == "plad")
    entry = next(m for m in bench.methods if m.name == "plad")
    lost = Job("plad", 0, as_setting(plad["selected"]["setting"]), settings=settings_hash(entry))  # the chosen grid job
    (cfg.run_dir / "bench" / "runs" / lost.key / "result.json").unlink()
    trained = []
    real = runner.train_job

    def counting(job, art):
        trained.append(Path(job.out).parent.name)
        return real(job, art)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "train_job", counting)
        again = Bench(cfg, bench, ignore_gap=True).run()
    assert trained == [lost.key]
    assert (cfg.run_dir / "bench" / "runs" / lost.key / "result.json").is_file()
    assert [r["selected"] for r in again["rows"]] == [r["selected"] for r in before["rows"]]
    assert [r["win_rate"] for r in again["rows"]] == [r["win_rate"] for r in before["rows"]]
    assert [r["vs_sft"] for r in again["rows"]] == [r["vs_sft"] for r in before["rows"]]
    # The retrained job's weights are dropped again (keep_checkpoints is off).
    assert not any((cfg.run_dir / "bench" / "runs").glob("*/checkpoint"))
    assert not any((cfg.run_dir / "bench" / "runs").glob("*/step*"))


def test_tiny_bench_files_round_trip_through_the_typed_records(tiny_bench):
    """What the bench wrote (result.json, test_stepN.json, selection.json) loads into its records and writes back the same."""
    from prefdistill.bench.records import Choice, JobResult, TestResult

    runs = tiny_bench["cfg"].run_dir / "bench" / "runs"
    results = sorted(runs.glob("*/result.json"))
    assert len(results) == 6 + 3 + 2
    for path in results:
        written = read_json(path)
        record = JobResult.from_json(written)
        assert json.dumps(record.to_json()) == json.dumps(written), path
        assert record.job.key == path.parent.name and set(record.val) == {1, 2}
    tests = sorted(runs.glob("*/test_step*.json"))
    assert tests and all(TestResult.from_json(read_json(p)).to_json() == read_json(p) for p in tests)
    selection = read_json(tiny_bench["cfg"].run_dir / "bench" / "main" / "selection.json")
    assert all(Choice.from_json(c).to_json() == c for k, c in selection.items() if k != "_rule")


# ----------------------------------------------------------------------------- the same results, however it ran

def _without_timings(results: dict) -> str:
    """The results as JSON, less what the clock and the process measure (wall times, timings, peak memory)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("wall_s", "timings_s", "peak_memory_mb", "memory_kind")
                    and not k.endswith(("_wall_s", "_time_s"))}
        return [strip(v) for v in o] if isinstance(o, list) else o
    return json.dumps(strip(results), indent=1, sort_keys=True)


def _assert_same(after, before, path: str = "results") -> None:
    """after == before, floats to 1e-4 (the judge's scores move by float noise with the number of threads, and the
    soft win rate and its intervals with them; counts, texts, choices and hard win rates must be equal)."""
    if isinstance(before, dict):
        assert isinstance(after, dict) and sorted(after) == sorted(before), path
        for key in before:
            _assert_same(after[key], before[key], f"{path}.{key}")
    elif isinstance(before, list):
        assert isinstance(after, list) and len(after) == len(before), path
        for i, (a, b) in enumerate(zip(after, before)):
            _assert_same(a, b, f"{path}[{i}]")
    elif isinstance(before, float) and not isinstance(after, bool) and isinstance(after, (int, float)):
        assert after == pytest.approx(before, abs=1e-4, rel=1e-6), path
    else:
        assert after == before, path


def _forget(bench_dir: Path, paths: list[Path], aside: str) -> Path:
    """Move `paths`, the selection and the relabelled pairs to bench_dir/aside/ (kept, for a look after a failure)."""
    (bench_dir / aside).mkdir()
    for path in [*paths, bench_dir / "main" / "selection.json", bench_dir / "pairs"]:
        path.rename(bench_dir / aside / path.name)
    return bench_dir / aside


def test_tiny_bench_with_two_workers_gives_the_plain_runs_results(tiny_bench):
    """Every job retrained in 2 worker processes of one thread each: the results file is the plain run's (floats to
    float noise)."""
    cfg, before = tiny_bench["cfg"], tiny_bench["results"]
    bench_dir = cfg.run_dir / "bench"
    plain = _forget(bench_dir, [bench_dir / "runs"], "plain")
    assert main(["bench", str(tiny_bench["config"]), "--ignore-gap", "--workers", "2"]) == 0
    after = read_json(bench_dir / "main" / "results.json")
    _assert_same(json.loads(_without_timings(after)), json.loads(_without_timings(before)))
    assert len(list((bench_dir / "runs").glob("*/result.json"))) == len(list((plain / "runs").glob("*/result.json"))) == 11
    assert not any((bench_dir / "claims").glob("*.claim"))  # every claim released
    assert (bench_dir / "pairs" / "relabel1.jsonl").read_bytes() == (plain / "pairs" / "relabel1.jsonl").read_bytes()


def test_tiny_bench_job_calls_then_a_plain_run_give_the_same_results(tiny_bench, capsys):
    """One entry's jobs run one by one with --job (what a Slurm array runs), in plan order; the plain run after them
    trains nothing and writes the same results."""
    cfg, bench, before, config = tiny_bench["cfg"], tiny_bench["bench"], tiny_bench["results"], str(tiny_bench["config"])
    bench_dir = cfg.run_dir / "bench"
    _forget(bench_dir, list((bench_dir / "runs").glob("plad-*")), "workers")
    capsys.readouterr()
    assert main(["bench", config, "--plan", "--keys-only", "--stage", "seeds"]) == 0
    assert capsys.readouterr().out == ""  # no seed job has a key before the selection
    grid = [j.key for j in selection_jobs(bench) if j.entry == "plad"]
    trained = []
    real = runner.train_job

    def counting(job, art):
        trained.append(Path(job.out).parent.name)
        return real(job, art)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "train_job", counting)
        for key in [*grid, "selection"]:
            assert main(["bench", config, "--job", key]) == 0, key
        capsys.readouterr()
        assert main(["bench", config, "--plan", "--keys-only"]) == 0
        keys = [k for k in capsys.readouterr().out.split() if k.startswith("plad-") and k not in grid]
        chosen = next(r for r in before["rows"] if r["name"] == "plad")["selected"]
        first = next(k for k in grid if f"-lr{chosen['setting']['lr']:g}-" in k)
        for key in [first, *keys]:  # the chosen grid point is tested too
            assert main(["bench", config, "--job", key]) == 0, key
        assert sorted(trained) == sorted(grid + keys)
        assert main(["bench", config, "--ignore-gap"]) == 0
    assert sorted(trained) == sorted(grid + keys)  # the plain run found every job done
    assert len(keys) == 3  # plad on seed 1, its data-share and its relabel point
    _assert_same(json.loads(_without_timings(read_json(bench_dir / "main" / "results.json"))),
                 json.loads(_without_timings(before)))
