"""The win-rate methods on tiny models: WIND / SPPO wiring, gradient direction, anchors, J-BOND and BOND rewards."""
import math

import numpy as np
import pytest
import torch

from prefdistill.config.schema import ModelConfig
from prefdistill.judges.oracles import PreferenceOracle
from prefdistill.methods import selfplay
from prefdistill.methods.bond import BONDParams, bond
from prefdistill.methods.jbond import JBONDParams, jbond
from prefdistill.methods.sppo import SPPOParams, sppo
from prefdistill.methods.wind import WINDParams, wind_step
from prefdistill.models.hf import LocalLM

PROMPT = "Summarize : the model learns data"


class FixedOracle(PreferenceOracle):
    """Prefers the completion listed first in `order` (a ranking of texts), deterministically."""

    def __init__(self, rank):
        super().__init__()
        self.rank = rank

    def win_matrices(self, prompts, completions):
        out = []
        for group in completions:
            r = np.array([self.rank(t) for t in group], dtype=float)
            out.append(np.where(r[:, None] > r[None, :], 1.0, np.where(r[:, None] < r[None, :], 0.0, 0.5)))
            self.comparisons += len(group) * (len(group) - 1) // 2
        return out


@pytest.fixture()
def student(tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    lm.model.requires_grad_(True)
    return lm


def _fixed_group(lm, texts):
    ids = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] + [lm.tokenizer.eos_token_id] for t in texts]
    return selfplay.Group([PROMPT] * len(texts), ids, [texts], sum(len(i) for i in ids))


def test_wind_squared_loss_is_the_hand_formula(student, tiny_assets, monkeypatch):
    reference = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))  # any fixed π_ref will do
    texts = ["the model learns", "data data", "the data"]
    monkeypatch.setattr("prefdistill.methods.wind.sample_group", lambda *a, **k: _fixed_group(student, texts))
    oracle = FixedOracle(lambda t: -len(t))  # shorter wins
    params = WINDParams(eta=2.0, beta=0.25, samples=3)
    loss, stats = wind_step(student, [{"prompt": PROMPT}], params, oracle=oracle, reference=reference)
    group = _fixed_group(student, texts)
    with torch.no_grad():
        logp = selfplay.sequence_logps_of(student, group.prompts, group.ids)
        ref = selfplay.sequence_logps_of(reference, group.prompts, group.ids)
    rates = torch.tensor(oracle.win_rates(oracle.win_matrices([PROMPT], [texts])[0]), dtype=torch.float32)
    expected = ((params.eta * params.beta * (logp - ref) - params.eta * (rates - 0.5)) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["count_samples"] == 3 and stats["count_oracle_comparisons"] == 3


def test_sppo_is_wind_without_the_magnet(student, monkeypatch):
    texts = ["the model learns", "data data"]
    monkeypatch.setattr("prefdistill.methods.wind.sample_group", lambda *a, **k: _fixed_group(student, texts))
    a, _ = sppo(student, [{"prompt": PROMPT}], SPPOParams(eta=3.0, samples=2), oracle=FixedOracle(len))
    b, _ = wind_step(student, [{"prompt": PROMPT}], WINDParams(eta=3.0, beta=0.0, samples=2), oracle=FixedOracle(len))
    assert a.item() == pytest.approx(b.item()) and a.item() == pytest.approx(2 * (3.0 * 0.5) ** 2 / 2)


@pytest.mark.parametrize("form", ["squared", "kl", "nce"])
def test_a_wind_step_raises_the_winner(form, student, monkeypatch):
    texts = ["the model learns", "data data"]
    monkeypatch.setattr("prefdistill.methods.wind.sample_group", lambda *a, **k: _fixed_group(student, texts))
    group = _fixed_group(student, texts)
    before = selfplay.sequence_logps_of(student, group.prompts, group.ids).detach()
    opt = torch.optim.SGD(student.model.parameters(), lr=0.05)
    loss, _ = wind_step(student, [{"prompt": PROMPT}], WINDParams(loss=form, eta=1.0, beta=0.0, samples=2),
                        oracle=FixedOracle(lambda t: t.startswith("the")))
    loss.backward()
    opt.step()
    after = selfplay.sequence_logps_of(student, group.prompts, group.ids).detach()
    assert (after - before)[0] > (after - before)[1]  # the sample that wins gains log-probability relative to the loser


def test_anchor_swap_restores_weights_and_ema_moves_toward_the_student(student):
    state = {}
    selfplay.init_anchor(student, state)
    params = dict(student.model.named_parameters())
    name = next(iter(params))
    with torch.no_grad():
        params[name].add_(1.0)  # the student moves away from its anchor
    current = params[name].detach().clone()
    with selfplay.anchor_weights(student, state):
        assert torch.equal(params[name], state["anchor"][name])
    assert torch.equal(params[name], current)
    old = state["anchor"][name].clone()
    selfplay.ema_anchor(student, state, 0.25)
    assert torch.allclose(state["anchor"][name], 0.75 * old + 0.25 * current)


def test_jbond_penalises_a_sample_that_loses_to_both_anchor_samples(student, monkeypatch):
    groups = iter([_fixed_group(student, ["data"]), _fixed_group(student, ["the model learns", "the model"])])
    monkeypatch.setattr("prefdistill.methods.jbond.sample_group", lambda *a, **k: next(groups))
    _, stats = jbond(student, [{"prompt": PROMPT}], JBONDParams(), oracle=FixedOracle(len), state={})
    assert stats["loses_both"] == 1.0
    assert stats["mean_return"] == pytest.approx(-math.log(16) - stats["kl_to_anchor"], abs=1e-5)
    groups = iter([_fixed_group(student, ["the model learns data"]), _fixed_group(student, ["the model learns", "the model"])])
    _, stats = jbond(student, [{"prompt": PROMPT}], JBONDParams(), oracle=FixedOracle(len), state={})
    assert stats["loses_both"] == 0.0


def test_bond_quantile_reward_is_floored_and_the_anchor_moves_every_iteration(student, monkeypatch):
    from prefdistill.methods.bond import move_anchor

    calls = []

    def fake_group(lm, prompts, *, k, **kw):
        calls.append(k)
        return _fixed_group(student, ["data"] if k == 1 else ["the model learns", "the model"])

    monkeypatch.setattr("prefdistill.methods.bond.sample_group", fake_group)
    state, params = {}, BONDParams(n=2, anchor_every=2)
    _, stats = bond(student, [{"prompt": PROMPT}], params, oracle=FixedOracle(len), state=state)
    assert stats["mean_log_quantile"] == pytest.approx(math.log(1 / 4))  # lost to both: floored at 1/(2n)
    first = {k: v.clone() for k, v in state["anchor"].items()}

    def optimizer_step():
        with torch.no_grad():
            for p in student.model.parameters():
                p.add_(0.01)
        move_anchor(student, params, state=state)  # what the training loop calls after each optimizer step

    optimizer_step()
    bond(student, [{"prompt": PROMPT}], params, oracle=FixedOracle(len), state=state)
    assert all(torch.equal(first[k], state["anchor"][k]) for k in first)  # after step 1: same iteration, same anchor
    optimizer_step()
    assert not all(torch.equal(first[k], state["anchor"][k]) for k in first)  # after step 2: a new iteration
    assert calls == [1, 2, 1, 2]
