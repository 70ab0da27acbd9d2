"""DPKD: the losses against hand computation and closed forms, gradient directions, both modes,
stored teacher log-probabilities, and the errors users meet."""
import math

import pytest
import torch
import torch.nn.functional as F

from prefdistill.methods import ResolvedMethod, resolve_method
from prefdistill.config.checks import load_config
from prefdistill.config.schema import ConfigError, LoraConfig, ModelConfig, TrainConfig
from prefdistill.losses import dpkd_ipo_loss, dpkd_loss, simpo_loss, token_argmax_dpkd_loss
from prefdistill.methods import get_method
from prefdistill.methods.dpkd import DPKDParams, dpkd
from prefdistill.models.hf import LocalLM
from prefdistill.models.tiny import tiny_config


def test_dpkd_loss_hand_value_and_student_equal_teacher():
    qc, qr, pc, pr = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.0])
    # margin = (−1 + 1.5) − (−2 + 1) = 1.5; loss = −log σ(0.4 · 1.5) = log(1 + e^{−0.6})
    assert dpkd_loss(qc, qr, pc, pr, beta=0.4).item() == pytest.approx(math.log1p(math.exp(-0.6)), rel=1e-6)
    x = torch.randn(5)
    y = torch.randn(5)
    assert torch.allclose(dpkd_loss(x, y, x, y, beta=3.0), torch.full((5,), math.log(2)))


def test_dpkd_gradient_raises_teacher_sample_and_lowers_student_sample():
    qc = torch.tensor([-2.0], requires_grad=True)
    qr = torch.tensor([-1.0], requires_grad=True)
    dpkd_loss(qc, qr, torch.tensor([-1.0]), torch.tensor([-1.5]), beta=0.5).sum().backward()
    assert qc.grad.item() < 0 < qr.grad.item()  # descent raises log q(y_t), lowers log q(y_s)


def test_ipo_and_simpo_closed_forms():
    qc, qr, pc, pr = torch.tensor([-1.0, 0.5]), torch.tensor([-2.0, 0.0]), torch.tensor([-1.5, 0.0]), torch.tensor([-1.0, 1.0])
    delta = (qc - pc) - (qr - pr)
    assert torch.allclose(dpkd_ipo_loss(qc, qr, pc, pr, tau=0.25), (delta - 2.0) ** 2)
    assert torch.allclose(simpo_loss(qc, qr, beta=2.0, gamma=0.3), torch.log1p(torch.exp(-(2.0 * (qc - qr) - 0.3))))
    with pytest.raises(ValueError, match="tau"):
        dpkd_ipo_loss(qc, qr, pc, pr, tau=0.0)


def test_token_argmax_loss_against_naive_loop():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    fast = token_argmax_dpkd_loss(s, t, beta=0.7)
    for b in range(2):
        for i in range(3):
            lq, lp = F.log_softmax(s[b, i], -1), F.log_softmax(t[b, i], -1)
            at, as_ = int(t[b, i].argmax()), int(s[b, i].argmax())
            rel = (lq[at] - lq[as_]) - (lp[at] - lp[as_])
            assert fast[b, i].item() == pytest.approx(-F.logsigmoid(0.7 * rel).item(), rel=1e-5)
    assert torch.allclose(token_argmax_dpkd_loss(t, t, beta=1.0), torch.full((2, 3), math.log(2)))  # argmaxes agree


def test_token_argmax_gradient_moves_student_toward_teacher_argmax():
    t = torch.tensor([[[0.0, 3.0, 0.0]]])
    s = torch.tensor([[[2.0, 0.0, 0.0]]], requires_grad=True)
    token_argmax_dpkd_loss(s, t, beta=1.0).sum().backward()
    assert s.grad[0, 0, 1] < 0 < s.grad[0, 0, 0]


def _pair_rows():
    return [{"id": f"x#{i}", "prompt": "Summarize : the model learns data", "chosen": "the model learns", "rejected": "data data",
             "chosen_source": "teacher", "teacher_chosen_logp": -4.0 - i, "teacher_rejected_logp": -2.0} for i in range(3)]


@pytest.mark.parametrize("normalize", [True, False])
def test_sequence_mode_equals_the_public_loss(normalize, tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    rows = _pair_rows()
    params = DPKDParams(beta=0.5, normalize=normalize, lm_weight=0.0)
    loss, stats = dpkd(lm, rows, params)
    qc, mc = lm.completion_logps([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    qr, mr = lm.completion_logps([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    lc = mc.sum(-1).float() if normalize else torch.ones(3)
    lr = mr.sum(-1).float() if normalize else torch.ones(3)
    pc = torch.tensor([r["teacher_chosen_logp"] for r in rows]) / lc
    pr = torch.tensor([r["teacher_rejected_logp"] for r in rows]) / lr
    expected = dpkd_loss((qc * mc).sum(-1) / lc, (qr * mr).sum(-1) / lr, pc, pr, beta=0.5).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "lm_ce" not in stats
    with_lm, stats = dpkd(lm, rows, DPKDParams(beta=0.5, normalize=normalize))
    assert with_lm.item() == pytest.approx(loss.item() + 0.5 * stats["lm_ce"], rel=1e-5)


def test_variants_are_config_not_code(tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    values = {form: dpkd(lm, _pair_rows(), DPKDParams(loss=form, lm_weight=0.0))[0].item() for form in ("sigmoid", "ipo", "simpo")}
    assert len(set(values.values())) == 3
    assert "teacher_pair_logps" not in DPKDParams(loss="simpo").requirements()[1]
    assert DPKDParams(mode="token_argmax").requirements() == ("targets", {"teacher"})


def test_token_argmax_mode_trains_every_parameter(tiny_assets, tmp_path):
    from prefdistill.training.loop import train

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    teacher = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    rows = [{"prompt": "Summarize : the model learns data", "target": "the model learns"}] * 4
    log = train(lm, get_method("dpkd"), DPKDParams(mode="token_argmax"), rows, TrainConfig(steps=2, batch_size=2, lr=1e-2, save_every=100),
                LoraConfig(enabled=False), out_dir=tmp_path / "ckpt", parent=None, seed=0, desc="dpkd", extras={"teacher": teacher})
    after = dict(lm.model.named_parameters())
    assert not [n for n, v in before.items() if torch.equal(v, after[n])]
    assert {"ce", "dpkd_token", "argmax_agreement"} <= set(log[0])


def _cfg(tiny_assets, tmp_path, **params):
    data = tiny_config(tiny_assets, tmp_path, name="dpkd")
    data["distill"] = {"method": "dpkd", "params": params, "train": data["distill"]["train"]}
    return data


def test_token_argmax_mode_needs_one_vocabulary_but_sequence_mode_does_not(tiny_assets, tmp_path):
    data = _cfg(tiny_assets, tmp_path, mode="token_argmax")
    data["teacher"]["name_or_path"] = str(tiny_assets["foreign"])
    with pytest.raises(ConfigError, match="one vocabulary"):
        load_config(data)
    data["distill"]["params"] = {"mode": "sequence"}
    load_config(data)
    with pytest.raises(ConfigError, match="only the sigmoid form"):
        load_config(_cfg(tiny_assets, tmp_path, mode="token_argmax", loss="ipo"))


def test_teacher_logps_are_stored_once_and_reused(tiny_assets, tmp_path):
    from prefdistill.run.pipeline import Pipeline
    from prefdistill.io import read_jsonl

    pipe = Pipeline(load_config(_cfg(tiny_assets, tmp_path)))
    pipe.run(["sft", "pairs", "distill"])
    stored = read_jsonl(pipe.run_dir / "pairs" / "teacher_logps.jsonl")
    pairs = read_jsonl(pipe.run_dir / "pairs" / "pairs.jsonl")
    assert [r["id"] for r in stored] == [p["id"] for p in pairs]
    teacher = pipe.artifacts.load("teacher", pipe.artifacts.sft_checkpoint("teacher"))
    p0 = pairs[0]
    assert stored[0]["teacher_sample"] == pytest.approx(teacher.score([p0["prompt"]], [p0["chosen"]])[0], rel=1e-4)

    def no_teacher(role, *a, **k):
        raise AssertionError(f"the {role} was loaded again")

    pipe.artifacts.load = no_teacher
    spec = get_method("dpkd")
    rows = pipe.artifacts.training_data(ResolvedMethod.of(spec, DPKDParams())).rows
    assert rows[0]["teacher_chosen_logp"] == stored[0]["teacher_sample"]
    # A swapped pair reads the scores by who wrote the text, not by side.
    swapped = dict(pairs[0], chosen=p0["rejected"], rejected=p0["chosen"], chosen_source="student", rejected_source="teacher")
    from prefdistill.methods.common import attach_teacher_logps

    attach_teacher_logps([swapped], {r["id"]: r for r in stored}, "dpkd")
    assert swapped["teacher_rejected_logp"] == stored[0]["teacher_sample"]


def test_text_only_teacher_is_refused_by_name(tiny_assets, tmp_path):
    from prefdistill.run.pipeline import Pipeline

    pipe = Pipeline(load_config(_cfg(tiny_assets, tmp_path)))
    pipe.run(["sft", "pairs"])

    class TextOnly:
        can_score = False

    pipe.artifacts.load = lambda role, *a, **k: TextOnly()
    with pytest.raises(ValueError, match="needs a scoring teacher"):
        pipe.artifacts.teacher_pair_logps()


def test_a_teacher_with_another_tokenizer_scores_the_student_text_in_its_own_tokens(tiny_assets, tmp_path):
    """Sequence-mode DPKD across vocabularies: the student's samples are re-tokenised by the teacher's tokenizer."""
    from prefdistill.io import read_jsonl
    from prefdistill.run.pipeline import Pipeline

    data = _cfg(tiny_assets, tmp_path)
    data["teacher"]["name_or_path"] = str(tiny_assets["foreign"])  # same words, other token ids
    pipe = Pipeline(load_config(data))
    pipe.run(["sft", "pairs", "distill"])
    stored = read_jsonl(pipe.run_dir / "pairs" / "teacher_logps.jsonl")
    pair = read_jsonl(pipe.run_dir / "pairs" / "pairs.jsonl")[0]
    teacher = pipe.artifacts.load("teacher", pipe.artifacts.sft_checkpoint("teacher"))
    student = pipe.artifacts.load("student", pipe.artifacts.sft_checkpoint("student"))
    text_ids = teacher.tokenizer(pair["rejected"], add_special_tokens=False)["input_ids"]
    assert text_ids != student.tokenizer(pair["rejected"], add_special_tokens=False)["input_ids"]
    by_ids, mask = teacher.completion_logps([pair["prompt"]], [text_ids + [teacher.tokenizer.eos_token_id]])
    assert stored[0]["student_sample"] == pytest.approx(float((by_ids * mask).sum()), rel=1e-4)
