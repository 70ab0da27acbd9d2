"""Embedding similarity of outputs to their references: a judge-free second opinion on the rows' order.

    sims = reference_similarity(references, {"student_sft": gens, ...})   # {row: [cosine per prompt]}

Each text is encoded by the frozen MiniLM the reward judges read (`reward.encoder`, default
builtin:minilm, offline from its PyPI package) and mean-pooled over its tokens, [CLS] and [SEP]
included, as sentence-transformers pools all-MiniLM-L6-v2 (its max_seq_length, 256 tokens,
too). The score of an output is the cosine of its embedding with its reference's. It was never
trained on this task, so it measures topical closeness to the reference and nothing the judges
learned; `evaluation.judge_check` ranks the rows by it beside ROUGE-L and the judge's win rate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from prefdistill.judges.reward_model import FrozenEncoder

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers


def sentence_embeddings(encoder: FrozenEncoder, texts: list[str]) -> dict[str, torch.Tensor]:
    """text -> its unit-norm mean-pooled embedding (H,), each distinct text encoded once."""
    feats = encoder.encode([], sorted(set(texts)))
    return {text: F.normalize(states.mean(0), dim=0) for text, states in feats.responses.items()}


def reference_similarity(references: list[str], generations: dict[str, list[str]], encoder: str = "builtin:minilm",
                         device: str = "cpu") -> dict[str, list[float]]:
    """{key: cosine of each output with its reference}, for every list of outputs (one per reference) in `generations`."""
    for key, gens in generations.items():
        if len(gens) != len(references):
            raise ValueError(f"reference_similarity: {key!r} has {len(gens)} outputs for {len(references)} references")
    frozen = FrozenEncoder(encoder, 2, 2, MAX_TOKENS, device)  # prompts are not encoded: their lengths do not matter
    positions = getattr(frozen.model.config, "max_position_embeddings", MAX_TOKENS)
    frozen.response_max_length = min(MAX_TOKENS, positions)  # a smaller encoder (the tests' tiny BERT) reads fewer
    emb = sentence_embeddings(frozen, references + [g for gens in generations.values() for g in gens])
    return {key: [float(emb[g] @ emb[r]) for g, r in zip(gens, references)] for key, gens in generations.items()}


def reference_similarity_if_available(references: list[str], generations: dict[str, list[str]], encoder: str = "builtin:minilm",
                                      device: str = "cpu") -> dict[str, list[float]] | None:
    """`reference_similarity`, or None (said on the console) when the encoder's package is not installed: a diagnostic
    never stops a bench whose judge does not read MiniLM."""
    try:
        return reference_similarity(references, generations, encoder, device)
    except ImportError as e:
        print(f"[prefdistill] judge check: no embedding similarity to the references ({e})", flush=True)
        return None
