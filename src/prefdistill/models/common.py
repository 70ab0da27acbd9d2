"""What every backend shares, below them all: the model interface, the plain prompt rule, tokenizers.

    tok = load_tokenizer(cfg.student)
    why = vocabulary_mismatch(cfg.teacher, cfg.student)     # None when they share one vocabulary
    ids, logprobs = topk_arrays([{5: -0.1, 9: -2.3}, {}], k=2, vocab=32)   # a served teacher's top-k, as a cache row
"""
from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from prefdistill.config.schema import ModelConfig, SamplingConfig


class LanguageModel(Protocol):
    name: str
    can_score: bool  # True when log-probs of given completions are available

    def generate(self, prompts: list[str], sampling: SamplingConfig, *, seed: int, desc: str | None = None,
                 on_result=None) -> list: ...

    def score(self, prompts: list[str], completions: list[str], *, normalize: bool = False) -> list[float]: ...


@dataclass
class TopkFailure:
    """A row whose top-k a teacher cannot give (a server's tokens of it do not line up with the student's): why."""

    reason: str


class TopkTeacher(Protocol):
    """A teacher that gives its top-k at given completion tokens itself (a server, vLLM), not as logits.

    completion_topk returns one (ids (n, k) int, log-probs (n, k) float) per row, n = len(that
    row's completion ids), position t holding the distribution that produced token t, most likely
    first, ids in the student's vocabulary, padded as `topk_arrays` pads (`prefdistill.signal.topk_cache`).
    With `token_logps`, each row also holds log p(token t) of the given tokens themselves, (n,) float,
    whether or not they are among the k (`prefdistill.signal.served`, MiniLLM's per-token reward). A row it
    cannot give is a `TopkFailure` instead; callers record it and leave the row out.
    """

    def completion_topk(self, prompts: list[str], completions: list[list[int]], k: int, *, tokenizer,
                        temperature: float, token_logps: bool = False) -> list[tuple[np.ndarray, ...] | TopkFailure]: ...


def topk_arrays(positions: list[dict[int, float]], k: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """One row's top-k as arrays: ids (n, min(k, vocab)) int64 and log-probs (n, min(k, vocab)) float32.

    positions[t] maps the ids a teacher gave at position t to their log-probs (or to objects
    with a `.logprob`, as vLLM gives them). Ids outside [0, vocab) are not the student's and are
    dropped; the k most likely of the rest are kept, most likely first, and empty slots are
    padded with (id 0, log-prob -inf), which `topk_forward_kl` treats as no outcome at all.
    """
    width = min(k, vocab)
    ids = np.zeros((len(positions), width), dtype=np.int64)
    logps = np.full((len(positions), width), -np.inf, dtype=np.float32)
    for t, entries in enumerate(positions):
        kept = [(float(getattr(lp, "logprob", lp)), int(i)) for i, lp in entries.items() if 0 <= int(i) < vocab]
        kept.sort(key=lambda e: -e[0])
        for j, (lp, i) in enumerate(kept[:width]):
            ids[t, j], logps[t, j] = i, lp
    return ids, logps


def plain_prompt(prompt: str) -> str:
    """The text a model sees for `prompt` without a chat template (local weights and plain API completions alike)."""
    return prompt.rstrip() + "\n"


def load_tokenizer(cfg: ModelConfig):
    return _tokenizer(cfg.name_or_path, cfg.gguf_file, cfg.trust_remote_code)


@functools.lru_cache(maxsize=8)
def _tokenizer(name_or_path: str, gguf_file: str | None, trust_remote_code: bool):
    from transformers import AutoTokenizer

    from prefdistill.models.assets import resolve_model_path

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


# peft (0.21, the newest) reads `model.is_gradient_checkpointing` in PeftModel.__init__, which transformers 5.2x
# deprecates for `is_activation_checkpointing` with a FutureWarning on every LoRA wrap and adapter load. No argument
# of ours avoids the read, so exactly that message, and only around our two peft calls, is not shown to the user.
_PEFT_READS_OLD_NAME = r"`is_gradient_checkpointing` is deprecated"


@contextmanager
def peft_call():
    """Around get_peft_model / PeftModel.from_pretrained: hides the one warning peft's own read raises, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PEFT_READS_OLD_NAME, category=FutureWarning)
        yield
