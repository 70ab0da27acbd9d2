"""`prefdistill bench`: job planning, nested data shares, config checks, and a tiny end-to-end bench."""
import json

import numpy as np
import pytest

from prefdistill.bench import Bench, Job, plan, subset
from prefdistill.config import ConfigError
from prefdistill.checks import load_bench_config
from prefdistill.metrics import bootstrap_ci, summarize_generations, summarize_seeds
from prefdistill.tiny import tiny_config


def _bench_cfg(tiny_assets, tmp_path, **bench):
    data = tiny_config(tiny_assets, tmp_path, name="b")
    data["bench"] = {"methods": [{"name": "kd", "method": "kd"}, {"name": "plad", "method": "plad", "params": {"beta": 0.5}}],
                     "seeds": [0], **bench}
    return data


def test_plan_covers_table_and_sweeps(tiny_assets, tmp_path):
    _, bench = load_bench_config(_bench_cfg(tiny_assets, tmp_path, seeds=[3, 4], data_shares=[0.5, 1.0],
                                            data_share_methods=["plad"], relabel_shares=[0.0, 1.0]))
    jobs = plan(bench)
    main = [j for j in jobs if j.is_main]
    assert sorted((j.entry, j.seed) for j in main) == [("kd", 3), ("kd", 4), ("plad", 3), ("plad", 4)]
    sweeps = [(j.entry, j.seed, j.data_share, j.relabel_share) for j in jobs if not j.is_main]
    assert sweeps == [("plad", 3, 0.5, 0.0), ("plad", 3, 1.0, 1.0)]  # shares 1.0 / 0.0 reuse the main runs
    assert len({j.key for j in jobs}) == len(jobs)
    data = _bench_cfg(tiny_assets, tmp_path, seeds=[3, 4])
    data["bench"]["methods"][0]["seeds"] = [7]  # an ablation entry with its own, fewer seeds
    assert sorted((j.entry, j.seed) for j in plan(load_bench_config(data)[1])) == [("kd", 7), ("plad", 3), ("plad", 4)]


def test_editing_an_entry_makes_new_jobs(tiny_assets, tmp_path):
    a = plan(load_bench_config(_bench_cfg(tiny_assets, tmp_path))[1])
    data = _bench_cfg(tiny_assets, tmp_path)
    data["bench"]["methods"][1]["params"] = {"beta": 2.0}
    b = plan(load_bench_config(data)[1])
    keys_a, keys_b = {j.entry: j.key for j in a}, {j.entry: j.key for j in b}
    assert keys_a["kd"] == keys_b["kd"] and keys_a["plad"] != keys_b["plad"]


def test_subsets_are_nested_and_sized():
    rows = [{"i": i} for i in range(40)]
    small, large = subset(rows, 0.1, seed=0), subset(rows, 0.3, seed=0)
    assert len(small) == 4 and len(large) == 12
    assert {r["i"] for r in small} <= {r["i"] for r in large}
    assert subset(rows, 0.1, seed=0) == small and subset(rows, 0.1, seed=1) != small
    assert len(subset(rows[:3], 0.05, seed=0)) == 1  # never empty


@pytest.mark.parametrize("change, match", [
    (lambda b: b["methods"].append({"name": "x", "method": "nope"}), r"bench.methods\[2\] \(x\).*unknown method"),
    (lambda b: b["methods"].append({"name": "kd", "method": "seqkd"}), "used twice"),
    (lambda b: b.update(data_shares=[0.0]), "data_shares"),
    (lambda b: b.update(data_share_methods=["gkd"]), "'gkd' is not one of bench.methods"),
    (lambda b: b["methods"][1].update(params={"beta": -1.0}), r"bench.methods\[1\] \(plad\).*distill.params.beta: must be >= 0"),
])
def test_bad_bench_entries_are_refused(change, match, tiny_assets, tmp_path):
    data = _bench_cfg(tiny_assets, tmp_path)
    change(data["bench"])
    with pytest.raises(ConfigError, match=match):
        load_bench_config(data)


def test_token_level_bench_entry_needs_one_vocabulary(tiny_assets, tmp_path):
    data = _bench_cfg(tiny_assets, tmp_path)
    data["teacher"]["name_or_path"] = str(tiny_assets["foreign"])
    with pytest.raises(ConfigError, match=r"bench.methods\[0\] \(kd\).*one vocabulary.*plad"):
        load_bench_config(data)


def test_relabel_sweep_needs_unrelabelled_pairs(tiny_assets, tmp_path):
    data = _bench_cfg(tiny_assets, tmp_path, relabel_shares=[1.0])
    data["pairs"]["relabel_fraction"] = 0.5
    with pytest.raises(ConfigError, match="relabel_fraction"):
        load_bench_config(data)


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
    assert two["win_rate"] == pytest.approx((50 + 0) / 2)  # win, loss, tie; then three losses and two["win_rate_seed_sd"] > 0
    with pytest.raises(ValueError, match="generations\\[1\\]"):
        summarize_seeds([gens, gens[:2]], refs, [scores, scores], ref_scores)


def test_tiny_bench_end_to_end_and_resume(tiny_assets, tmp_path, monkeypatch):
    data = _bench_cfg(tiny_assets, tmp_path, data_shares=[0.5], data_share_methods=["plad"], relabel_shares=[1.0])
    data["bench"]["methods"].append({"name": "sppo", "method": "sppo", "params": {"samples": 2, "max_new_tokens": 4}})
    cfg, bench = load_bench_config(data)
    results = Bench(cfg, bench).run()
    rows = results["rows"]
    assert list(rows) == ["teacher", "student_init", "student_sft", "kd", "plad", "sppo"]
    sppo_cost = results["costs"]["sppo"]
    assert sppo_cost["count_samples"] == cfg.distill.train.steps * cfg.distill.train.batch_size * 2
    assert 0 < sppo_cost["count_oracle_comparisons"] <= sppo_cost["count_samples"] / 2
    assert rows["kd"]["label"] == "KD" and rows["plad"]["seeds"] == 1 and "vs_sft" in rows["plad"]
    # SPPO optimised the training judge (its oracle); every row is graded by the held-out judge, and by that one too.
    assert results["judges"]["eval"]["name"] == "heldout" and results["judges"]["training"]["name"] == "trained"
    for key in ("kd", "plad", "sppo"):
        assert 0 <= rows[key]["training_judge_win_rate"] <= 100 and len(rows[key]["vs_sft_training_judge"]["ci"]) == 2
    job = json.loads(next((cfg.run_dir / "bench" / "runs").glob("sppo-*/result.json")).read_text())
    assert len(job["training_judge_scores"]) == len(job["judge_scores"]) and job["training_judge_scores"] != job["judge_scores"]
    costs = results["costs"]
    assert costs["kd"]["tokens_teacher_scored"] > 0 and "data_teacher_generated" not in costs["kd"]
    assert costs["plad"]["data_teacher_generated"] > 0 and costs["plad"]["data_student_generated"] > 0
    assert "tokens_teacher_scored" not in costs["plad"] and costs["plad"]["steps"] == cfg.distill.train.steps
    assert [p["share"] for p in results["data_sweep"]["plad"]] == [0.5, 1.0]
    assert [p["share"] for p in results["relabel_sweep"]["points"]] == [0.0, 1.0]
    relabelled = [json.loads(x) for x in (cfg.run_dir / "bench" / "pairs" / "relabel1.jsonl").read_text().splitlines()]
    assert all(p["relabelled"] for p in relabelled)
    folder = cfg.run_dir / "bench" / "main"
    report = (folder / "report.md").read_text()
    for section in ("Table 1 analogue", "Which orderings held", "Figure 2 analogue", "Figure 3 analogue", "Figure 4 analogue", "## Cost",
                    "Win rate, training judge", "Δ vs SFT by the training judge"):
        assert section in report
    for png in ("win_rates", "relabel_share", "length_buckets", "data_share", "samples_and_oracle_calls"):
        assert (folder / "plots" / f"{png}.png").stat().st_size > 1000
    assert not any(folder.parent.glob("runs/*/checkpoint"))  # keep_checkpoints is off

    # Resume: only the job whose result is gone is trained again.
    lost = next(j for j in plan(bench) if j.entry == "kd")
    (folder.parent / "runs" / lost.key / "result.json").unlink()
    trained = []
    real = Bench.run_job

    def counting(self, job: Job):
        if not (self.dir / "runs" / job.key / "result.json").is_file():
            trained.append(job.key)
        return real(self, job)

    monkeypatch.setattr(Bench, "run_job", counting)
    again = Bench(cfg, bench).run()
    assert trained == [lost.key]
    assert again["rows"]["plad"]["win_rate"] == rows["plad"]["win_rate"]
