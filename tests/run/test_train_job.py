"""One `train_job` for the distill stage and every bench job: its providers, its typed data, a finished job read back."""
import pytest

from prefdistill.methods import ResolvedMethod, resolve_method
from prefdistill.methods.registry import METHODS, NEEDS, requirements
from prefdistill.run.train_job import PROVIDERS, loss_extras
from prefdistill.signal.topk_cache import TopkSignal
from prefdistill.training.job import TrainingData, TrainJob, TrainResult


def test_every_need_has_exactly_one_provider():
    assert set(PROVIDERS) == set(NEEDS) - {"teacher_samples", "student_samples", "pair_scores", "teacher_pair_logps"}
    # those four are in the rows themselves (the pairs file, its scores, the stored log-probs), not loss arguments
    loss_needs = {n for spec in METHODS.values() for n in spec.needs} - {"teacher_samples", "student_samples", "pair_scores",
                                                                        "teacher_pair_logps"}
    assert loss_needs <= set(PROVIDERS)


class _Art:
    """The artifacts a provider may touch; any other access fails the test."""
    def __init__(self):
        self.loaded = []

    def load(self, role, checkpoint=None, for_training=False, in_loop=False, dtype=None):
        self.loaded.append((role, in_loop) if dtype is None else (role, in_loop, dtype))
        return f"{role}-model"

    def sft_checkpoint(self, role):
        return None


def _job(method, params, data, tmp_path):
    from prefdistill.config.schema import TrainConfig
    from prefdistill.methods import get_method

    return TrainJob(ResolvedMethod.of(get_method(method), params), data, TrainConfig(steps=1), tmp_path / "out", seed=0)


def test_the_loss_gets_the_cached_signal_the_data_carries_and_nothing_it_does_not_need(tmp_path):
    from prefdistill.methods.kd import KDParams

    signal = TopkSignal(tmp_path / "c.bin", "t", 4, 1.0, "float16")
    art = _Art()
    extras = loss_extras(_job("kd", KDParams(signal="topk", k=4), TrainingData([{"prompt": "p", "target": "t"}], signal),
                              tmp_path), art)
    assert extras == {"teacher_topk": signal} and art.loaded == []  # no teacher in memory
    live = loss_extras(_job("kd", KDParams(), TrainingData([{"prompt": "p", "target": "t"}]), tmp_path), art)
    assert live == {"teacher": "teacher-model"} and art.loaded == [("teacher", True)]


def test_the_teacher_in_the_loop_computes_in_the_students_mixed_precision(tmp_path):
    from dataclasses import replace

    from prefdistill.methods.kd import KDParams

    for precision, dtype in (("bf16", "bfloat16"), ("fp16", "float16")):
        art, job = _Art(), _job("kd", KDParams(), TrainingData([{"prompt": "p", "target": "t"}]), tmp_path)
        loss_extras(replace(job, train=replace(job.train, mixed_precision=precision)), art)
        assert art.loaded == [("teacher", True, dtype)]


def test_a_finished_job_is_read_back_without_loading_anything(tmp_path):
    from prefdistill.io import write_json, write_jsonl
    from prefdistill.methods.sft import SFTParams
    from prefdistill.models.hf import CHECKPOINT_META
    from prefdistill.run.folder import LOG_FILE
    from prefdistill.run.train_job import train_job

    job = _job("sft", SFTParams(), TrainingData([{"prompt": "p", "target": "t"}]), tmp_path)
    write_jsonl(job.out / LOG_FILE, [{"step": 1, "loss": 0.5}])
    write_json(job.out / CHECKPOINT_META, {"method": "sft"})
    art = _Art()
    assert train_job(job, art) == TrainResult(job.out, [{"step": 1, "loss": 0.5}], 0.0) and art.loaded == []


def test_the_distill_stage_and_the_bench_both_train_through_train_job():
    import ast
    from pathlib import Path

    import prefdistill

    root = Path(prefdistill.__file__).parent
    for module in ("run/stages.py", "bench/runner.py"):
        calls = {n.func.id for n in ast.walk(ast.parse((root / module).read_text())) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name)}
        assert "train_job" in calls and "train" not in calls or module == "run/stages.py", module
    # stages.py trains the SFT models with the loop itself (their own hook), and every distillation through train_job
    stages = ast.parse((root / "run/stages.py").read_text())
    distill = next(f for f in ast.walk(stages) if isinstance(f, ast.FunctionDef) and f.name == "stage_distill")
    assert "train_job" in {n.func.id for n in ast.walk(distill) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_resolves_to_providers_the_job_can_give(method):
    spec = METHODS[method]
    _, needs = requirements(spec, spec.params_cls())
    assert needs - {"teacher_samples", "student_samples", "pair_scores", "teacher_pair_logps"} <= set(PROVIDERS)
