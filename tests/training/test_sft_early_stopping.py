"""The SFT stage keeps its best evaluation's weights (early stopping), every later stage starts from them, the
metrics and report say which step of what budget, and a crash anywhere resumes to the same weights."""
import pytest
import torch
from safetensors.torch import load_file

from prefdistill.config.checks import load_config
from prefdistill.config.schema import ConfigError
from prefdistill.io import read_json, read_jsonl
from prefdistill.methods import get_method
from prefdistill.models.hf import LocalLM
from prefdistill.models.tiny import tiny_config
from prefdistill.run.artifacts import Artifacts
from prefdistill.run.pipeline import Pipeline
from prefdistill.training.loop import LOG_FILE, mean_loss

BUDGET, EVERY = 8, 2
# Every weight at a high learning rate: the tiny student's validation loss falls, then rises before step 8.
STUDENT = {"steps": BUDGET, "batch_size": 2, "lr": 0.05, "full_weights": True, "eval_every": EVERY, "save_every": 4,
           "log_every": 100}
WEIGHTS = "model.safetensors"


def _cfg(tiny_assets, root, name, teacher=True):
    data = tiny_config(tiny_assets, root, name=name)
    data["sft"]["student"] = dict(STUDENT)
    data["sft"]["teacher"] = {**data["sft"]["teacher"], "steps": 4, "lr": 0.05, "eval_every": 1, "enabled": teacher}  # LoRA
    data["distill"] = {"method": "sft", "params": {}, "train": data["distill"]["train"]}  # starts from the SFT student
    data["eval"]["rows"] = ["teacher", "student_sft", "student_distill"]
    return load_config(data)


def _val_loss(lm, art) -> float:
    spec = get_method("sft")
    val = [{"prompt": e.prompt, "target": e.target} for e in art.splits["validation"]]
    return mean_loss(lm, spec, spec.params_cls(), val, 2)


@pytest.fixture(scope="module")
def early(tiny_assets, tmp_path_factory):
    """reward, sft, distill and eval, recording the validation loss of every student model a later stage loads from
    the SFT checkpoint."""
    cfg = _cfg(tiny_assets, tmp_path_factory.mktemp("early"), "early")
    loaded, real = [], Artifacts.load

    def recording(self, role, checkpoint=None, for_training=False, in_loop=False):
        lm = real(self, role, checkpoint, for_training, in_loop)
        if role == "student" and checkpoint is not None and checkpoint.name == "student_sft":
            loaded.append(_val_loss(lm, self))
        return lm

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Artifacts, "load", recording)
        metrics = Pipeline(cfg).run(["reward", "sft", "distill", "eval"])
    return {"cfg": cfg, "metrics": metrics, "loaded": loaded, "run": cfg.run_dir}


def test_sft_keeps_the_best_validation_loss_step_and_later_stages_start_from_it(early):
    run, pipe = early["run"], Pipeline(early["cfg"])
    sft = run / "checkpoints" / "student_sft"
    log = read_jsonl(sft / LOG_FILE)
    curve = {line["step"]: line["val_loss"] for line in log if "val_loss" in line}
    assert [line["step"] for line in log] == list(range(1, BUDGET + 1))  # the whole budget was trained and logged
    assert sorted(curve) == [2, 4, 6, 8]
    best = min(curve, key=curve.get)
    assert best < BUDGET and curve[BUDGET] > curve[best]  # the loss rose after an early evaluation
    # The saved weights are the best step's: their validation loss is the curve's minimum, not the last step's.
    kept = _val_loss(LocalLM.load(early["cfg"].student, checkpoint=sft), pipe.artifacts)
    assert kept == pytest.approx(curve[best], rel=1e-5) and kept != pytest.approx(curve[BUDGET], rel=1e-4)
    # The distillation (trained from it) and the eval row loaded those same weights.
    assert len(early["loaded"]) >= 2 and all(v == pytest.approx(curve[best], rel=1e-5) for v in early["loaded"])
    choice = read_json(sft / "choice.json")
    assert choice["step"] == best and choice["budget"] == BUDGET and choice["criterion"] == "val_loss"
    # Only the kept checkpoint is left: no best snapshot, no last-step copy, no training state.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["student_distill", "student_sft", "teacher_sft"]
    assert read_json(run / "checkpoints" / "teacher_sft" / "choice.json")["curve"]  # the teacher chose too (LoRA)


def test_metrics_and_report_give_the_kept_step_its_budget_and_the_curve(early):
    metrics, run = early["metrics"], early["run"]
    student = metrics["sft"]["student"]
    log = read_jsonl(run / "checkpoints" / "student_sft" / LOG_FILE)
    assert student["budget"] == BUDGET and student["step"] < BUDGET and student["criterion"] == "val_loss"
    assert [(c["step"], c["val"]["loss"]) for c in student["curve"]] == [(r["step"], r["val_loss"]) for r in log if "val_loss" in r]
    assert set(metrics["sft"]) == {"teacher", "student"} and metrics["sft"]["teacher"]["budget"] == 4
    report = (run / "report.md").read_text()
    assert "## SFT: the kept checkpoints" in report
    assert f"| student | {BUDGET} | {student['step']} (val_loss) |" in report
    kept_loss = next(c["val"]["loss"] for c in student["curve"] if c["step"] == student["step"])
    assert f"**{student['step']}: {kept_loss:.3f}**" in report  # the curve, the kept step in bold


def test_a_rerun_reuses_the_kept_checkpoint_and_another_rule_is_refused(early, monkeypatch):
    cfg = early["cfg"]
    monkeypatch.setattr(Artifacts, "load", lambda *a, **k: pytest.fail("a model was loaded although SFT is done"))
    assert Pipeline(cfg).run(["sft"]) is not None
    with pytest.raises(ConfigError, match=r"(teacher|student)_sft kept its step by \{'criterion': 'val_loss'\}.*'last'"):
        Pipeline(load_config(str(cfg.run_dir / "config.yaml"), ["sft.select=last"]), allow_config_change=True).run(["sft"])


def test_a_crash_after_the_best_snapshot_or_during_the_install_resumes_to_the_same_weights(tiny_assets, tmp_path, monkeypatch):
    from prefdistill.training import best_checkpoint

    clean, crashed = (_cfg(tiny_assets, tmp_path, name, teacher=False) for name in ("clean", "crashed"))
    Pipeline(clean).run(["sft"])
    kept = read_json(clean.run_dir / "checkpoints" / "student_sft" / "choice.json")["step"]
    consider, install = best_checkpoint.BestCheckpoint.consider, best_checkpoint.BestCheckpoint.install

    def crash_at_the_last_evaluation(self, step, val, snapshot):
        if step == BUDGET:  # after the best snapshot, past the last saved state (step 4): steps 5-8 replay
            raise KeyboardInterrupt("simulated crash")
        return consider(self, step, val, snapshot)

    def crash_in_install(self, log):
        raise KeyboardInterrupt("simulated crash")

    for patched in (("consider", crash_at_the_last_evaluation), ("install", crash_in_install)):
        with monkeypatch.context() as mp:
            mp.setattr(best_checkpoint.BestCheckpoint, *patched)
            with pytest.raises(KeyboardInterrupt):
                Pipeline(crashed).run(["sft"])
        ckpts = crashed.run_dir / "checkpoints"
        assert not (ckpts / "student_sft").exists()  # nothing half-made is trusted as done
        assert read_json(ckpts / "student_sft.best" / "snapshot.json")["step"] == kept < BUDGET  # the best survives the crash
    assert best_checkpoint.BestCheckpoint.install is install
    Pipeline(crashed).run(["sft"])
    a, b = (load_file(str(c.run_dir / "checkpoints" / "student_sft" / WEIGHTS)) for c in (clean, crashed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_json(clean.run_dir / "checkpoints" / "student_sft" / "choice.json") == \
        read_json(crashed.run_dir / "checkpoints" / "student_sft" / "choice.json")
