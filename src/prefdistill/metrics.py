"""Evaluation metrics for distilled students: pure functions, no model calls.

    from prefdistill.metrics import summarize_generations
    row = summarize_generations(gens, refs, judge_scores, ref_scores, opponent_scores=teacher_scores)

What the PLaD paper (Zhang et al. 2024, arXiv 2406.02886, Table 1 and Figure 3) reports:
win rate of a model's generations against the dataset reference as judged by a reward
model, the teacher-student win rate ("T-S WR"), ROUGE-1/2/L, mean word count, and win
rate per generation-length bucket. Win rates here count ties as half a win and carry a
percentile-bootstrap 95% interval over test examples, so a small test set says so.
"""
from __future__ import annotations

from functools import lru_cache
from statistics import NormalDist
from typing import Sequence

import numpy as np

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def word_count(text: str) -> int:
    """Number of whitespace-separated words (the paper's "generation length")."""
    return len(text.split())


@lru_cache(maxsize=None)
def _scorer(keys: tuple[str, ...]):
    from rouge_score import rouge_scorer  # imported lazily: only evaluation needs it

    return rouge_scorer.RougeScorer(list(keys), use_stemmer=True)


def _check_pairs(a: Sequence, b: Sequence, names: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{names}: length mismatch ({len(a)} vs {len(b)})")
    if len(a) == 0:
        raise ValueError(f"{names}: empty input")


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 ×100 over prediction/reference pairs (Porter stemming on).

    Raises ValueError on a length mismatch or empty lists.
    """
    _check_pairs(predictions, references, "rouge(predictions, references)")
    scorer = _scorer(ROUGE_KEYS)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # rouge_score takes (target, prediction)
        for k in ROUGE_KEYS:
            totals[k] += scores[k].fmeasure
    return {k: 100.0 * v / len(predictions) for k, v in totals.items()}


def rouge_per_example(predictions: list[str], references: list[str], key: str = "rougeL") -> list[float]:
    """F1 in [0, 1] of one ROUGE variant per pair; a PLaD margin scoring function s(y; x)."""
    _check_pairs(predictions, references, "rouge_per_example(predictions, references)")
    scorer = _scorer((key,))
    return [float(scorer.score(ref, pred)[key].fmeasure) for pred, ref in zip(predictions, references)]


def pairwise_outcomes(scores_a: Sequence[float], scores_b: Sequence[float], tie_tol: float = 1e-6) -> list[float]:
    """Per example: 1.0 where a > b, 0.5 where |a - b| <= tie_tol (ties count half), else 0.0."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"pairwise_outcomes: length mismatch ({len(scores_a)} vs {len(scores_b)})")
    out = []
    for a, b in zip(scores_a, scores_b):
        a, b = float(a), float(b)
        out.append(0.5 if abs(a - b) <= tie_tol else (1.0 if a > b else 0.0))
    return out


def bootstrap_ci(
    values: Sequence[float] | Sequence[Sequence[float]], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and its percentile-bootstrap interval.

    Resamples examples with replacement `n_boot` times (numpy Generator seeded with
    `seed`, so the interval is reproducible) and takes the (1-level)/2 and (1+level)/2
    percentiles of the resampled means (Efron & Tibshirani 1993, ch. 13).
    A 2-D input (S training seeds × N examples) is resampled at both levels, seeds and
    examples independently, so the interval covers seed-to-seed variation too.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim not in (1, 2) or x.size == 0:
        raise ValueError("bootstrap_ci: need a non-empty 1-D (examples) or 2-D (seeds × examples) array of values")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_ci: level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    if x.ndim == 1:
        idx = rng.integers(0, x.size, size=(n_boot, x.size))  # (n_boot, n) resampled example ids
        boot_means = x[idx].mean(axis=1)  # (n_boot,)
    else:
        s, n = x.shape
        seeds = rng.integers(0, s, size=(n_boot, s, 1))
        examples = rng.integers(0, n, size=(n_boot, 1, n))
        boot_means = x[seeds, examples].mean(axis=(1, 2))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(boot_means, [tail, 100.0 - tail])
    return mean, float(low), float(high)


def _bucket_labels(edges: Sequence[int]) -> list[str]:
    labels = [f"<{edges[0]}"]
    labels += [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    labels.append(f">={edges[-1]}")
    return labels


def length_buckets(lengths: Sequence[int], outcomes: Sequence[float], edges: Sequence[int]) -> list[dict]:
    """Win rate per generation-length bucket (the PLaD paper's Figure 3).

    edges [15, 25, 35] give buckets "<15", "15-24", "25-34", ">=35". Each bucket is
    {"bucket": label, "n": count, "win_rate": mean outcome ×100, or None when n == 0}.
    """
    if len(lengths) != len(outcomes):
        raise ValueError(f"length_buckets: length mismatch ({len(lengths)} vs {len(outcomes)})")
    edges = list(edges)
    if not edges or any(b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise ValueError(f"length_buckets: edges must be non-empty and strictly increasing, got {edges}")
    # bisect_right: a length equal to an edge belongs to the bucket that starts there.
    ids = np.searchsorted(np.asarray(edges), np.asarray(lengths, dtype=np.int64), side="right")
    outcomes = np.asarray(outcomes, dtype=np.float64)
    rows = []
    for i, label in enumerate(_bucket_labels(edges)):
        sel = outcomes[ids == i]
        rows.append({"bucket": label, "n": int(sel.size), "win_rate": float(sel.mean() * 100.0) if sel.size else None})
    return rows


def wins_per_seed(judge_scores: Sequence[Sequence[float]], reference_scores: Sequence[float]) -> np.ndarray:
    """(S, N) outcomes of S seeds' generations against the references (1 win, ½ tie, 0 loss)."""
    return np.array([pairwise_outcomes(sc, reference_scores) for sc in judge_scores])


def win_rate(judge_scores: Sequence[float], reference_scores: Sequence[float]) -> float:
    """Win rate ×100 of one set of generations against the references (ties half), without a CI."""
    return 100.0 * float(np.mean(pairwise_outcomes(judge_scores, reference_scores)))


def win_rate_with_ci(judge_scores: Sequence[Sequence[float]], reference_scores: Sequence[float], *, n_boot: int = 1000,
                     seed: int = 0) -> tuple[float, list[float]]:
    """(win rate ×100, [low, high]) against the references, pooled over seeds: the `win_rate` of `summarize_seeds`
    without the rest of its row (ROUGE, lengths), for grading with a second judge."""
    return _rate_with_ci(wins_per_seed(judge_scores, reference_scores), n_boot, seed)


def _rate_with_ci(outcomes, n_boot: int, seed: int) -> tuple[float, list[float]]:
    mean, low, high = bootstrap_ci(outcomes, n_boot=n_boot, seed=seed)
    return 100.0 * mean, [100.0 * low, 100.0 * high]


def summarize_generations(
    generations: list[str],
    references: list[str],
    judge_scores: Sequence[float],
    reference_scores: Sequence[float],
    *,
    opponent_scores: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    length_edges: Sequence[int] = (15, 25, 35),
) -> dict:
    """One row of the Table-1 analogue for one model's generations on the test set.

    judge_scores[i] / reference_scores[i]: the judge's score of generation i / of its
    dataset reference; opponent_scores[i]: the judge's score of the opponent's (the
    teacher's) generation on the same prompt. Returns plain floats (JSON-ready):
      n, word_count (mean words), rouge1, rouge2, rougeL (F1 ×100),
      rougeL_ci ([low, high] ×100, bootstrap over per-example ROUGE-L),
      win_rate (×100, vs reference, ties half), win_rate_ci ([low, high] ×100),
      ts_win_rate / ts_win_rate_ci (vs the opponent; None without opponent_scores),
      length_buckets (win rate vs reference by this row's generation length).
    """
    return summarize_seeds([generations], references, [judge_scores], reference_scores, opponent_scores=opponent_scores,
                           n_boot=n_boot, seed=seed, length_edges=length_edges)


def summarize_seeds(
    generations: list[list[str]],
    references: list[str],
    judge_scores: Sequence[Sequence[float]],
    reference_scores: Sequence[float],
    *,
    opponent_scores: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    length_edges: Sequence[int] = (15, 25, 35),
) -> dict:
    """`summarize_generations` over S training seeds of one method: generations[s][i].

    Means pool seeds and examples; the intervals resample both (see `bootstrap_ci`);
    win_rate_seed_sd is the standard deviation of the per-seed win rates (0 for one seed).
    """
    n, s = len(references), len(generations)
    if s == 0:
        raise ValueError("summarize_seeds: no generations")
    for k, gens in enumerate(generations):
        _check_pairs(gens, references, f"summarize_seeds(generations[{k}], references)")
    for name, seq in (("judge_scores", judge_scores), ("reference_scores", [reference_scores]),
                      ("opponent_scores", None if opponent_scores is None else [opponent_scores])):
        if seq is not None and any(len(x) != n for x in seq):
            raise ValueError(f"summarize_seeds: {name} must have {n} entries per seed")
    if len(judge_scores) != s:
        raise ValueError(f"summarize_seeds: {len(judge_scores)} seeds of judge scores for {s} seeds of generations")
    lengths = [word_count(g) for gens in generations for g in gens]
    wins = wins_per_seed(judge_scores, reference_scores)  # (S, N)
    per_seed_rouge = [rouge(gens, references) for gens in generations]
    row: dict = {"n": n, "seeds": s, "word_count": float(np.mean(lengths))}
    row.update({k: float(np.mean([r[k] for r in per_seed_rouge])) for k in ROUGE_KEYS})
    rl = [rouge_per_example(gens, references, "rougeL") for gens in generations]
    _, rl_low, rl_high = bootstrap_ci(rl, n_boot=n_boot, seed=seed)
    row["rougeL_ci"] = [100.0 * rl_low, 100.0 * rl_high]
    row["win_rate"], row["win_rate_ci"] = _rate_with_ci(wins, n_boot, seed)
    row["win_rate_seed_sd"] = float(100.0 * wins.mean(axis=1).std(ddof=1)) if s > 1 else 0.0
    row["ts_win_rate"], row["ts_win_rate_ci"] = None, None
    if opponent_scores is not None:
        ts = [pairwise_outcomes(sc, opponent_scores) for sc in judge_scores]
        row["ts_win_rate"], row["ts_win_rate_ci"] = _rate_with_ci(ts, n_boot, seed)
    row["length_buckets"] = length_buckets(lengths, wins.reshape(-1).tolist(), length_edges)
    return row


def paired_difference(a: Sequence[float], b: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of a[i] − b[i] over the same examples, ×100, with a bootstrap 95% interval.

    Pairing removes the between-prompt variance that makes two rows' separate intervals
    overlap: the right test when two models answered the same test prompts.
    """
    _check_pairs(a, b, "paired_difference(a, b)")
    mean, low, high = bootstrap_ci([x - y for x, y in zip(a, b)], n_boot=n_boot, seed=seed)
    return {"n": len(a), "diff": 100.0 * mean, "ci": [100.0 * low, 100.0 * high]}


def compare_rows(method: dict, baseline: dict, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired comparison of two rows on the same prompts.

    Each argument: {"generations", "references", "judge_scores", "reference_scores"}.
    Returns the paired win-rate and ROUGE-L differences and the head-to-head win rate
    (the judge's preference for the method's generation over the baseline's, ties half).
    """
    wins = [pairwise_outcomes(r["judge_scores"], r["reference_scores"]) for r in (method, baseline)]
    rl = [rouge_per_example(r["generations"], r["references"], "rougeL") for r in (method, baseline)]
    h2h, low, high = bootstrap_ci(pairwise_outcomes(method["judge_scores"], baseline["judge_scores"]), n_boot=n_boot, seed=seed)
    return {
        "win_rate_diff": paired_difference(*wins, n_boot=n_boot, seed=seed),
        "rougeL_diff": paired_difference(*rl, n_boot=n_boot, seed=seed),
        "head_to_head": {"win_rate": 100.0 * h2h, "ci": [100.0 * low, 100.0 * high]},
    }


def _seed_matrix(x, name: str) -> np.ndarray:
    """(S, N) float array from a 1-D (one seed) or 2-D (seeds × prompts) input."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"paired_difference_seeds: {name} must be 1-D (prompts) or 2-D (seeds × prompts), "
                         f"got {arr.ndim}-D")
    arr = np.atleast_2d(arr)
    if arr.size == 0:
        raise ValueError(f"paired_difference_seeds: {name} is empty (shape {arr.shape})")
    return arr


def _draw_counts(u: np.ndarray, k: int) -> np.ndarray:
    """(m, k): per row of the (m, r) uniforms `u`, how often each of k ids, floor(u · k), was drawn."""
    m = u.shape[0]
    idx = np.minimum((u * k).astype(np.int64), k - 1)
    flat = (idx + k * np.arange(m)[:, None]).ravel()
    return np.bincount(flat, minlength=m * k).reshape(m, k).astype(np.float64)


def paired_difference_seeds(a, b, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """mean(a) − mean(b) ×100 over the same N prompts, each side pooled over its own training seeds.

    a: (Sa, N), b: (Sb, N) per-seed, per-prompt outcomes (e.g. wins 1 / ½ / 0 against the
    reference); a 1-D input is one seed, and Sa may differ from Sb. The interval is a
    two-level percentile bootstrap: each of `n_boot` resamples draws N prompt ids with
    replacement once, shared by a and b (the pairing), and independently Sa seed ids for a
    and Sb for b (a one-seed side is thereby not resampled); the statistic is
    mean(a[seeds_a][:, prompts]) − mean(b[seeds_b][:, prompts]).
    Draw order (reproducible by a loop): resample r takes row r of
    rng.random((n_boot, N + Sa + Sb)) — N uniforms for prompts, then Sa, then Sb — and maps
    u to floor(u · k) for k choices (numpy Generator seeded with `seed`).
    Returns {"n": N, "seeds": [Sa, Sb], "diff", "ci": [low, high], "half_width"} (points).
    """
    a, b = _seed_matrix(a, "a"), _seed_matrix(b, "b")
    (sa, n), (sb, nb) = a.shape, b.shape
    if n != nb:
        raise ValueError(f"paired_difference_seeds: a and b must cover the same prompts, got N={n} vs N={nb}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"paired_difference_seeds: level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"paired_difference_seeds: n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    width = n + sa + sb
    chunk = max(1, 2_000_000 // width)  # bounds memory; consecutive draws continue the same stream
    boots = []
    for start in range(0, n_boot, chunk):
        u = rng.random((min(chunk, n_boot - start), width))  # (m, N + Sa + Sb)
        prompts = _draw_counts(u[:, :n], n)  # (m, N) how often each prompt was drawn
        seeds_a, seeds_b = _draw_counts(u[:, n:n + sa], sa), _draw_counts(u[:, n + sa:], sb)  # (m, Sa), (m, Sb)
        mean_a = ((seeds_a @ a) * prompts).sum(axis=1) / (sa * n)  # (m,)
        mean_b = ((seeds_b @ b) * prompts).sum(axis=1) / (sb * n)
        boots.append(mean_a - mean_b)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(np.concatenate(boots), [tail, 100.0 - tail]) * 100.0
    return {"n": int(n), "seeds": [int(sa), int(sb)], "diff": float(100.0 * (a.mean() - b.mean())),
            "ci": [float(low), float(high)], "half_width": float((high - low) / 2.0)}


def detection_limit(half_widths: Sequence[float], *, power: float = 0.8, level: float = 0.95) -> dict:
    """What size of paired difference a bench can resolve, from its CI half-widths (points).

    A paired difference is significant at `level` (its interval excludes 0) when its absolute
    value exceeds the half-width h: "significant_at" is the median h. To be detected with
    probability `power` a true difference must be larger, h · (z_{1−α/2} + z_power) / z_{1−α/2}
    under a normal approximation — ≈1.43 h at 95% and 80% power ("detectable_with_power").
    Returns {"significant_at", "detectable_with_power", "power", "level", "n"}.
    """
    h = np.asarray(half_widths, dtype=np.float64).ravel()
    if h.size == 0:
        raise ValueError("detection_limit: no half-widths given")
    if not (0.0 < power < 1.0 and 0.0 < level < 1.0):
        raise ValueError(f"detection_limit: power and level must lie in (0, 1), got {power}, {level}")
    z_level = NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)
    median = float(np.median(h))
    return {"significant_at": median, "detectable_with_power": median * (z_level + NormalDist().inv_cdf(power)) / z_level,
            "power": power, "level": level, "n": int(h.size)}
