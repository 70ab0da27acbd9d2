"""Non-finite steps: a NaN / inf loss skips the update; too many in a row save the last good state and stop."""
import dataclasses
import math

import pytest
import torch

from prefdistill.config.schema import LoraConfig, ModelConfig, TrainConfig
from prefdistill.methods import get_method
from prefdistill.models.hf import LocalLM
from prefdistill.training.loop import train
from prefdistill.training.state import NonFiniteLossError
from prefdistill.training.state import trainable_state

ROWS = [{"prompt": f"Summarize : the model {w}", "target": f"{w} data"} for w in ("learns", "improves", "results", "task")]
LORA = LoraConfig(enabled=True, dropout=0.1)  # dropout draws from torch's RNG: resuming must restore it


def _spec_nan_at(steps: set[int], calls: dict):
    """The SFT method, whose loss is NaN at the given (1-based) calls."""
    spec = get_method("sft")

    def loss(policy, rows, params):
        calls["n"] += 1
        value, stats = spec.loss(policy, rows, params)
        return (value * math.nan if calls["n"] in steps else value), stats

    return dataclasses.replace(spec, loss=loss)


def _run(assets, out, steps: int, nan_at=(), calls=None, **cfg):
    lm = LocalLM.load(ModelConfig(name_or_path=str(assets["student"])), for_training=True)
    spec = _spec_nan_at(set(nan_at), calls if calls is not None else {"n": 0})
    tcfg = TrainConfig(steps=steps, batch_size=2, lr=1e-2, save_every=100, log_every=100, **cfg)
    log = train(lm, spec, spec.params_cls(), ROWS, tcfg, LORA, out_dir=out, parent=None, seed=0, desc="sft")
    return log, trainable_state(lm.model)


def test_a_nan_step_changes_nothing(tiny_assets, tmp_path):
    """2 steps with the second NaN end on the weights of 1 step (the schedule's first lr is the same)."""
    one_log, one = _run(tiny_assets, tmp_path / "one", steps=1)
    log, two = _run(tiny_assets, tmp_path / "two", steps=2, nan_at={2})
    assert [e["skipped_nonfinite"] for e in log] == [0, 1]
    assert math.isnan(log[1]["loss"]) and log[1]["lr"] == log[0]["lr"]  # the scheduler did not advance
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_nan_streak_stops_with_the_last_good_state_and_resumes(tiny_assets, tmp_path):
    clean_log, clean = _run(tiny_assets, tmp_path / "clean", steps=6)
    out = tmp_path / "broken"
    with pytest.raises(NonFiniteLossError, match=r"3 optimizer steps in a row, the last at step 5 .*after step 2") as err:
        _run(tiny_assets, out, steps=6, nan_at={3, 4, 5}, max_nonfinite_in_a_row=3)
    state = torch.load(out.with_name("broken.state.pt"), weights_only=False)
    assert state["step"] == 2 and len(state["log"]) == 2 and str(out.with_name("broken.state.pt")) in str(err.value)
    log, resumed = _run(tiny_assets, out, steps=6)  # the cause is gone: resume from step 2, replaying steps 3-5
    assert [e["loss"] for e in log] == [e["loss"] for e in clean_log]
    assert all(torch.equal(clean[k], resumed[k]) for k in clean)
