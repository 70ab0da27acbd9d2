"""SPPO: self-play preference optimisation (Wu et al. 2024), the self-play baseline of WIND.

Its loss is WIND's squared loss with β = 0: (log π_θ(y) − log π_t(y) − η·(P̂(y ≻ π_t) − ½))²
on K samples per prompt of the current student; no magnet to π_ref.
"""
from __future__ import annotations

from dataclasses import dataclass

from prefdistill.methods.registry import register
from prefdistill.methods.selfplay import refuse_tempered_sampling
from prefdistill.methods.wind import WINDParams, wind_step


@dataclass
class SPPOParams:
    eta: float = 1.0
    samples: int = 4
    max_new_tokens: int = 48
    temperature: float = 1.0  # must be 1: see refuse_tempered_sampling

    def check(self, cfg) -> None:
        from prefdistill.config import ConfigError

        if self.eta <= 0 or self.samples < 2:
            raise ConfigError("distill.params: SPPO needs eta > 0 and at least 2 samples per prompt")
        refuse_tempered_sampling(self.temperature, "SPPO")


@register("sppo", consumes="pairs", params=SPPOParams, needs=("oracle",), label="SPPO",
          summary="self-play preference optimisation: WIND's squared loss with β = 0")
def sppo(policy, rows: list[dict], params: SPPOParams, *, oracle):
    """WIND's squared loss with β = 0."""
    as_wind = WINDParams(loss="squared", eta=params.eta, beta=0.0, samples=params.samples,
                         max_new_tokens=params.max_new_tokens)
    return wind_step(policy, rows, as_wind, oracle=oracle)
