"""Every method's loss and gradients with the LM head and the loss in chunks of positions (train.logits_chunk) equal
the whole batch's logits path (logits_chunk 0) on the tiny models; the student's logits never exist for the whole batch."""
import copy

import pytest
import torch

from prefdistill.config.schema import ModelConfig, from_dict
from prefdistill.losses.chunked import LMHead
from prefdistill.methods import get_method
from prefdistill.models.hf import LocalLM
from prefdistill.models.tiny import tiny_rows
from prefdistill.testing import PARAMS, WordCountJudge

CHUNKS = [1, 3, 512]  # one position, a size that divides no batch here, more than a batch holds
CASES = {  # case -> (method, params, consumes); sampling methods are seeded alike on both paths
    "sft": ("sft", {}, "targets"),
    "seqkd": ("seqkd", {}, "pairs"),
    "kd": ("kd", {"temperature": 1.5, "ce_weight": 0.5}, "targets"),
    "gkd": ("gkd", {"beta": 0.3, "on_policy_fraction": 0.5, "max_new_tokens": 4, "temperature": 1.5}, "pairs"),
    "gkd[reverse]": ("gkd", {"beta": 1.0, "on_policy_fraction": 0.0}, "pairs"),
    "distillm[skew_forward]": ("distillm", {"student_fraction": 0.5, "max_new_tokens": 4}, "targets"),
    "distillm[skew_reverse]": ("distillm", {"divergence": "skew_reverse", "alpha": 0.2}, "targets"),
    "fdistill[tv]": ("fdistill", {"max_new_tokens": 4}, "pairs"),
    "fdistill[js]": ("fdistill", {"divergence": "js", "student_prefixes": False, "temperature": 2.0}, "pairs"),
    "minillm": ("minillm", {"max_new_tokens": 4, "temperature": 1.2}, "pairs"),
    "dpkd": ("dpkd", {}, "pairs"),
    "dpkd[token_argmax]": ("dpkd", {"mode": "token_argmax", "lm_weight": 0.3}, "targets"),
    "plad": ("plad", {"beta": 50.0, "ce_weight": 0.5, "ce_target": "reference"}, "pairs"),
    "wind": ("wind", PARAMS["wind"], "prompts"),
    "sppo": ("sppo", PARAMS["sppo"], "prompts"),
    "bond": ("bond", PARAMS["bond"], "prompts"),
    "jbond": ("jbond", PARAMS["jbond"], "prompts"),
}


def _rows(kind: str, n: int = 3) -> list[dict]:
    """Rows of unequal lengths (so batches are padded); the second pair is swapped (its teacher sample is `rejected`)."""
    out = []
    for i, r in enumerate(tiny_rows(n, seed=5)):
        prompt, words = f"Summarize : {r['document']}", r["document"].split()
        if kind == "targets":
            out.append({"prompt": prompt, "target": r["summary"]})
        elif kind == "prompts":
            out.append({"id": str(i), "prompt": prompt})
        else:
            row = {"id": f"{i}#0", "prompt": prompt, "chosen": r["summary"], "rejected": " ".join(words[:2 + i]),
                   "reference": " ".join(words[:3]), "chosen_score": 0.9, "rejected_score": 0.1,
                   "teacher_chosen_logp": -4.0, "teacher_rejected_logp": -2.0}
            if i == 1:
                row.update(chosen=row["rejected"], rejected=row["chosen"], chosen_source="student", rejected_source="teacher")
            out.append(row)
    return out


@pytest.fixture(scope="module")
def models(tiny_assets):
    teacher = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    student = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    student.model.requires_grad_(True)
    return teacher, student


def _with_lora(student):
    from peft import LoraConfig, get_peft_model

    from prefdistill.models.common import peft_call

    lm = copy.copy(student)
    with peft_call():
        lm.model = get_peft_model(copy.deepcopy(student.model), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                                             target_modules="all-linear"))
    for n, p in lm.model.named_parameters():  # LoRA B starts at 0: give it weights so every path carries a gradient
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    return lm


def _extras(spec, params, teacher, student) -> dict:
    from prefdistill.judges.oracles import BradleyTerryOracle

    extras = {"oracle": BradleyTerryOracle(WordCountJudge()), "state": {}, "reference": copy.copy(student),
              "teacher": teacher}
    needs = set(spec.needs) | ({"teacher"} if getattr(params, "mode", None) == "token_argmax" else set())
    return {k: v for k, v in extras.items() if k in needs}


def loss_and_grads(case: str, lm, teacher, rows, chunk: int):
    name, raw, _ = CASES[case]
    spec = get_method(name)
    params = from_dict(spec.params_cls, raw)
    lm.logits_chunk = chunk
    extras = _extras(spec, params, teacher, lm)
    if "reference" in extras:
        extras["reference"].logits_chunk = chunk
    torch.manual_seed(0)  # the same samples on every path
    lm.model.zero_grad()
    loss, stats = spec.loss(lm, rows, params, **extras)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), grads


def _assert_same(case, lm, teacher, rows):
    want_loss, want = loss_and_grads(case, lm, teacher, rows, 0)
    assert want and any(g.abs().sum() > 0 for g in want.values()), f"{case}: no gradient to compare"
    for chunk in CHUNKS:
        loss, grads = loss_and_grads(case, lm, teacher, rows, chunk)
        torch.testing.assert_close(loss, want_loss, atol=1e-5, rtol=1e-5, msg=lambda m: f"{case}, chunk {chunk}: loss: {m}")
        assert set(grads) == set(want), f"{case}, chunk {chunk}: other parameters got gradients"
        for n in want:
            torch.testing.assert_close(grads[n], want[n], atol=1e-5, rtol=1e-4, msg=lambda m: f"{case}, chunk {chunk}, {n}: {m}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_chunked_loss_and_gradients_equal_the_whole_batch(case, models):
    teacher, student = models
    _assert_same(case, student, teacher, _rows(CASES[case][2]))


@pytest.mark.parametrize("case", ["kd", "minillm", "plad", "dpkd[token_argmax]", "sppo"])
def test_with_lora_adapters(case, models):
    teacher, student = models
    _assert_same(case, _with_lora(student), teacher, _rows(CASES[case][2]))


@pytest.mark.parametrize("case", ["gkd", "sft", "dpkd"])
def test_a_batch_of_one(case, models):
    teacher, student = models
    _assert_same(case, student, teacher, _rows(CASES[case][2])[1:2])


@pytest.mark.parametrize("case", ["kd", "fdistill[js]", "gkd[reverse]", "plad", "dpkd[token_argmax]", "sft"])
def test_the_head_never_sees_more_than_a_chunk(case, models, monkeypatch):
    """The student's own output layer computes one position per row; every other logit comes from a chunk.

    (Cases without sampling: a rollout's prefill is generate's business.)"""
    teacher, student = models
    head_calls, model_head = [], []
    real = LMHead.__call__
    monkeypatch.setattr(LMHead, "__call__", lambda self, h: head_calls.append(h.shape[:-1].numel()) or real(self, h))
    out = student.model.get_output_embeddings()
    hook = out.register_forward_hook(lambda m, args, o: model_head.append(args[0].shape[1]))
    try:
        loss_and_grads(case, student, teacher, _rows(CASES[case][2]), 3)
    finally:
        hook.remove()
    assert head_calls and max(head_calls) <= 3
    assert model_head and max(model_head) == 1  # logits_to_keep=1 in the model's forward


@pytest.mark.parametrize("case", ["sft", "kd", "plad", "gkd"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_training_in_chunks_takes_the_same_steps(case, batch_size, models, tmp_path):
    """The whole schedule through `train()`: 3 optimizer steps of grad_accum 2 at train.logits_chunk 1 give the losses
    and the final weights that the whole batch's logits (logits_chunk 0) give, step for step."""
    from prefdistill.config.schema import LoraConfig, TrainConfig
    from prefdistill.training.loop import train

    teacher, student = models
    name, raw, kind = CASES[case]
    spec = get_method(name)
    params = from_dict(spec.params_cls, raw)
    runs = {}
    for chunk in (0, 1):
        lm = copy.copy(student)
        lm.model = copy.deepcopy(student.model)
        cfg = TrainConfig(steps=3, batch_size=batch_size, grad_accum=2, lr=1e-2, save_every=100, logits_chunk=chunk)
        log = train(lm, spec, params, _rows(kind, 4), cfg, LoraConfig(enabled=False), out_dir=tmp_path / f"{chunk}",
                    parent=None, seed=0, desc=case, extras=_extras(spec, params, teacher, lm))
        runs[chunk] = ([r["loss"] for r in log], {n: p.detach().clone() for n, p in lm.model.named_parameters()})
    (want_losses, want), (losses, weights) = runs[0], runs[1]
    assert len(losses) == 3
    assert losses == pytest.approx(want_losses, rel=1e-4, abs=1e-5)
    moved = [n for n in want if not torch.equal(want[n], student.model.state_dict()[n])]
    assert moved, f"{case}: no weight moved in 3 steps"
    # AdamW divides each gradient by its own running scale, so float noise in a near-zero gradient moves a weight by up
    # to a share of lr (1e-2) on either path: 1e-4 is 1% of one step, far below what a wrong gradient moves in three.
    for n in want:
        torch.testing.assert_close(weights[n], want[n], atol=1e-4, rtol=1e-4, msg=lambda m: f"{case}, {n}: {m}")
