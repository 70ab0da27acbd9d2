"""Teachers and students behind one small interface.

    lm = load_model(cfg.student)                    # a backend from BACKENDS
    texts = lm.generate(["Summarize ..."], SamplingConfig(), seed=0)   # [[completion, ...]]
    logps = lm.score(prompts, completions, normalize=True)             # when lm.can_score

A backend is anything with `name`, `can_score`, `generate` and (when it can) `score`; it
need not be a local torch module, so a text-only API teacher fits the same slot:

    hf       local transformers weights: train, generate, score (the default; CPU or GPU)
    vllm     the same weights in a vLLM engine for sampling and scoring (GPU; training stays on hf)
    openai   any OpenAI-compatible server (text; log-probs where the server gives them)

`generate` may return a `GenerationFailure` in place of a prompt's completions (a
server that kept failing); `on_result(i, completions_or_failure)` reports each prompt as
it finishes, so callers can store finished work before a long call returns.
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


def _hf(cfg: ModelConfig, **kwargs):
    from prefdistill.models.hf import LocalLM

    return LocalLM.load(cfg, **kwargs)


def _vllm(cfg: ModelConfig, *, for_training: bool = False, **kwargs):
    if for_training:  # vLLM only samples and scores; the weights train in transformers
        return _hf(cfg, for_training=True, **kwargs)
    from prefdistill.models.vllm_backend import VLLMLM

    return VLLMLM.load(cfg, **kwargs)


def _openai(cfg: ModelConfig, *, checkpoint=None, for_training: bool = False):
    if for_training or checkpoint is not None:
        raise ValueError(f"{cfg.name_or_path}: a model behind an API (backend: openai) cannot be fine-tuned here; "
                         "set sft.teacher.enabled=false and use it as the teacher")
    from prefdistill.models.api import APILM

    return APILM.from_config(cfg)


BACKENDS = {"hf": _hf, "vllm": _vllm, "openai": _openai}


def load_model(cfg: ModelConfig, **kwargs) -> LanguageModel:
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown model backend {cfg.backend!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[cfg.backend](cfg, **kwargs)


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
