"""Teachers and students behind one small interface.

    lm = load_model(cfg.student)                    # a backend from BACKENDS
    texts = lm.generate(["Summarize ..."], SamplingConfig(), seed=0)   # [[completion, ...]]
    logps = lm.score(prompts, completions, normalize=True)             # when lm.can_score

A backend is anything with `name`, `can_score`, `generate` and (when it can) `score`; it
need not be a local torch module, so a text-only API teacher fits the same slot.
"""
from __future__ import annotations

from typing import Protocol

from prefdistill.config import ModelConfig, SamplingConfig


class LanguageModel(Protocol):
    name: str
    can_score: bool  # True when log-probs of given completions are available

    def generate(self, prompts: list[str], sampling: SamplingConfig, *, seed: int, desc: str | None = None) -> list[list[str]]: ...

    def score(self, prompts: list[str], completions: list[str], *, normalize: bool = False) -> list[float]: ...


def _hf(cfg: ModelConfig, **kwargs):
    from prefdistill.models.hf import LocalLM

    return LocalLM.load(cfg, **kwargs)


BACKENDS = {"hf": _hf}


def load_model(cfg: ModelConfig, **kwargs) -> LanguageModel:
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown model backend {cfg.backend!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[cfg.backend](cfg, **kwargs)
