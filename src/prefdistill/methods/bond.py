"""Iterative BOND: distil Best-of-n of a moving anchor (Sessa et al. 2024, arXiv 2407.14622, §4).

Best-of-n of the anchor has π_BoN(y) ∝ π_anchor(y)·p≤(y)^{n−1}, p≤(y) the probability that an
anchor sample does not beat y. Per prompt and step: n anchor samples and one student
sample y, all log-probabilities summed over the completion (sequence level, both parts).
- Forward KL(π_BoN ‖ π): −log π of the best of the n anchor samples (by their win rates
  among themselves).
- Backward KL(π ‖ π_BoN): REINFORCE on y with return log p̂≤(y) − (log π(y) − log π_anchor(y))/(n − 1)
  and a leave-one-out baseline; p̂≤ is the mid-rank of y among the anchor samples.
Jeffreys mix (1 − β)·forward + β·backward (`prefdistill.losses.jeffreys_loss`). After every
`anchor_every` optimizer steps the anchor moves to the student (one iteration), so M
iterations approximate Best-of-n^M of the SFT student.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prefdistill.config.typed import AT_LEAST_1, AT_LEAST_2, POSITIVE, SHARE, opt
from prefdistill.losses import jeffreys_loss, kl_regularised_returns, log_quantile_reward
from prefdistill.methods.registry import register
from prefdistill.methods.selfplay import (
    anchor_weights, init_anchor, oracle_delta, refuse_tempered_sampling, reset_anchor, sample_group, scored_without_dropout,
    sequence_logps_of,
)


@dataclass
class BONDParams:
    n: int = opt(4, "Best-of-n per iteration: anchor samples per prompt", AT_LEAST_2)
    beta: float = opt(0.5, "Jeffreys mix: (1 − β)·forward + β·backward", SHARE)
    anchor_every: int = opt(4, "optimizer steps per iteration (the anchor moves to the student after them)", AT_LEAST_1)
    max_new_tokens: int = opt(48, "tokens per sample at most", AT_LEAST_1)
    temperature: float = opt(1.0, "sampling temperature; must be 1 (see refuse_tempered_sampling)", POSITIVE)

    def check(self, cfg) -> None:
        refuse_tempered_sampling(self.temperature, "BOND")


def move_anchor(policy, params: BONDParams, *, state: dict, **_) -> None:
    """After each optimizer step: count it, and every `anchor_every` steps set anchor ← student."""
    state["updates"] = state.get("updates", 0) + 1
    if state["updates"] % params.anchor_every == 0:
        reset_anchor(policy, state)


@register("bond", consumes="prompts", params=BONDParams, needs=("oracle", "state"), label="BOND", after_step=move_anchor,
          summary="iterative Best-of-n distillation (Jeffreys divergence) with a moving anchor", family="win_rate")
def bond(policy, rows: list[dict], params: BONDParams, *, oracle, state):
    """One iterative-BOND loss on the prompts of a micro-batch."""
    prompts = [r.prompt for r in rows]
    n = params.n
    init_anchor(policy, state)  # the starting weights, on first use
    before = oracle.counts()
    mine = sample_group(policy, prompts, k=1, max_new_tokens=params.max_new_tokens)
    with anchor_weights(policy, state):
        theirs = sample_group(policy, prompts, k=n, max_new_tokens=params.max_new_tokens)
        anchor_logp_y = scored_without_dropout(policy, mine.prompts, mine.ids).detach()
    matrices = oracle.win_matrices(prompts, [y + a for y, a in zip(mine.texts, theirs.texts)])
    log_q = log_quantile_reward(torch.from_numpy(np.stack([m[0, 1:] for m in matrices])).float())  # (B,)
    best = [theirs.ids[i * n + int(oracle.win_rates(m[1:, 1:]).argmax())] for i, m in enumerate(matrices)]

    logp_y = scored_without_dropout(policy, mine.prompts, mine.ids)  # (B,) with grad
    ret = kl_regularised_returns(log_q.to(logp_y.device), logp_y.detach(), anchor_logp_y.to(logp_y.device), kl_coef=1 / (n - 1))
    best_logps = sequence_logps_of(policy, prompts, best)  # (B,) with grad: the SFT part keeps its dropout
    loss = jeffreys_loss(best_logps, logp_y, ret, beta=params.beta).mean()
    return loss, {"forward_nll": -best_logps.mean().item(), "mean_log_quantile": log_q.mean().item(), "mean_return": ret.mean().item(),
                  "kl_to_anchor": (logp_y.detach() - anchor_logp_y.to(logp_y.device)).mean().item(),
                  "count_samples": float((n + 1) * len(prompts)), "tokens_student_generated": float(mine.n_tokens + theirs.n_tokens),
                  **oracle_delta(oracle, before)}
