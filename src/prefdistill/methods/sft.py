"""Supervised fine-tuning: token-level cross-entropy on reference completions.

Used by the `sft` stage for teacher and student, and as the SFT baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

from prefdistill.methods.registry import register
from prefdistill.models.logprobs import masked_mean, sequence_logps


@dataclass
class SFTParams:
    pass


def token_nll(policy, prompts: list[str], completions: list[str]):
    """Mean negative log-likelihood per completion token, pooled over the batch."""
    per_token, mask = policy.completion_logps(prompts, completions)
    loss = -masked_mean(per_token, mask)
    mean_logp = sequence_logps(per_token.detach(), mask, normalize=True).mean()
    return loss, {"token_logp": mean_logp.item()}


@register("sft", consumes="targets", params=SFTParams, label="SFT", summary="cross-entropy on the reference completions",
          family="imitation")
def sft(policy, rows: list[dict], params: SFTParams):
    """Mean token-level negative log-likelihood of the targets."""
    return token_nll(policy, [r.prompt for r in rows], [r.target for r in rows])
