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
    def __init__(self, oracle=None):
        from types import SimpleNamespace

        from prefdistill.config.schema import OracleConfig

        self.loaded, self.judges = [], 0
        self.cfg = SimpleNamespace(oracle=oracle or OracleConfig())

    def load(self, role, checkpoint=None, for_training=False, in_loop=False, dtype=None):
        self.loaded.append((role, in_loop) if dtype is None else (role, in_loop, dtype))
        return f"{role}-model"

    def sft_checkpoint(self, role):
        return None

    def scoring_teacher(self, what, *, instead):
        self.loaded.append(("scoring teacher", what))
        return "scoring-teacher"

    def training_judge(self):
        self.judges += 1
        return "judge"


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


def test_the_jobs_own_oracle_reaches_the_provider_and_the_runs_is_the_default(tmp_path):
    from dataclasses import replace

    from prefdistill.config.schema import OracleConfig
    from prefdistill.methods.sppo import SPPOParams

    job = _job("sppo", SPPOParams(), TrainingData([{"id": "0", "prompt": "p"}]), tmp_path)
    art = _Art()  # the run's oracle: the training judge
    oracle = loss_extras(job, art)["oracle"]
    assert oracle.judge == "judge" and oracle.temperature == 1.0 and art.judges == 1 and art.loaded == []
    art = _Art()
    oracle = loss_extras(replace(job, oracle=OracleConfig(kind="teacher", temperature=0.3)), art)["oracle"]
    assert oracle.judge.lm == "scoring-teacher" and oracle.temperature == 0.3  # the job's own: the teacher, once
    assert art.loaded == [("scoring teacher", "oracle.kind: teacher")] and art.judges == 0
    art = _Art(OracleConfig(kind="teacher", temperature=2.0))  # the run's, when the job names none
    assert loss_extras(job, art)["oracle"].temperature == 2.0 and len(art.loaded) == 1


def test_the_teacher_oracle_scores_with_the_teacher_the_job_already_holds(tmp_path):
    from dataclasses import replace

    from prefdistill.config.schema import OracleConfig
    from prefdistill.methods.sppo import SPPOParams

    job = _job("sppo", SPPOParams(), TrainingData([{"id": "0", "prompt": "p"}]), tmp_path)
    both = replace(job, method=replace(job.method, needs=job.method.needs | {"teacher"}), oracle=OracleConfig(kind="teacher"))
    art = _Art()
    extras = loss_extras(both, art)
    assert extras["oracle"].judge.lm is extras["teacher"] == "teacher-model" and art.loaded == [("teacher", True)]


def test_a_scoring_teacher_that_cannot_score_is_refused_with_the_probes_reason(tmp_path):
    from types import SimpleNamespace

    from prefdistill.config.checks import load_config
    from prefdistill.run.artifacts import Artifacts

    cfg = load_config({"teacher": {"name_or_path": "t"}, "student": {"name_or_path": "s"}, "output_dir": str(tmp_path),
                       "oracle": {"kind": "teacher"}})
    art = Artifacts(cfg)
    art.load = lambda role, checkpoint=None, **kw: SimpleNamespace(can_score=False, score_unavailable="a shifted echo")
    art.sft_checkpoint = lambda role: None
    with pytest.raises(ValueError, match=r"'t' returns text only \(a shifted echo\), but oracle.kind: teacher needs a scoring "
                                         r"teacher.*or oracle.kind judge or api"):
        art.scoring_teacher("oracle.kind: teacher", instead="oracle.kind judge or api")
    assert art.judges_info()["training"]["oracle"] == {"kind": "teacher (its mean per-token log-prob)", "temperature": 1.0}


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


def test_wind_trains_with_the_teacher_as_its_oracle_loaded_once(tiny_assets, tmp_path):
    """Two WIND steps on the tiny models, the tiny teacher scoring the samples: it is loaded once, not trained, and every
    text it scored is a counted query."""
    from dataclasses import replace

    from prefdistill.config.checks import load_config
    from prefdistill.config.schema import OracleConfig
    from prefdistill.methods import resolve
    from prefdistill.models.tiny import tiny_config
    from prefdistill.run.artifacts import Artifacts
    from prefdistill.run.train_job import train_job
    from prefdistill.testing import PARAMS, ROWS

    raw = tiny_config(tiny_assets, tmp_path, name="wind-teacher")
    raw["sft"] = {"teacher": {"enabled": False}, "student": {"enabled": False}}
    cfg = load_config(raw)
    art, loaded = Artifacts(cfg), []

    def load(role, *a, **k):
        model = Artifacts.load(art, role, *a, **k)
        loaded.append((role, k.get("in_loop", False), k.get("for_training", False)))
        if role == "teacher":
            assert not model.model.training and not any(p.requires_grad for p in model.model.parameters())
        return model

    art.load = load
    method = resolve("wind", PARAMS["wind"], "distill.params")
    job = TrainJob(method, TrainingData(ROWS["prompts"][:2]), replace(cfg.distill.train, save_every=10), tmp_path / "ckpt", seed=0,
                   oracle=OracleConfig(kind="teacher", temperature=0.3))
    log = train_job(job, art).log
    assert len(log) == 2 and all(r["count_oracle_queries"] > 0 for r in log)
    assert sum(r["count_oracle_comparisons"] for r in log) > 0
    assert loaded == [("student", True, False), ("teacher", False, False), ("student", False, True)]
