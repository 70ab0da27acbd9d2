"""train()'s on_step hook (evaluation that leaves training untouched, snapshots), the SFT validation loss,
SFT of every weight under a LoRA model, and `load_bench_config(..., quick=True)`."""
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prefdistill.config.checks import load_bench_config, load_config
from prefdistill.config.schema import ConfigError, LoraConfig, ModelConfig, SamplingConfig, TrainConfig
from prefdistill.io import read_json, read_jsonl
from prefdistill.methods import get_method
from prefdistill.models.hf import CHECKPOINT_META, LocalLM
from prefdistill.models.tiny import tiny_config, tiny_rows
from prefdistill.run.pipeline import Pipeline
from prefdistill.training import loop as train_mod
from prefdistill.training.loop import LOG_FILE, mean_loss, train

ROWS = [{"prompt": f"Summarize : {r['document']}", "target": r["summary"]} for r in tiny_rows(8, seed=3)]
PROMPT = "Summarize : the model learns a short summary"
LORA = LoraConfig(enabled=True, dropout=0.1)  # dropout active: an RNG the hook disturbed would change the weights
ADAPTER = "adapter_model.safetensors"


def _student(tiny_assets) -> ModelConfig:
    return ModelConfig(name_or_path=str(tiny_assets["student"]))


def _train(tiny_assets, out, *, steps=3, on_step=None):
    lm = LocalLM.load(_student(tiny_assets), for_training=True)
    spec = get_method("sft")
    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-2, save_every=100, log_every=100)
    log = train(lm, spec, spec.params_cls(), ROWS, cfg, LORA, out_dir=out, parent=None, seed=0, desc="sft", on_step=on_step)
    return log, load_file(str(out / ADAPTER))


def _without(log, keys=("elapsed_s",)):
    """The log without wall times (elapsed_s, sampling_time_s, ...) and `keys`."""
    return [{k: v for k, v in line.items() if k not in keys and not k.endswith("_time_s")} for line in log]


def _logits(tiny_assets, checkpoint):
    lm = LocalLM.load(_student(tiny_assets), checkpoint=checkpoint)
    ids = torch.tensor([lm.prompt_ids(PROMPT)])
    with torch.no_grad():
        return lm.model(input_ids=ids).logits


@pytest.fixture(scope="module")
def runs(tiny_assets, tmp_path_factory):
    """The same 3-step SFT run (seed 0, LoRA dropout 0.1) without a hook, with a generating + snapshotting hook,
    and cut to 1 step."""
    root = tmp_path_factory.mktemp("hook")
    plain_log, plain = _train(tiny_assets, root / "plain")
    seen = []

    def hook(step, lm, snapshot):
        seen.append({"step": step, "training": lm.model.training, "grad": torch.is_grad_enabled()})
        gens = lm.generate([PROMPT, "Summarize : data training"], SamplingConfig(do_sample=False, max_new_tokens=4), seed=123,
                           desc="")  # reseeds torch's global generator
        torch.rand(5), random.random(), np.random.rand()  # and draws from every RNG
        if step == 1:
            snapshot(root / "snap1")
        return {"hook_generation": gens[0][0], "hook_step": step}

    hooked_log, hooked = _train(tiny_assets, root / "hooked", on_step=hook)
    _, one_step = _train(tiny_assets, root / "one", steps=1)
    return {"root": root, "plain": (plain_log, plain), "hooked": (hooked_log, hooked), "one": one_step, "seen": seen}


def test_hook_leaves_training_bitwise_unchanged(runs):
    (plain_log, plain), (hooked_log, hooked) = runs["plain"], runs["hooked"]
    assert plain.keys() == hooked.keys() and plain
    assert all(torch.equal(plain[k], hooked[k]) for k in plain)
    assert _without(hooked_log, ("elapsed_s", "hook_generation", "hook_step")) == _without(plain_log)
    assert [line["hook_step"] for line in hooked_log] == [1, 2, 3]  # the hook's dict lands in its step's log line
    assert all(isinstance(line["hook_generation"], str) for line in hooked_log)
    # Called after every step, in eval mode, without gradients.
    assert runs["seen"] == [{"step": s, "training": False, "grad": False} for s in (1, 2, 3)]


def test_a_hook_that_leaked_its_rng_would_show(tiny_assets, runs, tmp_path, monkeypatch):
    """The check above can fail: with the RNG restore switched off, the same hook changes the trained weights."""
    monkeypatch.setattr(train_mod, "restore_rng", lambda state: None)

    def hook(step, lm, snapshot):
        torch.manual_seed(1234 + step)

    _, leaked = _train(tiny_assets, tmp_path / "leaked", on_step=hook)
    plain = runs["plain"][1]
    assert not all(torch.equal(plain[k], leaked[k]) for k in plain)


def test_snapshot_at_step_k_is_the_weights_after_k_steps(tiny_assets, runs):
    root = runs["root"]
    meta = read_json(root / "snap1" / CHECKPOINT_META)
    assert meta["kind"] == "adapter" and meta["steps"] == 1 and meta["parent"] is None
    snap = load_file(str(root / "snap1" / ADAPTER))
    one = runs["one"]
    assert snap.keys() == one.keys() and all(torch.equal(snap[k], one[k]) for k in one)
    # Loaded as a checkpoint, it gives the 1-step run's logits, and not those of the finished 3-step run.
    at_one = _logits(tiny_assets, root / "snap1")
    assert torch.equal(at_one, _logits(tiny_assets, root / "one"))
    assert not torch.allclose(at_one, _logits(tiny_assets, root / "hooked"), atol=1e-4)
    assert not torch.allclose(at_one, _logits(tiny_assets, None), atol=1e-4)


# ----------------------------------------------------------------------------- SFT validation loss


def _sft_cfg(tiny_assets, tmp_path, name, **student):
    data = tiny_config(tiny_assets, tmp_path, name=name)
    data["sft"]["student"] = {**data["sft"]["student"], **student}
    return data


def test_sft_logs_validation_loss_at_multiples_and_the_last_step(tiny_assets, tmp_path):
    data = _sft_cfg(tiny_assets, tmp_path, "sftval", steps=5, eval_every=2)
    cfg = load_config(data)
    pipe = Pipeline(cfg)
    pipe.run(["sft"])
    log = read_jsonl(cfg.run_dir / "checkpoints" / "student_sft" / LOG_FILE)
    assert [line["step"] for line in log] == [1, 2, 3, 4, 5]
    assert [line["step"] for line in log if "val_loss" in line] == [2, 4, 5]
    assert [line["step"] for line in log if "val_loss_initial" in line] == [1]
    # The numbers are the SFT loss on the validation split: of the untrained student, and of the kept checkpoint
    # (the lowest of them: sft.select auto is val_loss under `prefdistill run`).
    spec, val = get_method("sft"), [{"prompt": e.prompt, "target": e.target} for e in pipe.artifacts.splits["validation"]]
    untrained = LocalLM.load(cfg.student)
    assert log[0]["val_loss_initial"] == pytest.approx(mean_loss(untrained, spec, spec.params_cls(), val, 2), rel=1e-5)
    trained = LocalLM.load(cfg.student, checkpoint=cfg.run_dir / "checkpoints" / "student_sft")
    lowest = min(line["val_loss"] for line in log if "val_loss" in line)
    assert lowest == pytest.approx(mean_loss(trained, spec, spec.params_cls(), val, 2), rel=1e-5)
    assert lowest != pytest.approx(log[0]["val_loss_initial"], rel=1e-4)
    # The teacher's SFT has no eval_every: no validation loss in its log; the bench reads both logs.
    teacher = read_jsonl(cfg.run_dir / "checkpoints" / "teacher_sft" / LOG_FILE)
    assert not any("val_loss" in line or "val_loss_initial" in line for line in teacher)
    logs = pipe.artifacts.sft_logs()
    assert set(logs) == {"teacher", "student"} and logs["student"] == log


def test_validation_loss_does_not_change_sft_training(tiny_assets, tmp_path):
    data = _sft_cfg(tiny_assets, tmp_path, "with", eval_every=1, **{"steps": 3})
    data["sft"]["select"] = "last"  # keep the last step: the weights training made, with and without evaluations
    with_eval = load_config(data)
    without = load_config(_sft_cfg(tiny_assets, tmp_path, "without", steps=3))
    for cfg in (with_eval, without):
        Pipeline(cfg).run(["sft"])
    a, b = (load_file(str(c.run_dir / "checkpoints" / "student_sft" / ADAPTER)) for c in (with_eval, without))
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = read_jsonl(with_eval.run_dir / "checkpoints" / "student_sft" / LOG_FILE)
    assert [line["step"] for line in log if "val_loss" in line] == [1, 2, 3]


# ----------------------------------------------------------------------------- full-weights SFT under LoRA


def test_full_weights_sft_then_lora_distillation(tiny_assets, tmp_path):
    data = _sft_cfg(tiny_assets, tmp_path, "full", full_weights=True)
    data["sft"]["teacher"]["enabled"] = False
    data["distill"] = {"method": "sft", "params": {}, "train": data["distill"]["train"]}
    cfg = load_config(data)
    assert cfg.student.lora.enabled
    Pipeline(cfg).run(["sft", "distill"])
    sft_dir, distill_dir = cfg.run_dir / "checkpoints" / "student_sft", cfg.run_dir / "checkpoints" / "student_distill"
    sft_meta, distill_meta = read_json(sft_dir / CHECKPOINT_META), read_json(distill_dir / CHECKPOINT_META)
    assert sft_meta["kind"] == "full" and sft_meta["parent"] is None
    assert not (sft_dir / ADAPTER).exists() and (sft_dir / "tokenizer_config.json").is_file()
    assert distill_meta["kind"] == "adapter" and (distill_dir / ADAPTER).is_file()
    assert (distill_dir / distill_meta["parent"]).resolve() == sft_dir.resolve()
    # Every weight moved in the SFT, including those LoRA never touches (the norms, the embeddings).
    base = LocalLM.load(cfg.student).model.state_dict()
    sft = LocalLM.load(cfg.student, checkpoint=sft_dir).model.state_dict()
    for name in ("model.norm.weight", "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"):
        assert not torch.equal(base[name], sft[name]), name
    # The distilled checkpoint loads through its parent: the full SFT weights plus the adapter.
    distilled = LocalLM.load(cfg.student, checkpoint=distill_dir).model.state_dict()
    assert torch.equal(distilled["model.norm.weight"], sft["model.norm.weight"])  # not trained by the adapter
    assert not torch.equal(distilled["model.layers.0.self_attn.q_proj.weight"], sft["model.layers.0.self_attn.q_proj.weight"])


# ----------------------------------------------------------------------------- bench --quick


def _quick_cfg(tiny_assets, tmp_path, quick):
    data = tiny_config(tiny_assets, tmp_path, name="qb")
    data["bench"] = {"methods": [{"name": "seqkd", "method": "seqkd"}], "seeds": [0, 1, 2], "checkpoints": [1]}
    if quick is not None:
        data["bench"]["quick"] = quick
    return data


def test_quick_applies_the_bench_quick_overrides(tiny_assets, tmp_path):
    data = _quick_cfg(tiny_assets, tmp_path, ["bench.seeds=[0]", "data.max_test=5", "distill.train.steps=1"])
    full_cfg, full = load_bench_config(data)
    assert full.seeds == [0, 1, 2] and full_cfg.name == "qb" and full_cfg.data.max_test is None
    cfg, bench = load_bench_config(data, quick=True)
    assert bench.seeds == [0] and cfg.data.max_test == 5 and cfg.distill.train.steps == 1
    assert cfg.name == "qb-quick" and cfg.run_dir == tmp_path / "qb-quick"
    assert bench.methods == full.methods and bench.checkpoints == [1]
    # The user's overrides win over bench.quick's, and the quick folder follows the user's name.
    cfg, bench = load_bench_config(data, ["bench.seeds=[4,5]", "name=mine"], quick=True)
    assert bench.seeds == [4, 5] and cfg.data.max_test == 5 and cfg.name == "mine-quick"
    assert load_bench_config(data, ["data.max_test=7"], quick=True)[0].data.max_test == 7
    # The quick config is checked like any other: here checkpoint 2 is no step of the 1-step quick run.
    with pytest.raises(ConfigError, match="bench.checkpoints: 2"):
        load_bench_config(_quick_cfg(tiny_assets, tmp_path, ["distill.train.steps=1", "bench.checkpoints=[2]"]), quick=True)


def test_quick_without_bench_quick_is_refused(tiny_assets, tmp_path):
    data = _quick_cfg(tiny_assets, tmp_path, None)
    load_bench_config(data)  # fine without --quick
    with pytest.raises(ConfigError, match=r"--quick: this bench config has no bench.quick overrides"):
        load_bench_config(data, quick=True)
