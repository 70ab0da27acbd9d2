"""PLaD: calibration of the student on pseudo-preference pairs (teacher output ≻ student output).

Zhang et al., "PLaD: Preference-based Large Language Model Distillation with
Pseudo-Preference Pairs", ACL Findings 2024 (arXiv 2406.02886), section 4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from prefdistill.config.typed import NON_NEGATIVE, opt
from prefdistill.errors import ConfigError
from prefdistill.losses import plad_margin_loss, plad_rank_loss
from prefdistill.methods.common import pair_logps
from prefdistill.methods.registry import SFT_ROW, Claim, register
from prefdistill.models.logprobs import masked_mean, sequence_logps


@dataclass
class PLaDParams:
    variant: Literal["rank", "margin"] = opt("rank", "ranking or margin calibration")
    beta: float = opt(1.0, "margin (rank) or score-gap scale (margin), in nats per token", NON_NEGATIVE)
    normalize: bool = opt(True, "length-normalised log-likelihood ℓ(y) = log q(y|x) / |y| (PLaD)")
    ce_weight: float = opt(0.0, "λ of the optional cross-entropy regulariser (off in the paper)", NON_NEGATIVE)
    ce_target: Literal["chosen", "reference"] = opt(
        "chosen", "the regulariser's target: the teacher output, or the dataset reference (SLiC-HF's choice)")

    def check(self, cfg) -> None:
        if self.variant == "margin" and cfg.pairs.score == "none":
            raise ConfigError("distill.params.variant=margin needs a scoring function: set pairs.score to rouge or judge")


@register("plad", consumes="pairs", params=PLaDParams, needs=("teacher_samples", "student_samples"), label="PLaD",
          summary="PLaD ranking / margin calibration on pseudo-preference pairs", family="preference",
          claims=(Claim("PLaD", "plad", "family:kd", "win_rate"), Claim("PLaD", "family:kd", SFT_ROW, "win_rate")))
def plad(policy, rows: list[dict], params: PLaDParams):
    """Calibration loss over a batch of pairs, plus λ·CE when ce_weight > 0."""
    n = len(rows)
    prompts = [r.prompt for r in rows]
    # Chosen and rejected together, each prompt computed once for both: (2B, C).
    per_token, mask = pair_logps(policy, prompts, [r.chosen for r in rows], [r.rejected for r in rows])
    logps = sequence_logps(per_token, mask, normalize=params.normalize)  # (2B,)
    chosen_logps, rejected_logps = logps[:n], logps[n:]
    if params.variant == "rank":
        losses = plad_rank_loss(chosen_logps, rejected_logps, beta=params.beta)
    else:
        scores = torch.tensor([[r.chosen_score, r.rejected_score] for r in rows], dtype=logps.dtype, device=logps.device)
        losses = plad_margin_loss(chosen_logps, rejected_logps, scores[:, 0], scores[:, 1], beta=params.beta)
    loss = losses.mean()
    c, r = chosen_logps.detach(), rejected_logps.detach()
    stats = {
        "calibration": loss.item(),
        "chosen_logp": c.mean().item(),
        "rejected_logp": r.mean().item(),
        "ranking_accuracy": (c > r).float().mean().item(),
    }
    if params.ce_weight > 0:
        if params.ce_target == "chosen":
            ce_tok, ce_mask = per_token[:n], mask[:n]  # already computed above
        else:
            ce_tok, ce_mask = policy.completion_logps(prompts, [r.reference for r in rows])
        ce = -masked_mean(ce_tok, ce_mask)
        loss = loss + params.ce_weight * ce
        stats["ce"] = ce.item()
    return loss, stats
