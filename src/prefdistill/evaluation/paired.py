"""Outcomes of a row's outputs against the reference and against another row's, per seed and prompt.

    soft = soft_wins_per_seed(judge_scores, reference_scores, scale=1.0)    # (S, N): σ((s(y) − s(ref)) / scale)
    w = head_to_head_outcomes(scores_a, scores_b)                           # (Sa, Sb, N): 1 / ½ / 0
    scale = fit_logistic_scale(chosen_scores, rejected_scores)              # a judge without a Bradley–Terry scale

The win rate against the reference thresholds the judge's score at the reference's: an output
that improves but stays below the reference counts as no change. A Bradley–Terry judge (one
trained with −log σ(s(chosen) − s(rejected)), as the reward stage's are) gives the probability
itself, P(y ≻ ref | x) = σ(s(y) − s(ref)) (Bradley & Terry 1952); its mean over prompts is the
*soft win rate*, a win rate on the same 0–100 scale whose per-prompt outcome is continuous, so
its variance is lower. A judge trained some other way (an `hf` reward model of unknown scale, a
callable) gets its scale from a one-parameter logistic fitted on known pairs
(`fit_logistic_scale`). The head-to-head compares two rows directly on each prompt, without the
reference in between: the share of prompts on which the judge prefers a's output (ties half).
Intervals: `bootstrap.bootstrap_ci`, `bootstrap.paired_difference_seeds`, `bootstrap.head_to_head_seeds`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _matrix(x, name: str) -> np.ndarray:
    arr = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty (seeds, prompts) array, got shape {np.shape(x)}")
    return arr


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + e^(−x)), computed without overflow for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def soft_wins_per_seed(judge_scores: Sequence[Sequence[float]], reference_scores: Sequence[float], *,
                       scale: float = 1.0) -> np.ndarray:
    """(S, N) P(output ≻ reference) = σ((s(y) − s(ref)) / scale) of S seeds' outputs on N prompts.

    scale 1 for a Bradley–Terry judge; `fit_logistic_scale` for another. Equal scores give ½, the
    value a tie counts in the hard win rate, so the two rates agree on a judge that cannot tell.
    """
    if not scale > 0:
        raise ValueError(f"soft_wins_per_seed: scale must be positive, got {scale}")
    s = _matrix(judge_scores, "soft_wins_per_seed: judge_scores")
    ref = np.asarray(reference_scores, dtype=np.float64)
    if ref.shape != (s.shape[1],):
        raise ValueError(f"soft_wins_per_seed: {ref.size} reference scores for {s.shape[1]} prompts")
    return sigmoid((s - ref[None]) / scale)


def head_to_head_outcomes(scores_a: Sequence[Sequence[float]], scores_b: Sequence[Sequence[float]], *,
                          tie_tol: float = 1e-6) -> np.ndarray:
    """(Sa, Sb, N): 1 where a's seed-i output outscores b's seed-j output on prompt n, ½ within tie_tol, else 0.

    Every seed of a meets every seed of b on the same prompt; identical texts score alike and tie.
    """
    a, b = _matrix(scores_a, "head_to_head_outcomes: scores_a"), _matrix(scores_b, "head_to_head_outcomes: scores_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"head_to_head_outcomes: the rows cover {a.shape[1]} and {b.shape[1]} prompts; they must be the same")
    d = a[:, None, :] - b[None, :, :]  # (Sa, Sb, N)
    return np.where(np.abs(d) <= tie_tol, 0.5, (d > 0).astype(np.float64))


def fit_logistic_scale(chosen: Sequence[float], rejected: Sequence[float], *, iters: int = 50) -> float:
    """The scale c maximising Σ log σ((s(chosen) − s(rejected)) / c) over known pairs: a judge's Bradley–Terry scale.

    A one-parameter logistic regression through the origin on the score gaps d (Newton's method on
    a = 1/c, a concave log-likelihood). It needs some pairs the judge orders wrongly or nearly
    tied: with every gap positive and far from 0 the likelihood keeps rising as c → 0, and the
    fit stops at the scale of the smallest gap (stated in the docstring, not hidden: such a judge
    is certain, and its soft win rate is close to its hard one).
    """
    d = np.asarray(chosen, dtype=np.float64) - np.asarray(rejected, dtype=np.float64)
    if d.ndim != 1 or d.size < 2 or np.shape(chosen) != np.shape(rejected):
        raise ValueError("fit_logistic_scale: need two equal-length lists of at least two scores")
    if not np.any(d != 0):
        raise ValueError("fit_logistic_scale: every pair is tied; the judge gives no scale")
    a_max = 1.0 / max(np.min(np.abs(d[d != 0])), 1e-12) * 20.0  # the separable case stops here
    a = 1.0 / float(np.std(d) + np.mean(np.abs(d)))
    for _ in range(iters):
        p = sigmoid(a * d)  # (P,) P(chosen ≻ rejected)
        grad = float(np.sum((1.0 - p) * d))
        hess = -float(np.sum(p * (1.0 - p) * d * d))
        if hess == 0.0:
            break
        step = grad / hess
        a = min(max(a - step, 1e-12), a_max)
        if abs(step) < 1e-10 * a:
            break
    return 1.0 / a
