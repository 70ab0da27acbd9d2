"""benchmarks/bench_phases.py on hand-made job files: phases per method, the projection of a stopped bench, the machine factor."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_phases.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("bench_phases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job(runs: Path, entry: str, lr: float, seed: int, train: float, test: float | None):
    key = f"{entry}-abc-lr{lr}-seed{seed}-data1-relabel0"
    folder = runs / key
    folder.mkdir(parents=True)
    job = {"entry": entry, "seed": seed, "setting": {"lr": lr}, "data_share": 1.0, "relabel_share": 0.0, "settings": "abc"}
    cost = {"rows": 10, "steps": 4, "train_wall_s": train, "peak_memory_mb": 1.0, "memory_kind": "RSS",
            "sampling_wall_s": 0.0, "validation_wall_s": 1.0}
    (folder / "result.json").write_text(json.dumps({"job": job, "method": entry, "label": entry.upper(), "steps": 4, "val": {},
                                                    "cost": cost, "final_loss": 1.0}))
    if test is not None:
        (folder / "test_step4.json").write_text(json.dumps({"step": 4, "generations": [], "judge_scores": [],
                                                            "training_judge_scores": None, "eval_wall_s": test,
                                                            "generation_wall_s": test - 1, "grading_wall_s": 1.0}))


def test_a_stopped_bench_is_projected_and_scaled_by_the_control(script, tmp_path):
    runs = tmp_path / "bench" / "runs"
    _job(runs, "seqkd", 1e-3, 0, 20.0, 10.0)  # grid, chosen, tested
    _job(runs, "seqkd", 2e-4, 0, 22.0, None)  # grid
    _job(runs, "kd", 1e-3, 0, 30.0, 12.0)
    _job(runs, "kd", 2e-4, 0, 34.0, None)
    _job(runs, "kd", 1e-3, 1, 32.0, 14.0)  # one more seed of the chosen setting
    before = tmp_path / "before.json"
    before.write_text(json.dumps({"seeds": [0, 1, 2], "wall_s": {"jobs": 500.0},
                                  "costs": {"seqkd": {"train_wall_s": 10.0, "eval_wall_s": 5.0},
                                            "kd": {"train_wall_s": 40.0, "eval_wall_s": 8.0}}}))
    out = script.main([str(tmp_path), "--before", str(before), "--control", "seqkd"])["before"]
    assert out["machine_factor"] == 2.0  # seqkd: 20 s of train wall after (its tested job), 10 before
    assert out["projected_by_method"]["seqkd"] == 20 + 22 + 2 * 20 + 3 * 10
    assert out["projected_by_method"]["kd"] == 30 + 34 + 2 * 31 + 3 * 13
    assert out["before_jobs_s_scaled"] == 1000.0
    assert out["jobs_ratio"] == pytest.approx((112 + 165) / 1000.0, abs=1e-3)
    kd = out["methods"]["kd"]
    assert kd["before_train_wall_s"] == 80.0 and kd["after_train_wall_s"] == 31.0 and kd["test_ratio"] == pytest.approx(13 / 16, abs=1e-3)


def test_a_method_never_tested_leaves_the_total_open(script, tmp_path):
    runs = tmp_path / "bench" / "runs"
    _job(runs, "seqkd", 1e-3, 0, 20.0, 10.0)
    _job(runs, "kd", 1e-3, 0, 30.0, None)
    before = tmp_path / "before.json"
    before.write_text(json.dumps({"seeds": [0], "wall_s": {"jobs": 100.0},
                                  "costs": {"seqkd": {"train_wall_s": 20.0, "eval_wall_s": 5.0},
                                            "kd": {"train_wall_s": 40.0, "eval_wall_s": 8.0}}}))
    out = script.main([str(tmp_path), "--before", str(before)])["before"]
    assert out["machine_factor"] == 1.0 and out["projected_by_method"]["kd"] is None and out["jobs_ratio"] is None
