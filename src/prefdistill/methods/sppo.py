"""SPPO: self-play preference optimisation (Wu et al. 2024), the self-play baseline of WIND.

Its loss is WIND's squared loss with β = 0: (log π_θ(y) − log π_t(y) − η·(P̂(y ≻ π_t) − ½))²
on K samples per prompt of the current student; no magnet to π_ref.
"""
from __future__ import annotations

from dataclasses import dataclass

from prefdistill.config.typed import AT_LEAST_1, AT_LEAST_2, POSITIVE, opt
from prefdistill.methods.registry import register
from prefdistill.methods.selfplay import refuse_tempered_sampling
from prefdistill.methods.wind import WINDParams, wind_step


@dataclass
class SPPOParams:
    eta: float = opt(1.0, "step size η of the self-play update", POSITIVE)
    samples: int = opt(4, "K completions per prompt per step (win rates need two)", AT_LEAST_2)
    max_new_tokens: int = opt(48, "tokens per sample at most", AT_LEAST_1)
    temperature: float = opt(1.0, "sampling temperature; must be 1 (see refuse_tempered_sampling)", POSITIVE)

    def check(self, cfg) -> None:
        refuse_tempered_sampling(self.temperature, "SPPO")


@register("sppo", consumes="prompts", params=SPPOParams, needs=("oracle",), label="SPPO",
          summary="self-play preference optimisation: WIND's squared loss with β = 0", family="win_rate")
def sppo(policy, rows: list[dict], params: SPPOParams, *, oracle):
    """WIND's squared loss with β = 0."""
    as_wind = WINDParams(loss="squared", eta=params.eta, beta=0.0, samples=params.samples,
                         max_new_tokens=params.max_new_tokens)
    return wind_step(policy, rows, as_wind, oracle=oracle)
