"""Iterative BOND: distil Best-of-n of a moving anchor (Sessa et al. 2024, arXiv 2407.14622, §4).

Best-of-n of the anchor has π_BoN(y) ∝ π_anchor(y)·p≤(y)^{n−1}, p≤(y) the probability that an
anchor sample does not beat y. Per prompt and step: n anchor samples and one student
sample y.
- Forward KL(π_BoN ‖ π): cross-entropy on the best of the n anchor samples (by their win
  rates among themselves).
- Backward KL(π ‖ π_BoN): REINFORCE on y with reward log p̂≤(y), the Monte Carlo estimate
  mean_j 1[y ≻ a_j] (ties ½; only ranks matter) floored at 1/(2n), and KL coefficient
  1/(n − 1) to the anchor; batch-mean baseline.
Jeffreys mix (1 − β)·forward + β·backward. Every `anchor_every` steps the anchor moves to the
student (one iteration), so M iterations approximate Best-of-n^M of the SFT student.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prefdistill.methods.registry import register
from prefdistill.methods.selfplay import anchor_weights, jeffreys_loss, oracle_delta, reset_anchor, sample_group, sequence_logps_of


@dataclass
class BONDParams:
    n: int = 4  # Best-of-n per iteration (anchor samples per prompt)
    beta: float = 0.5  # Jeffreys mix
    anchor_every: int = 4  # steps per iteration
    max_new_tokens: int = 48
    temperature: float = 1.0

    def check(self, cfg) -> None:
        from prefdistill.config import ConfigError

        if self.n < 2 or not 0 <= self.beta <= 1 or self.anchor_every < 1:
            raise ConfigError("distill.params: BOND needs n ≥ 2, beta in [0, 1] and anchor_every ≥ 1")


@register("bond", consumes="pairs", params=BONDParams, needs=("oracle", "state"), label="BOND",
          summary="iterative Best-of-n distillation (Jeffreys divergence) with a moving anchor")
def bond(policy, rows: list[dict], params: BONDParams, *, oracle, state):
    """One iterative-BOND step."""
    prompts = [r["prompt"] for r in rows]
    n = params.n
    step = state.get("step", 0)
    if step % params.anchor_every == 0:
        reset_anchor(policy, state)
    state["step"] = step + 1
    before = oracle.counts()
    mine = sample_group(policy, prompts, k=1, max_new_tokens=params.max_new_tokens, temperature=params.temperature)
    with anchor_weights(policy, state):
        theirs = sample_group(policy, prompts, k=n, max_new_tokens=params.max_new_tokens, temperature=params.temperature)
        anchor_logp_y = sequence_logps_of(policy, mine.prompts, mine.ids).detach()
    matrices = oracle.win_matrices(prompts, [y + a for y, a in zip(mine.texts, theirs.texts)])
    # Only ranks matter: y beats a_j (1), ties it (½) or loses (0); the floor keeps log p̂≤ finite.
    p_le = torch.tensor([max(float(np.sign(m[0, 1:] - 0.5).mean()) / 2 + 0.5, 1.0 / (2 * n)) for m in matrices])
    best = [theirs.ids[i * n + int(oracle.win_rates(m[1:, 1:]).argmax())] for i, m in enumerate(matrices)]

    logp_y = sequence_logps_of(policy, mine.prompts, mine.ids)
    ret = torch.log(p_le).to(logp_y.device) - (logp_y.detach() - anchor_logp_y.to(logp_y.device)) / (n - 1)
    loss, forward = jeffreys_loss(policy, prompts, logp_y, ret, best, params.beta)
    return loss, {"forward_ce": forward.item(), "mean_log_quantile": float(torch.log(p_le).mean()), "mean_return": ret.mean().item(),
                  "count_samples": float((n + 1) * len(prompts)), "tokens_student_generated": float(mine.n_tokens + theirs.n_tokens),
                  **oracle_delta(oracle, before)}
