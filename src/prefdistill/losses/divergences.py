"""Per-position divergences between teacher and student next-token distributions.

    kl = forward_kl(student_logits, teacher_logits)   # (B, T)

p is the teacher distribution, q the student's; both come from logits divided by a
temperature. Reductions over positions (masking, averaging) belong to the caller.
"""
from __future__ import annotations

import math

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


def log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w·a + (1 − w)·b) of two log-distributions, in log space; w may be exactly 0 or 1."""
    if not 0.0 <= weight_a <= 1.0:
        raise ValueError(f"mixture weight must lie in [0, 1], got {weight_a}")
    if weight_a == 1.0:
        return log_a
    if weight_a == 0.0:
        return log_b
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def total_variation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """½ Σ_v |p_v − q_v|, in [0, 1]: the TV member of f-distill (Wen et al. 2023).

    Args: student_logits, teacher_logits: (B, T, V). Returns (B, T).
    """
    log_q, log_p = log_probs_pair(student_logits, teacher_logits, temperature)
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2: symmetric, in [0, log 2] (f-distill, Wen et al. 2023).

    Args: student_logits, teacher_logits: (B, T, V). Returns (B, T).
    """
    log_q, log_p = log_probs_pair(student_logits, teacher_logits, temperature)
    log_m = log_mixture(log_p, log_q, 0.5)
    return 0.5 * kl_from_log_probs(log_p, log_m) + 0.5 * kl_from_log_probs(log_q, log_m)


def skew_forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, alpha: float, temperature: float = 1.0) -> torch.Tensor:
    """KL(p ‖ α·p + (1 − α)·q): DistiLLM's skew KL (Ko et al. 2024, Eq. 3); α = 0 is the forward KL.

    Args: student_logits, teacher_logits: (B, T, V); alpha in [0, 1]. Returns (B, T).
    """
    log_q, log_p = log_probs_pair(student_logits, teacher_logits, temperature)
    return kl_from_log_probs(log_p, log_mixture(log_p, log_q, alpha))


def skew_reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, alpha: float, temperature: float = 1.0) -> torch.Tensor:
    """KL(q ‖ α·q + (1 − α)·p): DistiLLM's skew reverse KL (Ko et al. 2024); α = 0 is the reverse KL.

    Args: student_logits, teacher_logits: (B, T, V); alpha in [0, 1]. Returns (B, T).
    """
    log_q, log_p = log_probs_pair(student_logits, teacher_logits, temperature)
    return kl_from_log_probs(log_q, log_mixture(log_q, log_p, alpha))


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, beta: float, temperature: float = 1.0) -> torch.Tensor:
    """GKD's generalised JSD(β) (Agarwal et al. 2024, "On-policy distillation", §3), scaled by 1/(β(1 − β)).

    JSD_β = β·KL(p ‖ m) + (1 − β)·KL(q ‖ m),  m = β·p + (1 − β)·q.
    Unscaled, JSD_β → 0 at both ends (≈ β·KL(p ‖ q) for small β, ≈ (1 − β)·KL(q ‖ p) near 1).
    Dividing by β(1 − β) makes the family continuous with its limits: β = 0 is exactly the
    forward KL(p ‖ q) and β = 1 the reverse KL(q ‖ p), and gradient sizes stay comparable
    across β. (TRL's GKD trainer uses the unscaled value inside (0, 1): its loss is
    β(1 − β) times this one, e.g. ¼ at β = ½.)

    Args: student_logits, teacher_logits: (B, T, V); beta in [0, 1]. Returns (B, T).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    log_q, log_p = log_probs_pair(student_logits, teacher_logits, temperature)
    if beta == 0.0:
        return kl_from_log_probs(log_p, log_q)
    if beta == 1.0:
        return kl_from_log_probs(log_q, log_p)
    log_m = log_mixture(log_p, log_q, beta)
    jsd = beta * kl_from_log_probs(log_p, log_m) + (1 - beta) * kl_from_log_probs(log_q, log_m)
    return jsd / (beta * (1 - beta))
