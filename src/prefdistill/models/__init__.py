"""Teachers and students behind one small interface.

    lm = load_model(cfg.student)                    # a backend from BACKENDS
    texts = lm.generate(["Summarize ..."], SamplingConfig(), seed=0)   # [[completion, ...]]
    logps = lm.score(prompts, completions, normalize=True)             # when lm.can_score

A backend is anything with `name`, `can_score`, `generate` and (when it can) `score`; it
need not be a local torch module, so a text-only API teacher fits the same slot. The vllm
and openai backends also give a teacher's top-k at given tokens themselves (`completion_topk`,
`common.TopkTeacher`) for the teacher-signal cache:

    hf       local transformers weights: train, generate, score (the default; CPU or GPU)
    vllm     the same weights in a vLLM engine for sampling and scoring (GPU; training stays on hf)
    openai   any OpenAI-compatible server (text; log-probs where the server gives them)

`generate` may return a `GenerationFailure` in place of a prompt's completions (a
server that kept failing); `on_result(i, completions_or_failure)` reports each prompt as
it finishes, so callers can store finished work before a long call returns.
"""
from __future__ import annotations

from prefdistill.config.schema import ModelConfig
from prefdistill.models.common import (LanguageModel, load_tokenizer, plain_prompt, tokenizer_mismatch,  # noqa: F401 (the interface)
                                       vocabulary_mismatch)


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
