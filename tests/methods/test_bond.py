"""BOND / J-BOND as a whole: the Jeffreys loss against its closed form, the anchor schedules under the real
training loop at every grad_accum, leave-one-out baselines at batch size one, and dropout-free comparisons."""
import dataclasses
import math

import pytest
import torch

from prefdistill.config.checks import load_config
from prefdistill.config.schema import ConfigError, LoraConfig, ModelConfig, TrainConfig
from prefdistill.losses import jeffreys_loss, kl_regularised_returns, leave_one_out_baseline, log_quantile_reward
from prefdistill.methods import get_method, selfplay
from prefdistill.methods.bond import BONDParams
from prefdistill.methods.jbond import JBONDParams, jbond
from prefdistill.methods.registry import family_methods
from prefdistill.models.hf import LocalLM
from prefdistill.training.loop import _wrap_lora, train

PROMPT = "Summarize : the model learns data"


# ----------------------------------------------------------------------------- the pure functions


def test_jeffreys_loss_is_its_closed_form_with_a_leave_one_out_baseline():
    best = torch.tensor([-3.0, -5.0, -2.0])
    sample = torch.tensor([-4.0, -1.0, -6.0])
    returns = torch.tensor([1.0, -2.0, 4.0])
    beta = 0.3
    baseline = torch.tensor([(-2.0 + 4.0) / 2, (1.0 + 4.0) / 2, (1.0 - 2.0) / 2])
    expected = (1 - beta) * -best + beta * -((returns - baseline) * sample)
    assert torch.allclose(jeffreys_loss(best, sample, returns, beta=beta), expected)
    assert torch.allclose(leave_one_out_baseline(returns), baseline)


@pytest.mark.parametrize("length", [1, 48])
def test_gradients_do_not_depend_on_the_completion_length(length):
    """Sequence level: d loss / d log π(y_best) is −(1 − β) per token whatever the length (a per-token mean gave −(1 − β)/T)."""
    beta = 0.5
    per_token_best = torch.full((2, length), -0.5, requires_grad=True)
    per_token_sample = torch.full((2, length), -0.7, requires_grad=True)
    returns = torch.tensor([2.0, -1.0])
    jeffreys_loss(per_token_best.sum(-1), per_token_sample.sum(-1), returns, beta=beta).sum().backward()
    assert torch.allclose(per_token_best.grad, torch.full_like(per_token_best, -(1 - beta)))
    advantage = torch.tensor([2.0 - (-1.0), -1.0 - 2.0])  # R_b − mean of the other returns
    assert torch.allclose(per_token_sample.grad, (-beta * advantage)[:, None].expand(2, length))


def test_a_batch_of_one_keeps_its_policy_gradient():
    sample = torch.tensor([-3.0], requires_grad=True)
    jeffreys_loss(torch.tensor([-1.0]), sample, torch.tensor([-2.5]), beta=0.5).sum().backward()
    assert sample.grad.item() == pytest.approx(-0.5 * -2.5)  # baseline 0, not the sample's own return


def test_no_gradient_flows_into_the_returns():
    returns = torch.tensor([1.0, 3.0], requires_grad=True)
    sample = torch.tensor([-2.0, -2.0], requires_grad=True)
    jeffreys_loss(torch.tensor([-1.0, -1.0]), sample, returns, beta=0.5).sum().backward()
    assert returns.grad is None and sample.grad is not None
    policy = torch.tensor([-2.0], requires_grad=True)
    assert not kl_regularised_returns(torch.tensor([0.0]), policy, torch.tensor([-1.0]), kl_coef=0.5).requires_grad


def test_quantile_reward_is_the_mid_rank_floored_at_half_a_tie():
    wins = torch.tensor([[1.0, 0.9, 0.2, 0.5], [0.0, 0.1, 0.4, 0.3]])  # P(y ≻ a_j) for n = 4 anchor samples
    q = log_quantile_reward(wins).exp()
    assert q[0].item() == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert q[1].item() == pytest.approx(1 / 8)  # lost to all: floored at 1/(2n)


# ----------------------------------------------------------------------------- schedules in the real loop

ROWS = [{"prompt": PROMPT, "chosen": "the model learns", "rejected": "data data"} for _ in range(4)]


def _run_with_recorded_steps(tiny_assets, tmp_path, name, params, *, steps, grad_accum, batch_size):
    """Train with the method's real `after_step` but a cheap stand-in loss; returns (state, initial weights,
    the trainable weights right after each optimizer step, loss calls)."""
    spec = get_method(name)
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    record = {"after": [], "calls": 0, "initial": None}

    def loss(policy, rows, p, *, state, **_):
        selfplay.init_anchor(policy, state)
        if record["initial"] is None:
            record["initial"] = {k: v.clone() for k, v in state["anchor"].items()}
        record["calls"] += 1
        trainable = [t for t in policy.model.parameters() if t.requires_grad]
        return sum((t.float() ** 2).sum() for t in trainable) * 1e-2 * len(rows), {}

    def after_step(policy, p, *, state, **extras):
        record["after"].append({n: t.detach().clone() for n, t in selfplay._trainable(policy).items()})
        spec.after_step(policy, p, state=state, **extras)

    probe = dataclasses.replace(spec, loss=loss, after_step=after_step)
    state = {}
    cfg = TrainConfig(steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=1e-2, save_every=100)
    train(lm, probe, params, ROWS, cfg, LoraConfig(enabled=False), out_dir=tmp_path / "ckpt", parent=None, seed=0,
          desc=name, extras={"state": state, "oracle": None})
    return state, record


@pytest.mark.parametrize("grad_accum, batch_size", [(1, 1), (4, 1), (4, 2), (3, 4)])
def test_jbond_ema_moves_exactly_eta_once_per_optimizer_step_after_it(tiny_assets, tmp_path, grad_accum, batch_size):
    eta, steps = 0.25, 3
    state, record = _run_with_recorded_steps(tiny_assets, tmp_path, "jbond", JBONDParams(ema=eta), steps=steps,
                                             grad_accum=grad_accum, batch_size=batch_size)
    assert record["calls"] == steps * grad_accum and len(record["after"]) == steps  # per step, not per micro-batch
    expected = record["initial"]
    for weights in record["after"]:  # anchor ← (1 − η)·anchor + η·(weights after the step)
        expected = {k: (1 - eta) * expected[k] + eta * weights[k] for k in expected}
    for k in expected:
        assert torch.allclose(state["anchor"][k], expected[k], atol=1e-6), k


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_bond_anchor_moves_every_anchor_every_optimizer_steps(tiny_assets, tmp_path, grad_accum):
    state, record = _run_with_recorded_steps(tiny_assets, tmp_path, "bond", BONDParams(n=2, anchor_every=2), steps=5,
                                             grad_accum=grad_accum, batch_size=2)
    assert record["calls"] == 5 * grad_accum and state["updates"] == 5
    for k, v in state["anchor"].items():  # reset after steps 2 and 4: the weights after step 4, not 5 or the start
        assert torch.equal(v, record["after"][3][k]), k
        assert not torch.equal(v, record["after"][4][k])


@pytest.mark.parametrize("name, params", [("jbond", JBONDParams(ema=0.25, max_new_tokens=4)),
                                          ("bond", BONDParams(n=2, anchor_every=2, max_new_tokens=4))])
def test_the_whole_method_over_several_steps_with_grad_accum_and_a_batch_of_one(name, params, tiny_assets, tmp_path):
    """The real loss (sampling, oracle, Jeffreys loss) and the real anchor schedule together, in `train()`:
    3 optimizer steps of 2 micro-batches of one prompt. The loss is finite, the policy-gradient part is active
    (leave-one-out: a batch of one keeps it), and the anchor follows the optimizer steps only."""
    from prefdistill.testing import WordCountJudge

    from prefdistill.judges.oracles import BradleyTerryOracle

    spec = get_method(name)
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    record = {"after": [], "initial": None, "losses": []}

    def loss(policy, rows, p, *, state, **extras):
        out, stats = spec.loss(policy, rows, p, state=state, **extras)
        if record["initial"] is None:
            record["initial"] = {k: v.clone() for k, v in state["anchor"].items()}  # the anchor the first call made
        record["losses"].append(out.item())
        return out, stats

    def after_step(policy, p, *, state, **extras):
        record["after"].append({n: t.detach().clone() for n, t in selfplay._trainable(policy).items()})
        spec.after_step(policy, p, state=state, **extras)

    state = {}
    cfg = TrainConfig(steps=3, batch_size=1, grad_accum=2, lr=1e-2, save_every=100)
    log = train(lm, dataclasses.replace(spec, loss=loss, after_step=after_step), params, ROWS, cfg, LoraConfig(enabled=False),
                out_dir=tmp_path / "ckpt", parent=None, seed=0, desc=name,
                extras={"state": state, "oracle": BradleyTerryOracle(WordCountJudge())})
    assert len(record["losses"]) == 6 and all(math.isfinite(x) for x in record["losses"])
    assert len(log) == 3 and len(record["after"]) == 3
    assert any(r["grad_norm"] > 0 for r in log)
    if name == "jbond":
        expected = record["initial"]
        for weights in record["after"]:
            expected = {k: 0.75 * expected[k] + 0.25 * weights[k] for k in expected}
    else:  # reset after optimizer step 2 of 3
        expected = record["after"][1]
    for k in expected:
        assert torch.allclose(state["anchor"][k], expected[k], atol=1e-6), k


# ----------------------------------------------------------------------------- dropout and temperature


@pytest.fixture()
def lora_student(tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    lm.model = _wrap_lora(lm.model, LoraConfig(enabled=True, r=4, alpha=8, dropout=0.1, target_modules="all-linear"))
    with torch.no_grad():  # non-zero LoRA B, so that LoRA dropout changes the output
        for n, p in lm.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    lm.model.train()
    return lm


def test_frozen_copy_comparisons_have_no_dropout_noise(lora_student):
    ids = [lora_student.tokenizer("the model learns data", add_special_tokens=False)["input_ids"]] * 4
    prompts = [PROMPT] * 4
    torch.manual_seed(0)
    noisy = selfplay.sequence_logps_of(lora_student, prompts, ids).detach()
    assert noisy.std() > 1e-4  # train mode with LoRA dropout 0.1: the same sequence scores differently
    state = {}
    selfplay.init_anchor(lora_student, state)  # the anchor equals the student
    with selfplay.anchor_weights(lora_student, state):
        anchor = selfplay.scored_without_dropout(lora_student, prompts, ids).detach()
    policy = selfplay.scored_without_dropout(lora_student, prompts, ids)
    assert policy.requires_grad and torch.equal(policy.detach() - anchor, torch.zeros(4))
    assert all(m.training for m in lora_student.model.modules() if isinstance(m, torch.nn.Dropout))  # restored


def test_jbond_sees_zero_kl_when_the_anchor_is_the_student(lora_student, monkeypatch):
    def fixed(lm, prompts, *, k, **_):
        texts = ["the model learns", "data data"][:k]
        ids = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        return selfplay.Group([p for p in prompts for _ in range(k)], ids * len(prompts), [texts] * len(prompts), 0)

    monkeypatch.setattr("prefdistill.methods.jbond.sample_group", fixed)
    from prefdistill.testing import WordCountJudge

    from prefdistill.judges.oracles import BradleyTerryOracle

    _, stats = jbond(lora_student, [{"prompt": PROMPT}] * 3, JBONDParams(), oracle=BradleyTerryOracle(WordCountJudge()), state={})
    assert stats["kl_to_anchor"] == 0.0


@pytest.mark.parametrize("method", family_methods("win_rate"))  # the self-play samplers, from the registry
def test_sampling_temperature_other_than_one_is_refused(method, tiny_assets, tmp_path):
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path)
    raw["distill"] = {**raw["distill"], "method": method, "params": {"temperature": 0.7}}
    raw["oracle"] = {"kind": "judge"}
    with pytest.raises(ConfigError, match=r"distill\.params\.temperature=0\.7"):
        load_config(raw)
    raw["distill"]["params"] = {"temperature": 1.0}
    load_config(raw)


def test_bond_kl_coefficient_and_returns(tiny_assets):
    reward = torch.tensor([math.log(0.5), math.log(0.25)])
    ret = kl_regularised_returns(reward, torch.tensor([-3.0, -2.0]), torch.tensor([-4.0, -2.0]), kl_coef=1 / 3)
    assert torch.allclose(ret, torch.tensor([math.log(0.5) - 1 / 3, math.log(0.25)]))
