"""The exact tabular preference game of the bandit lab (Faster WIND, Yang et al. 2024/25, arXiv 2410.20727).

    P = preference_matrices("cyclic", contexts=4, actions=8, rng=np.random.default_rng(0))  # (C, A, A)
    pi_star = equilibrium(ref, P, beta=0.1)          # π* ∝ π_ref·exp(P(y ≻ π*)/β), to ~1e-14
    pi = exact_update(pi, ref, P, beta=0.1, eta=1.0) # one step of the WIND update
    duality_gap(pi, ref, P, beta=0.1)                # (C,), ≥ 0, = 0 exactly at π*

Policies are arrays (C, A) of probabilities, one row per context x; P[x, y, y'] = P(y ≻ y' | x)
with P + Pᵀ = 1 and ½ on the diagonal. Everything here is numpy float64 and exact (no samples).
"""
from __future__ import annotations

import numpy as np

KINDS = ("bt", "random", "cyclic")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    m = logits.max(-1)
    return m + np.log(np.exp(logits - m[..., None]).sum(-1))


def preference_matrices(kind: str, *, contexts: int, actions: int, rng: np.random.Generator) -> np.ndarray:
    """(C, A, A) exact preferences of one kind.

    bt: Bradley–Terry σ(r(y) − r(y')) with rewards r ~ N(0, 1) (transitive).
    random: ½ + (U − Uᵀ)/2 with U uniform on [0, 1]² (no structure).
    cyclic: 0.3 of a Bradley–Terry matrix mixed with 0.7 of a rock-paper-scissors circulant
    ½ + ½·sin(2π(i − j)/A) over a random ordering of the actions: y beats the next ~A/2 − 1
    actions below it on a circle, so the majority relation has cycles (non-transitive).
    """
    P = _raw_matrices(kind, contexts, actions, rng)
    idx = np.arange(actions)
    P[:, idx, idx] = 0.5  # exactly, not up to rounding: ties with oneself decide Best-of-2 below
    return P


def _raw_matrices(kind: str, contexts: int, actions: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "bt":
        r = rng.standard_normal((contexts, actions))
        return bradley_terry(r)
    if kind == "random":
        u = rng.uniform(size=(contexts, actions, actions))
        return 0.5 + (u - u.transpose(0, 2, 1)) / 2
    if kind == "cyclic":
        bt = bradley_terry(rng.standard_normal((contexts, actions)))
        pos = np.stack([rng.permutation(actions) for _ in range(contexts)])  # (C, A) position of each action on the circle
        diff = pos[:, :, None] - pos[:, None, :]  # (C, A, A)
        circulant = 0.5 + 0.5 * np.sin(2 * np.pi * diff / actions)
        return 0.3 * bt + 0.7 * circulant
    raise ValueError(f"unknown preference kind {kind!r}; choose from {', '.join(KINDS)}")


def bradley_terry(rewards: np.ndarray) -> np.ndarray:
    """(C, A) rewards -> (C, A, A) P(y ≻ y') = σ(r(y) − r(y'))."""
    return 1.0 / (1.0 + np.exp(-(rewards[:, :, None] - rewards[:, None, :])))


def has_preference_cycle(P: np.ndarray) -> bool:
    """Whether the strict majority relation of one context's (A, A) matrix has a 3-cycle a ≻ b ≻ c ≻ a."""
    beats = (P > 0.5).astype(np.int64)
    return bool(np.trace(beats @ beats @ beats) > 0)


def win_rates(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """(C, A): P(y ≻ π | x) = Σ_y' P(y ≻ y' | x)·π(y' | x)."""
    return np.einsum("xab,xb->xa", P, pi)


def win_rate_against(P: np.ndarray, pi: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(C,): P(π ≻ π' | x) = Σ π(y)·P(y ≻ y')·π'(y')."""
    return np.einsum("xa,xa->x", pi, win_rates(P, other))


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(C,): KL(p ‖ q) per context, with 0·log 0 = 0."""
    safe = np.where(p > 0, p, 1.0)
    return np.where(p > 0, p * (np.log(safe) - np.log(q)), 0.0).sum(-1)


def exact_update(pi: np.ndarray, ref: np.ndarray, P: np.ndarray, *, beta: float, eta: float) -> np.ndarray:
    """One WIND step π_{t+1} ∝ π_t^{1−ηβ}·π_ref^{ηβ}·exp(η·P(y ≻ π_t))  (docs/derivations.md, [derived])."""
    if not 0 < eta * beta <= 1:
        raise ValueError(f"the exact update needs 0 < eta*beta <= 1, got eta={eta}, beta={beta}")
    logits = (1 - eta * beta) * np.log(pi) + eta * beta * np.log(ref) + eta * win_rates(P, pi)
    return _softmax(logits)


def fixed_point_residual(pi: np.ndarray, ref: np.ndarray, P: np.ndarray, *, beta: float) -> float:
    """max |π − softmax(log π_ref + P(· ≻ π)/β)|: zero exactly at the equilibrium."""
    return float(np.abs(pi - _softmax(np.log(ref) + win_rates(P, pi) / beta)).max())


def duality_gap(pi: np.ndarray, ref: np.ndarray, P: np.ndarray, *, beta: float) -> np.ndarray:
    """(C,): gap of π in the regularised symmetric game  [derived here].

    f(π, π') = P(π ≻ π') − β·KL(π‖π_ref) + β·KL(π'‖π_ref); f(π, π') + f(π', π) = 1, value ½.
    Best response: max_π̃ P(π̃ ≻ π) − β·KL(π̃‖π_ref) = β·log Σ_y π_ref(y)·exp(P(y ≻ π)/β) =: β·L(π).
    gap(π) = max_π̃ f(π̃, π) − min_π̃ f(π, π̃) = [β·L + β·KL(π‖π_ref)] − [1 − β·L − β·KL(π‖π_ref)]
           = 2β·L(π) + 2β·KL(π‖π_ref) − 1 ≥ 0. At π* = π_ref·exp(P(·≻π*)/β)/Z: L = log Z and
    KL(π*‖π_ref) = P(π* ≻ π*)/β − log Z = 1/(2β) − log Z, so the gap is exactly 0.
    """
    lse = _logsumexp(np.log(ref) + win_rates(P, pi) / beta)
    return 2 * beta * lse + 2 * beta * kl(pi, ref) - 1


def equilibrium(ref: np.ndarray, P: np.ndarray, *, beta: float, tol: float = 1e-14) -> np.ndarray:
    """π* with π*(y) ∝ π_ref(y)·exp(P(y ≻ π*)/β), per context, to a fixed-point residual below `tol`.

    Damped Newton in logit space on the centred residual F(l) = l − log π_ref − P·softmax(l)/β
    (logits are defined up to a shift). Its Jacobian I − P·(diag π − ππᵀ)/β is invertible on
    centred vectors: P = ½·11ᵀ + S with S antisymmetric, so S·(diag π − ππᵀ) has imaginary
    eigenvalues. Plain fixed-point iteration diverges for small β, and so can Newton from π_ref,
    so β is lowered from 1 by halves, each solve starting from the previous one (continuation).
    """
    out = np.empty_like(ref)
    schedule = [beta * 2.0 ** k for k in range(int(np.ceil(np.log2(max(1.0, 1.0 / beta)))), -1, -1)]  # ..., 4β, 2β, β
    for x in range(ref.shape[0]):
        l = np.log(ref[x])
        for b in schedule:
            l = _newton(l, np.log(ref[x]), P[x], b, tol)
        out[x] = _softmax(l)
    return out


def _newton(l: np.ndarray, log_ref: np.ndarray, Px: np.ndarray, beta: float, tol: float, max_iter: int = 200) -> np.ndarray:
    a = l.shape[-1]
    centre = np.eye(a) - 1.0 / a

    def residual(l):
        return centre @ (l - log_ref - Px @ _softmax(l) / beta)

    f = residual(l)
    for _ in range(max_iter):
        pi = _softmax(l)
        res = np.abs(pi - _softmax(log_ref + Px @ pi / beta)).max()
        if res < tol:
            return l
        jac = centre @ (np.eye(a) - Px @ (np.diag(pi) - np.outer(pi, pi)) / beta)
        step = np.linalg.lstsq(jac, -f, rcond=None)[0]
        t, norm = 1.0, np.linalg.norm(f)
        while t > 1e-12:
            f_new = residual(l + t * step)
            if np.linalg.norm(f_new) <= (1 - 1e-4 * t) * norm:
                break
            t /= 2
        else:  # no decrease left: rounding (amplified by 1/β) floors the residual
            if res < 1e-10:
                return l
            break
        l, f = l + t * step, f_new
    raise RuntimeError(f"equilibrium: Newton did not converge (beta={beta})")


def best_of_two(pi: np.ndarray, P: np.ndarray) -> np.ndarray:
    """(C, A): Best-of-2 of π under the majority relation of P, ties broken by a fair coin.

    π_Bo2(y) = π(y)·Σ_y' π(y')·2·D(y, y'), D = 1 if P(y ≻ y') > ½, ½ if = ½ (always for y' = y),
    0 otherwise. With distinct Bradley–Terry rewards: π(y)² + 2π(y)·Σ_{r(y') < r(y)} π(y').
    """
    dominance = (P > 0.5) + 0.5 * (P == 0.5)
    idx = np.arange(P.shape[-1])
    dominance[:, idx, idx] = 0.5
    return pi * 2 * np.einsum("xab,xb->xa", dominance, pi)
