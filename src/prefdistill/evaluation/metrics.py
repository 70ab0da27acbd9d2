"""Evaluation metrics for distilled students: pure functions, no model calls.

    from prefdistill.evaluation.metrics import summarize_generations
    row = summarize_generations(gens, refs, judge_scores, ref_scores, opponent_scores=teacher_scores)

What the PLaD paper (Zhang et al. 2024, arXiv 2406.02886, Table 1 and Figure 3) reports:
win rate of a model's generations against the dataset reference as judged by a reward
model, the teacher-student win rate ("T-S WR"), ROUGE-1/2/L, mean word count, and win
rate per generation-length bucket. Win rates here count ties as half a win and carry a
percentile-bootstrap 95% interval, so a small test set says so. Every interval takes
`groups` (one label per prompt, `io.group_of(example)`) and resamples whole groups: prompts
about one paper are correlated (see `prefdistill.evaluation.bootstrap`, which holds the resampling).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Hashable, Sequence

import numpy as np

from prefdistill.evaluation.bootstrap import bootstrap_ci, detection_limit, group_codes, paired_difference_seeds, resampled

__all__ = ["ROUGE_KEYS", "bootstrap_ci", "compare_rows", "detection_limit", "length_buckets", "paired_difference",
           "paired_difference_seeds", "pairwise_outcomes", "resampled", "rouge", "rouge_per_example", "summarize_generations",
           "summarize_seeds", "win_rate", "win_rate_with_ci", "word_count", "wins_per_seed", "STOP_WORDS", "content_words",
           "repeated_ngram_share"]

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def word_count(text: str) -> int:
    """Number of whitespace-separated words (the paper's "generation length")."""
    return len(text.split())


# English function words (articles, pronouns, auxiliaries, prepositions, conjunctions) and the instruction words of
# summarisation prompts: what a "content word" is not. Written out here, so nothing downloads a list.
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or other
our ours ourselves out over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which while who whom why will
with would you your yours yourself yourselves
one two new using use used based show shows paper work study article text document summarize summarise summary
describe explain write give briefly following main
""".split())
_WORD = re.compile(r"[a-z][a-z0-9'-]*")


def content_words(text: str) -> list[str]:
    """The text's lower-cased words that are not stop words (`STOP_WORDS`), in order, with repeats; 2 letters or more."""
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOP_WORDS]


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the text's word n-grams that repeat an earlier one: 0 for no repeat, near 1 for a loop.

    "the cat of the cat of the cat" (n=3): 6 trigrams, 3 distinct -> 1/2. Texts of fewer than n words: 0.
    """
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


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
                     seed: int = 0, groups: Sequence[Hashable] | None = None) -> tuple[float, list[float]]:
    """(win rate ×100, [low, high]) against the references, pooled over seeds: the `win_rate` of `summarize_seeds`
    without the rest of its row (ROUGE, lengths), for grading with a second judge. groups: one label per prompt."""
    return _rate_with_ci(wins_per_seed(judge_scores, reference_scores), n_boot, seed, groups)


def _rate_with_ci(outcomes, n_boot: int, seed: int, groups) -> tuple[float, list[float]]:
    mean, low, high = bootstrap_ci(outcomes, n_boot=n_boot, seed=seed, groups=groups)
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
    groups: Sequence[Hashable] | None = None,
) -> dict:
    """One row of the Table-1 analogue for one model's generations on the test set.

    judge_scores[i] / reference_scores[i]: the judge's score of generation i / of its
    dataset reference; opponent_scores[i]: the judge's score of the opponent's (the
    teacher's) generation on the same prompt; groups[i]: prompt i's group (`io.group_of`), the
    unit every interval resamples (None: each prompt its own). Returns plain floats (JSON-ready):
      n, groups (G), resampled (what the intervals resampled, in words), word_count (mean words), rouge1, rouge2, rougeL (F1 ×100),
      rougeL_ci ([low, high] ×100, bootstrap over per-example ROUGE-L),
      win_rate (×100, vs reference, ties half), win_rate_ci ([low, high] ×100),
      ts_win_rate / ts_win_rate_ci (vs the opponent; None without opponent_scores),
      length_buckets (win rate vs reference by this row's generation length).
    """
    return summarize_seeds([generations], references, [judge_scores], reference_scores, opponent_scores=opponent_scores,
                           n_boot=n_boot, seed=seed, length_edges=length_edges, groups=groups)


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
    groups: Sequence[Hashable] | None = None,
) -> dict:
    """`summarize_generations` over S training seeds of one method: generations[s][i].

    Means pool seeds and examples; the intervals resample seeds and whole groups (see `bootstrap_ci`);
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
    _, n_groups = group_codes(groups, n, "summarize_seeds")
    lengths = [word_count(g) for gens in generations for g in gens]
    wins = wins_per_seed(judge_scores, reference_scores)  # (S, N)
    per_seed_rouge = [rouge(gens, references) for gens in generations]
    row: dict = {"n": n, "groups": n_groups, "resampled": resampled(n, groups, s), "seeds": s,
                 "word_count": float(np.mean(lengths))}
    row.update({k: float(np.mean([r[k] for r in per_seed_rouge])) for k in ROUGE_KEYS})
    rl = [rouge_per_example(gens, references, "rougeL") for gens in generations]
    _, rl_low, rl_high = bootstrap_ci(rl, n_boot=n_boot, seed=seed, groups=groups)
    row["rougeL_ci"] = [100.0 * rl_low, 100.0 * rl_high]
    row["win_rate"], row["win_rate_ci"] = _rate_with_ci(wins, n_boot, seed, groups)
    row["win_rate_seed_sd"] = float(100.0 * wins.mean(axis=1).std(ddof=1)) if s > 1 else 0.0
    row["ts_win_rate"], row["ts_win_rate_ci"] = None, None
    if opponent_scores is not None:
        ts = [pairwise_outcomes(sc, opponent_scores) for sc in judge_scores]
        row["ts_win_rate"], row["ts_win_rate_ci"] = _rate_with_ci(ts, n_boot, seed, groups)
    row["length_buckets"] = length_buckets(lengths, wins.reshape(-1).tolist(), length_edges)
    return row


def paired_difference(a: Sequence[float], b: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                      groups: Sequence[Hashable] | None = None) -> dict:
    """Mean of a[i] − b[i] over the same examples, ×100, with a bootstrap 95% interval over whole groups.

    Pairing removes the between-prompt variance that makes two rows' separate intervals
    overlap: the right test when two models answered the same test prompts. groups: one label
    per prompt (None: each prompt its own group). Returns {"n", "groups": G, "diff", "ci"}.
    """
    _check_pairs(a, b, "paired_difference(a, b)")
    _, n_groups = group_codes(groups, len(a), "paired_difference")
    mean, low, high = bootstrap_ci([x - y for x, y in zip(a, b)], n_boot=n_boot, seed=seed, groups=groups)
    return {"n": len(a), "groups": n_groups, "diff": 100.0 * mean, "ci": [100.0 * low, 100.0 * high]}


def compare_rows(method: dict, baseline: dict, *, n_boot: int = 1000, seed: int = 0,
                 groups: Sequence[Hashable] | None = None) -> dict:
    """Paired comparison of two rows on the same prompts, every interval over whole groups of them.

    Each argument: {"generations", "references", "judge_scores", "reference_scores"}.
    Returns the paired win-rate and ROUGE-L differences and the head-to-head win rate
    (the judge's preference for the method's generation over the baseline's, ties half).
    """
    opts = dict(n_boot=n_boot, seed=seed, groups=groups)
    wins = [pairwise_outcomes(r["judge_scores"], r["reference_scores"]) for r in (method, baseline)]
    rl = [rouge_per_example(r["generations"], r["references"], "rougeL") for r in (method, baseline)]
    h2h, low, high = bootstrap_ci(pairwise_outcomes(method["judge_scores"], baseline["judge_scores"]), **opts)
    return {
        "win_rate_diff": paired_difference(*wins, **opts),
        "rougeL_diff": paired_difference(*rl, **opts),
        "head_to_head": {"win_rate": 100.0 * h2h, "ci": [100.0 * low, 100.0 * high],
                         "groups": group_codes(groups, len(rl[0]), "compare_rows")[1]},
    }
