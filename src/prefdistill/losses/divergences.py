"""Per-position divergences between teacher and student next-token distributions.

    kl = forward_kl(student_logits, teacher_logits)   # (B, T)
    jsd = generalized_jsd_from_log_probs(log_q, log_p, beta=0.5)   # the same divergence, from log-probs

p is the teacher distribution, q the student's; both come from logits divided by a
temperature. Each divergence is computed in one place, its `*_from_log_probs` form, which
takes (log q, log p) over any set of outcomes: the vocabulary (the logits forms call it
after `log_probs_pair`), or the k + 1 outcomes of a cached top-k (`prefdistill.losses.topk.coarsen`),
where an outcome may have probability 0 (log-prob -inf) under one or both. Each is an
f-divergence, so on two distributions coarsened by one partition it can only shrink (the
data-processing inequality; Csiszár 1967): the coarsened value is a lower bound of the
full one, equal when the partition separates every token (k = V).
Reductions over positions (masking, averaging) belong to the caller.
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
    """KL(a ‖ b) = Σ_v a_v (log a_v − log b_v) over the last axis: (..., V) -> (...), with 0·log 0 = 0.

    An outcome a gives no mass (log a_v = -inf, or a_v underflowing to 0) adds 0 with zero
    gradient, whatever log b_v is; one with a_v > 0 and b_v = 0 makes the KL +inf, as it is.
    """
    a = log_a.exp()
    diff = torch.where(a > 0, log_a - log_b, 0.0)  # masked before the product: 0·(-inf − -inf) would be NaN
    return (a * diff).sum(-1)


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
    return total_variation_from_log_probs(*log_probs_pair(student_logits, teacher_logits, temperature))


def total_variation_from_log_probs(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """½ Σ_v |p_v − q_v| from log-probs (..., V) -> (...); on coarsened distributions a lower bound of the full TV."""
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2: symmetric, in [0, log 2] (f-distill, Wen et al. 2023).

    Args: student_logits, teacher_logits: (B, T, V). Returns (B, T).
    """
    return js_from_log_probs(*log_probs_pair(student_logits, teacher_logits, temperature))


def js_from_log_probs(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """½ KL(p ‖ m) + ½ KL(q ‖ m) from log-probs (..., V) -> (...); on coarsened distributions a lower bound of the full JS."""
    log_m = log_mixture(log_p, log_q, 0.5)
    return 0.5 * kl_from_log_probs(log_p, log_m) + 0.5 * kl_from_log_probs(log_q, log_m)


def skew_forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, alpha: float, temperature: float = 1.0) -> torch.Tensor:
    """KL(p ‖ α·p + (1 − α)·q): DistiLLM's skew KL (Ko et al. 2024, Eq. 3); α = 0 is the forward KL.

    Args: student_logits, teacher_logits: (B, T, V); alpha in [0, 1]. Returns (B, T).
    """
    return skew_forward_kl_from_log_probs(*log_probs_pair(student_logits, teacher_logits, temperature), alpha=alpha)


def skew_forward_kl_from_log_probs(log_q: torch.Tensor, log_p: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """KL(p ‖ α·p + (1 − α)·q) from log-probs (..., V) -> (...); on coarsened distributions a lower bound of the full one."""
    return kl_from_log_probs(log_p, log_mixture(log_p, log_q, alpha))


def skew_reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, alpha: float, temperature: float = 1.0) -> torch.Tensor:
    """KL(q ‖ α·q + (1 − α)·p): DistiLLM's skew reverse KL (Ko et al. 2024); α = 0 is the reverse KL.

    Args: student_logits, teacher_logits: (B, T, V); alpha in [0, 1]. Returns (B, T).
    """
    return skew_reverse_kl_from_log_probs(*log_probs_pair(student_logits, teacher_logits, temperature), alpha=alpha)


def skew_reverse_kl_from_log_probs(log_q: torch.Tensor, log_p: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """KL(q ‖ α·q + (1 − α)·p) from log-probs (..., V) -> (...); on coarsened distributions a lower bound of the full one.

    With α = 0 (the reverse KL) it is +inf where q gives mass to an outcome p gives none: a
    coarsened teacher whose top k hold all its mass (p_rest = 0) while k < V; and on a cached
    top-k it reads log p_rest, known only to the cache's precision (`prefdistill.losses.topk.coarsen`).
    """
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
    return generalized_jsd_from_log_probs(*log_probs_pair(student_logits, teacher_logits, temperature), beta=beta)


def generalized_jsd_from_log_probs(log_q: torch.Tensor, log_p: torch.Tensor, *, beta: float) -> torch.Tensor:
    """`generalized_jsd` from log-probs (..., V) -> (...), with the same scaling.

    On coarsened distributions a lower bound of the full one: each KL against the mixture
    shrinks, the coarsened mixture being the mixture of the coarsened distributions. β = 1 is
    the reverse KL, +inf where q gives mass to an outcome p gives none, and sensitive to the
    precision of a cached p_rest (see `skew_reverse_kl_from_log_probs`).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return kl_from_log_probs(log_p, log_q)
    if beta == 1.0:
        return kl_from_log_probs(log_q, log_p)
    log_m = log_mixture(log_p, log_q, beta)
    jsd = beta * kl_from_log_probs(log_p, log_m) + (1 - beta) * kl_from_log_probs(log_q, log_m)
    return jsd / (beta * (1 - beta))
