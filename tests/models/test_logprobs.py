"""Sequence log-probs: padding invariance, length normalisation, agreement with a naive loop."""
import pytest
import torch

from prefdistill.models.logprobs import (IGNORE_INDEX, completion_logps, completion_token_ids, encode_completions, pack_completions,
                                  pack_shared_prompt, per_token_logps, sequence_logps, shared_prompt_logps)
from prefdistill.models.tiny import make_tiny_assets


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = make_tiny_assets(tmp_path_factory.mktemp("tiny"))
    tok = AutoTokenizer.from_pretrained(paths["teacher"])
    model = AutoModelForCausalLM.from_pretrained(paths["teacher"]).eval()
    return model, tok


def test_per_token_logps_ignores_masked_labels():
    logits = torch.randn(1, 3, 4)
    labels = torch.tensor([[1, IGNORE_INDEX, 3]])
    out = per_token_logps(logits, labels)
    ref = torch.log_softmax(logits, -1)
    assert out[0, 1] == 0
    assert torch.allclose(out[0, [0, 2]], torch.stack([ref[0, 0, 1], ref[0, 2, 3]]))


def test_sequence_logps_sum_and_length_normalisation():
    per_token = torch.tensor([[-1.0, -2.0, -3.0], [0.0, -4.0, -2.0]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert torch.allclose(sequence_logps(per_token, mask, normalize=False), torch.tensor([-6.0, -6.0]))
    assert torch.allclose(sequence_logps(per_token, mask, normalize=True), torch.tensor([-2.0, -3.0]))


def _naive_logp(model, tok, prompt, completion):
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    comp = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    full = torch.tensor([ids + comp])
    with torch.no_grad():
        logits = model(full).logits[0]
    total = 0.0
    for j, token in enumerate(comp):
        pos = len(ids) + j - 1
        total += torch.log_softmax(logits[pos], -1)[token].item()
    return total, len(comp)


def test_batched_logps_match_unpadded_loop(tiny):
    model, tok = tiny
    prompts = ["Summarize : the model learns", "Summarize : data", "Summarize : we propose a small teacher method better"]
    completions = ["the model", "a short summary of each paper", "results"]
    batch = encode_completions(tok, prompts, completions, add_special_tokens=True)
    with torch.no_grad():
        per_token = completion_logps(model, batch)
    summed = sequence_logps(per_token, batch["completion_mask"], normalize=False)
    normed = sequence_logps(per_token, batch["completion_mask"], normalize=True)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ref, n = _naive_logp(model, tok, p, c)
        assert summed[i].item() == pytest.approx(ref, abs=1e-4)
        assert normed[i].item() == pytest.approx(ref / n, abs=1e-4)


def test_padding_does_not_change_sequence_logps(tiny):
    model, tok = tiny
    alone = encode_completions(tok, ["Summarize : data"], ["the model"], add_special_tokens=True)
    padded = encode_completions(tok, ["Summarize : data", "Summarize : " + "the " * 20], ["the model", "a short summary of each paper"],
                                add_special_tokens=True)
    assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]  # row 0 really is padded
    with torch.no_grad():
        a = sequence_logps(completion_logps(model, alone), alone["completion_mask"], normalize=False)
        b = sequence_logps(completion_logps(model, padded), padded["completion_mask"], normalize=False)
    assert a[0].item() == pytest.approx(b[0].item(), abs=1e-4)


def test_encode_completions_masks_only_completion_and_eos(tiny):
    _, tok = tiny
    batch = encode_completions(tok, ["Summarize : data"], ["the model"], add_special_tokens=True)
    assert batch["completion_mask"].sum().item() == 3  # "the", "model", </s>
    assert batch["labels"][0, -1].item() == tok.eos_token_id


def test_shared_prompt_logps_and_gradients_equal_one_row_per_completion(tiny):
    """Prefix sharing is exact: the same log-probs and the same gradients, with padded prompts and completions."""
    model, tok = tiny
    prompts = ["Summarize : data", "Summarize : we propose a small teacher method better"]
    prompt_ids = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    completions = completion_token_ids(tok, ["the model", "a short summary of each paper", "results", "the teacher"])
    shared = pack_shared_prompt(prompt_ids, completions, pad_id=tok.pad_token_id, n_per_prompt=2)
    separate = pack_completions([p for p in prompt_ids for _ in range(2)], completions, pad_id=tok.pad_token_id)
    assert shared["prompt_mask"][0].sum() < shared["prompt_mask"].shape[1]  # prompt 0 really is padded

    def logps_and_grads(fn, batch):
        model.zero_grad()
        logps = sequence_logps(fn(model, batch), batch["completion_mask"], normalize=False)  # (4,)
        (logps * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()  # weights: each row's gradient counts
        return logps.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    a, grads_a = logps_and_grads(shared_prompt_logps, shared)
    b, grads_b = logps_and_grads(completion_logps, separate)
    model.zero_grad()
    assert torch.allclose(a, b, atol=1e-4)
    assert len(grads_a) == len(grads_b) > 0
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(grads_a, grads_b))


def test_shared_prompt_logps_under_gradient_checkpointing_equal_one_row_per_completion(tiny):
    """Checkpointed layers keep no key/value cache: the prompt is then run once per completion, with the same result."""
    model, tok = tiny
    prompt_ids = [tok(p, add_special_tokens=True)["input_ids"] for p in ["Summarize : data", "Summarize : we propose a small method"]]
    completions = completion_token_ids(tok, ["the model", "a short summary of each paper", "results", "the teacher"])
    shared = pack_shared_prompt(prompt_ids, completions, pad_id=tok.pad_token_id, n_per_prompt=2)
    separate = pack_completions([p for p in prompt_ids for _ in range(2)], completions, pad_id=tok.pad_token_id)
    enable = getattr(model, "activation_checkpointing_enable", None)
    enable(activation_checkpointing_kwargs={"use_reentrant": False}) if enable else \
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # the tiny models have no dropout: train mode only switches checkpointing on
    try:
        weights = torch.tensor([1.0, -2.0, 0.5, 3.0])
        model.zero_grad()
        a = sequence_logps(shared_prompt_logps(model, shared), shared["completion_mask"], normalize=False)
        (a * weights).sum().backward()
        grads_a = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    finally:
        model.eval()
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()
    model.zero_grad()
    b = sequence_logps(completion_logps(model, separate), separate["completion_mask"], normalize=False)
    (b * weights).sum().backward()
    grads_b = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    assert torch.allclose(a.detach(), b.detach(), atol=1e-4)
    assert len(grads_a) == len(grads_b) > 0
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(grads_a, grads_b))
