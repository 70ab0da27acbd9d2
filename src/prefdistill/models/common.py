"""What every backend shares, below them all: the model interface, the plain prompt rule, tokenizers.

    tok = load_tokenizer(cfg.student)
    why = vocabulary_mismatch(cfg.teacher, cfg.student)     # None when they share one vocabulary
"""
from __future__ import annotations

import functools
from typing import Protocol

from prefdistill.config import ModelConfig, SamplingConfig


class LanguageModel(Protocol):
    name: str
    can_score: bool  # True when log-probs of given completions are available

    def generate(self, prompts: list[str], sampling: SamplingConfig, *, seed: int, desc: str | None = None,
                 on_result=None) -> list: ...

    def score(self, prompts: list[str], completions: list[str], *, normalize: bool = False) -> list[float]: ...


def plain_prompt(prompt: str) -> str:
    """The text a model sees for `prompt` without a chat template (local weights and plain API completions alike)."""
    return prompt.rstrip() + "\n"


def load_tokenizer(cfg: ModelConfig):
    return _tokenizer(cfg.name_or_path, cfg.gguf_file, cfg.trust_remote_code)


@functools.lru_cache(maxsize=8)
def _tokenizer(name_or_path: str, gguf_file: str | None, trust_remote_code: bool):
    from transformers import AutoTokenizer

    from prefdistill.assets import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path, gguf_file), trust_remote_code=trust_remote_code)


def vocabulary_mismatch(a: ModelConfig, b: ModelConfig) -> str | None:
    """Why a and b do not share one vocabulary (token string -> id), or None when they do."""
    if (a.name_or_path, a.gguf_file) == (b.name_or_path, b.gguf_file):
        return None
    return tokenizer_mismatch(load_tokenizer(a), load_tokenizer(b), a.name_or_path, b.name_or_path)


def tokenizer_mismatch(tok_a, tok_b, name_a: str, name_b: str) -> str | None:
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va == vb:
        return None
    differ = sum(1 for tok, i in va.items() if vb.get(tok) != i) + sum(1 for tok in vb if tok not in va)
    return f"{name_a} has {len(va):,} tokens, {name_b} has {len(vb):,}; {differ:,} token ids differ"
