"""Supervised fine-tuning: token-level cross-entropy on reference completions.

Used by the `sft` stage for teacher and student, and as the SFT baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

from prefdistill.logprobs import sequence_logps
from prefdistill.methods.registry import register


@dataclass
class SFTParams:
    pass


@register("sft", consumes="targets", params=SFTParams, summary="cross-entropy on the reference completions")
def sft(policy, rows: list[dict], params: SFTParams):
    """Mean token-level negative log-likelihood of the targets (tokens pooled over the batch)."""
    per_token, mask = policy.completion_logps([r["prompt"] for r in rows], [r["target"] for r in rows])
    tokens = mask.sum().clamp(min=1)
    loss = -(per_token * mask).sum() / tokens
    mean_logp = sequence_logps(per_token.detach(), mask, normalize=True).mean()
    return loss, {"token_logp": mean_logp.item()}
