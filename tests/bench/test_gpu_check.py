"""benchmarks/gpu_check.py --cpu-smoke: every part runs at toy size on the CPU and reports ok (no speed assertions)."""
import importlib.metadata
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke run's JSON (a subprocess: the script turns progress bars off and uses one thread)."""
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)], capture_output=True, text=True, timeout=600)
    print(f"gpu_check --cpu-smoke: {time.perf_counter() - t0:.1f} s wall\n{done.stdout[-3000:]}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_part_reports(smoke):
    assert smoke["mode"] == "cpu-smoke" and smoke["command"].startswith("python benchmarks/gpu_check.py --cpu-smoke")
    assert list(smoke["parts"]) == ["correctness", "throughput", "generation", "distributed", "trl"]
    for name in ("correctness", "throughput", "generation"):
        assert smoke["parts"][name]["status"] == "ok", (name, smoke["parts"][name])
    for part in smoke["parts"].values():
        assert part["wall_s"] >= 0
    env = smoke["environment"]
    assert env["torch"] and env["transformers"] and "cuda" in env and "gpu" in env
    budget = smoke["budget_s"]
    assert budget["limit"] == 480 and budget["time_budget"] == 420 and budget["fits"] and budget["skipped_for_time"] == []
    assert smoke["wall_s"] > 0 and "FSDP, DeepSpeed and NCCL" in smoke["not_checked"]


def test_correctness_covers_every_method_with_fp32_equal(smoke):
    from prefdistill.methods import METHODS
    from prefdistill.methods.registry import on_policy_methods

    part = smoke["parts"]["correctness"]
    assert set(part["rows"]) == set(METHODS) | {"kd[topk]"}
    for name, row in part["rows"].items():
        assert row["status"] == "ok", (name, row)
        assert row["fp32"]["abs_diff"] == 0.0 and row["fp32"]["samples_equal"], name  # the CPU against itself: bitwise
        assert len(row["fp32"]["losses"]) == len(row["reference_losses"]) == 2
        bf16 = row["bf16"]
        assert bf16["ok"] and ("rel_diff" in bf16 or bf16["status"].startswith("skipped: "))
    sampled = {n for n, r in part["rows"].items() if r["fp32"]["samples_drawn"]}
    assert {"gkd", "wind", "bond"} <= sampled  # the on-policy methods were compared on their samples
    assert sampled <= set(on_policy_methods()), sampled - set(on_policy_methods())  # and only those (the registry's list)


def test_throughput_rows_have_numbers(smoke):
    part = smoke["parts"]["throughput"]
    assert part["peak_matmul"]["flops_per_s"] > 0
    expected = {f"{m}{s}" for m in ("sft", "plad", "dpkd", "kd", "kd_topk", "gkd") for s in ("", "+gc")}
    assert set(part["rows"]) == expected | {"sft+chunk0", "kd+chunk0"}
    for key, row in part["rows"].items():
        assert row["status"] == "ok", (key, row)
        assert row["tokens_per_s"] > 0 and row["train_tokens"] > 0 and row["peak_mb"] > 0
        assert isinstance(row["mfu"], float) and isinstance(row["mfu_6N"], float) and row["mfu"] >= 0
        assert row["gradient_checkpointing"] == key.endswith("+gc")
        assert row["logits_chunk"] == (0 if key.endswith("+chunk0") else part["rows"]["sft"]["logits_chunk"]) > -1
    for key in ("sft+chunk0", "kd+chunk0"):  # the whole batch's logits, with the memory model's prediction beside them
        model = part["rows"][key]["memory_model"]
        assert model["whole_batch_mb"] >= model["chunked_mb"] > 0 and "measured_saving_mb" in part["rows"][key]
    assert part["rows"]["kd"]["teacher_tokens"] > 0 and part["rows"]["kd_topk"]["teacher_tokens"] == 0
    assert part["rows"]["gkd"]["student_forward_only_tokens"] > 0  # its on-policy samples
    for key in ("sft", "plad"):  # a toy CPU run is far below 40% MFU: the profile must be there
        kernels = part["rows"][key]["profile_top_kernels"]
        assert 0 < len(kernels) <= 10 and all(k["self_ms"] >= 0 for k in kernels)


def test_generation_distributed_and_trl(smoke):
    gen = smoke["parts"]["generation"]
    assert gen["ratio_batched_over_naive"]["tokens_per_s"] > 0
    assert gen["arms"]["naive"]["generated_tokens"] > 0 and gen["arms"]["batched"]["generated_tokens"] > 0
    dist = smoke["parts"]["distributed"]
    assert dist["status"] == "ok" or dist["status"].startswith("skipped: "), dist
    if dist["status"] == "ok":
        assert dist["processes"] == 1 and len(dist["losses"]) == 4
    assert "FSDP" in dist["not_checked"]
    trl = smoke["parts"]["trl"]
    if _installed("trl") and _installed("datasets"):
        assert trl["status"] == "ok" and set(trl["rows"]) == {"plad", "sft", "kd", "dpkd", "kd_topk"}
    else:
        assert trl["status"].startswith("skipped: ") and "not installed" in trl["status"]


def test_time_budget_skips_parts_with_a_note(tmp_path):
    out = tmp_path / "budget.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--time-budget", "0", "--parts", "correctness,generation",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["budget_s"]["skipped_for_time"] == ["correctness", "generation"]
    assert all(p["status"].startswith("skipped: time budget") for p in result["parts"].values())
    assert not result["all_ok"] and result["skipped"] == ["correctness", "generation"]
