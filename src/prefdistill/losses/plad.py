"""PLaD calibration losses (Zhang et al., ACL Findings 2024, arXiv 2406.02886, section 4).

    loss = plad_rank_loss(chosen_logps, rejected_logps, beta=1.0)   # (B,)

`chosen` is the teacher's output y⁺, `rejected` the student's y⁻ (pseudo-preference pair).
Callers pass length-normalised sequence log-likelihoods ℓ(y) = log q_θ(y|x) / |y| when the
method normalises (PLaD does); see prefdistill.models.logprobs.sequence_logps.
"""
from __future__ import annotations

import torch


def plad_rank_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Ranking calibration: max(0, β − ℓ(y⁺) + ℓ(y⁻)) (PLaD section 4, after SLiC-HF's rank loss).

    Args:
        chosen_logps, rejected_logps: (B,) student sequence log-likelihoods.
        beta: the margin by which y⁺ must out-score y⁻.
    Returns: (B,) per-pair losses.
    """
    return torch.clamp(beta - chosen_logps + rejected_logps, min=0.0)


def plad_margin_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    *,
    beta: float,
) -> torch.Tensor:
    """Margin calibration: max(0, β·(s(y⁺) − s(y⁻)) − ℓ(y⁺) + ℓ(y⁻)).

    The required gap grows with the quality gap measured by a scoring function s (ROUGE
    against the reference or a judge score); form as in SLiC-HF, which PLaD builds on.

    Args:
        chosen_logps, rejected_logps: (B,) student sequence log-likelihoods.
        chosen_scores, rejected_scores: (B,) scores s(y; x) of each side.
        beta: scale of the score gap.
    Returns: (B,) per-pair losses.
    """
    margin = beta * (chosen_scores - rejected_scores)
    return torch.clamp(margin - chosen_logps + rejected_logps, min=0.0)
