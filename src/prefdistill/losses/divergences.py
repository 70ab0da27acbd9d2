"""Per-position divergences between teacher and student next-token distributions.

    kl = forward_kl(student_logits, teacher_logits)   # (B, T)

p is the teacher distribution, q the student's; both come from logits divided by a
temperature. Reductions over positions (masking, averaging) belong to the caller.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def log_probs_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q, log p) over the vocabulary, (B, T, V) each, after dividing logits by `temperature`."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; token-level divergences need one vocabulary"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return F.log_softmax(student_logits.float() / temperature, -1), F.log_softmax(teacher_logits.float() / temperature, -1)


def kl_from_log_probs(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) = Σ_v a_v (log a_v − log b_v) over the last axis: (..., V) -> (...)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """KL(p ‖ q): word-level KD (Hinton et al. 2015; Kim & Rush 2016).

    Args: student_logits, teacher_logits: (B, T, V). Returns (B, T).
    """
    log_q, log_p = log_probs_pair(student_logits, teacher_logits, temperature)
    return kl_from_log_probs(log_p, log_q)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """KL(q ‖ p): the mode-seeking direction (MiniLLM, Gu et al. 2023).

    Args: student_logits, teacher_logits: (B, T, V). Returns (B, T).
    """
    log_q, log_p = log_probs_pair(student_logits, teacher_logits, temperature)
    return kl_from_log_probs(log_q, log_p)
