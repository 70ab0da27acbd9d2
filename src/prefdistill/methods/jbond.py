"""J-BOND: Jeffreys-divergence best-of-2 distillation with an EMA anchor (Sessa et al. 2024, arXiv 2407.14622, §5).

Per prompt: one sample y of the student and two samples of the anchor (the EMA of the
student's weights, rate 0.02, moved once after every optimizer step).
- Forward KL part: −log π of the better of the two anchor samples (a Best-of-2 sample), summed over its tokens.
- Backward KL part: REINFORCE on y with return R = r(y) − (log π(y) − log π_anchor(y)), where
  r(y) = −log 16 when y loses to both anchor samples and 0 otherwise, and a leave-one-out baseline.
- Optional γ·KL(π ‖ π_anchor), by its score-function gradient on y.
The two parts mix as (1 − β)·forward + β·backward, β = 0.5 (`prefdistill.losses.jeffreys_loss`).
"Loses" means the oracle's P(y ≻ anchor sample) < ½.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prefdistill.config.typed import AT_LEAST_1, NON_NEGATIVE, OPEN_SHARE, POSITIVE, SHARE, opt
from prefdistill.losses import jeffreys_loss, kl_regularised_returns
from prefdistill.methods.registry import register
from prefdistill.methods.selfplay import (
    anchor_weights, ema_anchor, init_anchor, oracle_delta, refuse_tempered_sampling, sample_group, scored_without_dropout,
    sequence_logps_of,
)

LOSE_BOTH_REWARD = -math.log(16.0)  # §5: r(y) when y loses to both anchor samples


@dataclass
class JBONDParams:
    beta: float = opt(0.5, "Jeffreys mix: (1 − β)·forward + β·backward", SHARE)
    ema: float = opt(0.02, "anchor ← (1 − ema)·anchor + ema·student, after every optimizer step", OPEN_SHARE)
    gamma: float = opt(0.0, "extra KL(π ‖ π_anchor) weight", NON_NEGATIVE)
    max_new_tokens: int = opt(48, "tokens per sample at most", AT_LEAST_1)
    temperature: float = opt(1.0, "sampling temperature; must be 1 (see refuse_tempered_sampling)", POSITIVE)

    def check(self, cfg) -> None:
        refuse_tempered_sampling(self.temperature, "J-BOND")


def move_anchor(policy, params: JBONDParams, *, state: dict, **_) -> None:
    """After each optimizer step: anchor ← (1 − ema)·anchor + ema·(the weights after the step)."""
    ema_anchor(policy, state, params.ema)


@register("jbond", consumes="prompts", params=JBONDParams, needs=("oracle", "state"), label="J-BOND", after_step=move_anchor,
          summary="Jeffreys best-of-2 distillation: 1 student + 2 EMA-anchor samples per prompt", family="win_rate")
def jbond(policy, rows: list[dict], params: JBONDParams, *, oracle, state):
    """One J-BOND loss on the prompts of a micro-batch."""
    prompts = [r.prompt for r in rows]
    init_anchor(policy, state)
    before = oracle.counts()
    mine = sample_group(policy, prompts, k=1, max_new_tokens=params.max_new_tokens)
    with anchor_weights(policy, state):
        theirs = sample_group(policy, prompts, k=2, max_new_tokens=params.max_new_tokens)
        anchor_logp_y = scored_without_dropout(policy, mine.prompts, mine.ids).detach()
    matrices = oracle.win_matrices(prompts, [[y[0], a[0], a[1]] for y, a in zip(mine.texts, theirs.texts)])
    loses_both = torch.tensor([m[0, 1] < 0.5 and m[0, 2] < 0.5 for m in matrices], dtype=torch.float32)
    better = [theirs.ids[2 * i] if m[1, 2] >= 0.5 else theirs.ids[2 * i + 1] for i, m in enumerate(matrices)]

    logp_y = scored_without_dropout(policy, mine.prompts, mine.ids)  # (B,) with grad
    log_ratio = logp_y.detach() - anchor_logp_y.to(logp_y.device)
    ret = kl_regularised_returns(LOSE_BOTH_REWARD * loses_both.to(logp_y.device), logp_y.detach(),
                                 anchor_logp_y.to(logp_y.device), kl_coef=1.0)
    best_logps = sequence_logps_of(policy, prompts, better)  # (B,) with grad: the SFT part keeps its dropout
    loss = jeffreys_loss(best_logps, logp_y, ret, beta=params.beta).mean()
    if params.gamma > 0:  # score-function gradient of KL(π ‖ π_anchor) on y ~ π
        loss = loss + params.gamma * (log_ratio * logp_y).mean()
    return loss, {"forward_nll": -best_logps.mean().item(), "mean_return": ret.mean().item(), "loses_both": loses_both.mean().item(),
                  "kl_to_anchor": log_ratio.mean().item(), "count_samples": float(3 * len(prompts)),
                  "tokens_student_generated": float(mine.n_tokens + theirs.n_tokens), **oracle_delta(oracle, before)}
