"""Per-position divergences between teacher and student next-token distributions.

    kl = forward_kl(student_logits, teacher_logits)   # (B, T)

p is the teacher distribution, q the student's; both come from logits divided by a
temperature. Reductions over positions (masking, averaging) belong to the caller.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _check(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; token-level divergences need one vocabulary"
        )


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """KL(p ‖ q) = Σ_v p_v (log p_v − log q_v): word-level KD (Hinton et al. 2015; Kim & Rush 2016).

    Args: student_logits, teacher_logits: (B, T, V). Returns (B, T).
    """
    _check(student_logits, teacher_logits)
    log_q = _log_probs(student_logits, temperature)
    log_p = _log_probs(teacher_logits, temperature)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """KL(q ‖ p) = Σ_v q_v (log q_v − log p_v): the mode-seeking direction (MiniLLM, Gu et al. 2023).

    Args: student_logits, teacher_logits: (B, T, V). Returns (B, T).
    """
    _check(student_logits, teacher_logits)
    log_q = _log_probs(student_logits, temperature)
    log_p = _log_probs(teacher_logits, temperature)
    return (log_q.exp() * (log_q - log_p)).sum(-1)
