"""Fixtures the teacher-signal tests share."""
import pytest
import torch

from prefdistill.config.schema import ModelConfig


@pytest.fixture(scope="module")
def student(tiny_assets, counting):
    """The tiny student with the counting teacher's vocabulary (one vocabulary, as token-level methods need); one per module,
    since tests train it."""
    from prefdistill.models.hf import LocalLM

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    torch.manual_seed(0)
    lm.model.resize_token_embeddings(len(counting.tokenizer))
    lm.model.requires_grad_(True)
    return LocalLM(lm.model, counting.tokenizer, name="student")
