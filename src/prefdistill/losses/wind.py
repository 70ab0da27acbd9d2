"""WIND losses: sample-based fits of one step of the win-rate-dominance update.

Faster WIND (Yang et al. 2024/25, arXiv 2410.20727). [derived]: the full text was not
available when this was written; they are derived in docs/derivations.md (§WIND), and
their defining properties are pinned by tests.

One step of the exact update (mirror descent with a magnet to π_ref):
    π_{t+1}(y) ∝ π_t(y)^{1−ηβ} · π_ref(y)^{ηβ} · exp(η·P(y ≻ π_t)),   0 < ηβ ≤ 1.
With K samples y_i ~ π_t per prompt and empirical win rates P̂_i = mean_j P(y_i ≻ y_j),
π_θ is fitted to π_{t+1} by one of three losses. Inputs are sequence log-likelihoods:
`policy_logps` log π_θ(y_i) (with grad), `anchor_logps` log π_t(y_i), `ref_logps` log π_ref(y_i).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def wind_squared_loss(policy_logps: torch.Tensor, anchor_logps: torch.Tensor, ref_logps: torch.Tensor, win_rates: torch.Tensor, *,
                      eta: float, beta: float) -> torch.Tensor:
    """(log π_θ − (1 − ηβ)·log π_t − ηβ·log π_ref − η·(P̂ − ½))²  [derived]; β = 0 is SPPO's loss.

    Zero exactly when π_θ is the (unnormalised, centred) target of the exact update.
    Args: four tensors of one shape, e.g. (B,). Returns the same shape.
    """
    target = (1 - eta * beta) * anchor_logps + eta * beta * ref_logps + eta * (win_rates - 0.5)
    return (policy_logps - target) ** 2


def wind_target_weights(anchor_logps: torch.Tensor, ref_logps: torch.Tensor, win_rates: torch.Tensor, *, eta: float, beta: float) -> torch.Tensor:
    """Self-normalised importance weights of π_{t+1} over K samples of π_t: softmax over the last axis of
    η·P̂_i + ηβ·(log π_ref − log π_t)(y_i)  [derived].

    Args: (B, K) each. Returns (B, K), rows summing to 1, without gradient.
    """
    return torch.softmax((eta * win_rates + eta * beta * (ref_logps - anchor_logps)).detach(), dim=-1)


def wind_kl_loss(policy_logps: torch.Tensor, anchor_logps: torch.Tensor, ref_logps: torch.Tensor, win_rates: torch.Tensor, *,
                 eta: float, beta: float) -> torch.Tensor:
    """−Σ_i w_i·log π_θ(y_i): a Monte Carlo KL(π_{t+1} ‖ π_θ) up to a constant  [derived].

    Args: (B, K) each (K samples per prompt). Returns (B,).
    """
    w = wind_target_weights(anchor_logps, ref_logps, win_rates, eta=eta, beta=beta)
    return -(w * policy_logps).sum(-1)


def wind_nce_loss(policy_logps: torch.Tensor, anchor_logps: torch.Tensor, ref_logps: torch.Tensor, win_rates: torch.Tensor, *,
                  eta: float, beta: float) -> torch.Tensor:
    """Logistic discrimination of target-weighted samples from plain π_t samples  [derived].

    The classifier's logit is g_i = log π_θ(y_i) − log π_t(y_i); positives carry the
    target weights w_i, negatives the uniform 1/K. The optimum is g = log π_{t+1}/π_t.
    Loss: −Σ_i [w_i·log σ(g_i) + (1/K)·log σ(−g_i)]. Args: (B, K) each. Returns (B,).
    """
    w = wind_target_weights(anchor_logps, ref_logps, win_rates, eta=eta, beta=beta)
    g = policy_logps - anchor_logps.detach()
    k = policy_logps.shape[-1]
    return -(w * F.logsigmoid(g) + F.logsigmoid(-g) / k).sum(-1)
