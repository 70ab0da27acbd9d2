"""The body/head split (prefdistill.models.heads) gives each declared architecture's own logits, falls back where it
cannot split, and the chunked sequence log-probs (completion_logps, shared_prompt_logps) equal the whole batch's."""
import pytest
import torch

from prefdistill.models import heads
from prefdistill.models.logprobs import (completion_logits, completion_logps, completion_states, pack_completions,
                                         pack_shared_prompt, shared_prompt_logps)

SIZES = dict(vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=8, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
CONFIGS = {kind: SIZES for kind in heads.SPLIT_ARCHITECTURES}
CONFIGS["gpt2"] = dict(vocab_size=61, n_embd=16, n_layer=2, n_head=2, n_positions=64, pad_token_id=0)
CONFIGS["gemma2"] = {**SIZES, "final_logit_softcapping": 0.5}  # small enough that the cap shows
CONFIGS["gemma3_text"] = {**SIZES, "final_logit_softcapping": 0.5}


def _tiny(kind: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **CONFIGS[kind]))
    return model.eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 61, (n,), generator=g).tolist() for n in (5, 3, 7)]
    completions = [torch.randint(3, 61, (n,), generator=g).tolist() for n in (4, 6, 1)]
    return prompts, completions


@pytest.mark.parametrize("kind", sorted(heads.SPLIT_ARCHITECTURES))
def test_each_declared_architecture_splits_into_its_own_logits(kind):
    model = _tiny(kind)
    batch = pack_completions(*_batch(), pad_id=0)
    hidden, head = completion_states(model, batch, chunk=4)
    assert head is not None and hidden.shape[:2] == batch["labels"].shape
    with torch.no_grad():
        torch.testing.assert_close(head(hidden), completion_logits(model, batch), atol=1e-5, rtol=1e-5)
    if CONFIGS[kind].get("final_logit_softcapping"):
        assert head.softcap == 0.5


@pytest.fixture(scope="module")
def llama():
    model = _tiny("llama")
    model.train()  # dropout is 0: grads of a training model
    return model


def _logps_and_grads(model, fn, batch, chunk):
    model.zero_grad()
    per_token = fn(model, batch, chunk=chunk)
    mask = batch["completion_mask"]
    (per_token * mask).sum().backward()
    return per_token.detach() * mask, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_chunks_agree(model, fn, batch):
    want, want_grads = _logps_and_grads(model, fn, batch, 0)
    for chunk in (1, 3, 64):
        got, grads = _logps_and_grads(model, fn, batch, chunk)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert grads.keys() == want_grads.keys()
        for n, g in want_grads.items():
            torch.testing.assert_close(grads[n], g, atol=1e-5, rtol=1e-4)


def test_completion_logps_in_chunks(llama):
    _assert_chunks_agree(llama, completion_logps, pack_completions(*_batch(), pad_id=0))


def test_shared_prompt_logps_in_chunks_with_and_without_gradient_checkpointing(llama):
    prompts, completions = _batch()
    batch = pack_shared_prompt(prompts, completions + completions[::-1], pad_id=0, n_per_prompt=2)
    _assert_chunks_agree(llama, shared_prompt_logps, batch)
    on, off = (("activation_checkpointing_enable", "activation_checkpointing_disable") if hasattr(llama, "activation_checkpointing_enable")
               else ("gradient_checkpointing_enable", "gradient_checkpointing_disable"))  # transformers renamed them
    getattr(llama, on)()
    try:
        _assert_chunks_agree(llama, shared_prompt_logps, batch)
    finally:
        getattr(llama, off)()


def test_an_architecture_that_is_not_declared_falls_back_to_the_models_logits(llama, monkeypatch):
    monkeypatch.delitem(heads.SPLIT_ARCHITECTURES, "llama")
    batch = pack_completions(*_batch(), pad_id=0)
    logits, head = completion_states(llama, batch, chunk=4)
    assert head is None and logits.shape[-1] == 61
    _assert_chunks_agree(llama, completion_logps, batch)


def test_a_padded_output_layer_is_cut_to_the_vocabulary(llama):
    batch = pack_completions(*_batch(), pad_id=0)
    hidden, head = completion_states(llama, batch, chunk=4, vocab=50)
    logits, none = completion_states(llama, batch, chunk=0, vocab=50)
    assert none is None and head.size == 50 and logits.shape[-1] == 50
    torch.testing.assert_close(head(hidden), logits, atol=1e-5, rtol=1e-5)
