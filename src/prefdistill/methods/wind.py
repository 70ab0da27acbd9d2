"""WIND: win-rate dominance (Yang et al. 2024/25, "Faster WIND", arXiv 2410.20727).  [derived]

Each step samples K completions per prompt from the student as it is now (π_t, the moving
anchor: one step per iteration), asks the oracle for the empirical win rates
P̂_i = mean_j P(y_i ≻ y_j), and takes a gradient step on a sample-based fit of the exact
update π_{t+1} ∝ π_t^{1−ηβ}·π_ref^{ηβ}·exp(η·P(y ≻ π_t)), with π_ref the SFT student.
The loss forms (squared, kl, nce) are in `prefdistill.losses.wind`; the update and losses
follow the derivation in docs/derivations.md (the full text was not available) and are
checked against the exact update in the bandit lab. Samples are drawn at temperature 1 and
every log-probability is scored without dropout, so π_θ, π_t and π_ref are compared alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from prefdistill.config.typed import AT_LEAST_1, AT_LEAST_2, NON_NEGATIVE, POSITIVE, opt
from prefdistill.data.rows import training_rows
from prefdistill.errors import ConfigError
from prefdistill.losses import wind_kl_loss, wind_nce_loss, wind_squared_loss
from prefdistill.methods.registry import register
from prefdistill.methods.selfplay import oracle_delta, refuse_tempered_sampling, sample_group, scored_without_dropout

LOSSES = {"squared": wind_squared_loss, "kl": wind_kl_loss, "nce": wind_nce_loss}


@dataclass
class WINDParams:
    loss: Literal["squared", "kl", "nce"] = opt("squared", "the sample-based fit of the exact update")
    eta: float = opt(1.0, "step size η of the exact update", POSITIVE)
    beta: float = opt(0.1, "strength β of the magnet to π_ref (η·β ≤ 1)", NON_NEGATIVE)
    samples: int = opt(4, "K completions per prompt per step (win rates need two)", AT_LEAST_2)
    max_new_tokens: int = opt(48, "tokens per sample at most", AT_LEAST_1)
    temperature: float = opt(1.0, "sampling temperature; must be 1 (see refuse_tempered_sampling)", POSITIVE)

    def check(self, cfg) -> None:
        if self.eta * self.beta > 1:
            raise ConfigError(f"distill.params.eta and distill.params.beta: the update needs eta·beta ≤ 1, got "
                              f"{self.eta}·{self.beta}")
        refuse_tempered_sampling(self.temperature, "WIND")


def wind_step(policy, rows: list[dict], params: WINDParams, *, oracle, reference=None):
    """One WIND step (also SPPO's, with β = 0 and the squared loss)."""
    prompts = [r.prompt for r in training_rows(rows)]
    k = params.samples
    before = oracle.counts()
    group = sample_group(policy, prompts, k=k, max_new_tokens=params.max_new_tokens)
    matrices = oracle.win_matrices(prompts, group.texts)
    rates = torch.from_numpy(np.stack([oracle.win_rates(m) for m in matrices])).float()  # (B, K)
    # Without dropout: these are compared with π_t's and π_ref's log-probs, which have none.
    policy_logps = scored_without_dropout(policy, group.prompts, group.ids).view(len(prompts), k)
    anchor_logps = policy_logps.detach()  # π_t: the student that drew the samples
    stats = {}
    if params.beta > 0:
        with torch.no_grad():
            ref_logps = scored_without_dropout(reference, group.prompts, group.ids).view(len(prompts), k).to(policy_logps.device)
        stats["log_ratio_to_ref"] = (anchor_logps - ref_logps).mean().item()
    else:  # no magnet (SPPO): π_ref drops out of every loss form
        ref_logps = torch.zeros_like(anchor_logps)
    losses = LOSSES[params.loss](policy_logps, anchor_logps, ref_logps, rates.to(policy_logps.device), eta=params.eta, beta=params.beta)
    spread = (rates.max(-1).values - rates.min(-1).values).mean().item()
    return losses.mean(), {"win_rate_spread": spread, **stats, "count_samples": float(len(group.ids)),
                           "tokens_student_generated": float(group.n_tokens), **oracle_delta(oracle, before)}


@register("wind", consumes="prompts", params=WINDParams, needs=("oracle", "reference"), label="WIND",
          summary="win-rate dominance: fit one step of the regularised win-rate game on K self-samples per prompt", family="win_rate")
def wind(policy, rows: list[dict], params: WINDParams, *, oracle, reference):
    """WIND on the prompts of the pairs file, with the configured oracle."""
    return wind_step(policy, rows, params, oracle=oracle, reference=reference)
