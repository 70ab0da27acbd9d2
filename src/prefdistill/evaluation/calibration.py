"""Calibration of a model's likelihood against the judge (PLaD's claim): pure numpy over fixed candidate sets.

    acc = pairwise_accuracy(model_scores, judge_scores)              # (K,), (K,) -> in [0, 1], or nan
    tau = kendall_tau(model_scores, judge_scores)                    # Kendall's τ-b in [-1, 1], or nan
    win = rerank_outcome(model_scores, judge_scores, reference)      # 1 / ½ / 0 (averaged over tied tops)
    values = per_prompt(model, judge, references)                    # {metric: (N,)} over N prompts' candidate sets
    per_prompt(model, judge, references, sources=sources)            # + accuracy within and across the candidates' sources
    row = calibration_summary({metric: (S, N)}, groups=groups)       # each metric's value and 95% interval
    d = calibration_difference(mine, sft, groups=groups)             # paired, each side's seeds resampled

PLaD (Zhang et al. 2024, arXiv 2406.02886) trains the student so that its length-normalised
log-likelihood ℓ(y) = log q(y|x) / |y| orders the teacher's sample above its own, a sequence
likelihood calibration after SLiC (Zhao et al. 2023, arXiv 2210.00045). Whether that worked is a
property of ℓ: on a fixed set of K candidates per prompt, graded once by the evaluation judge,
does ℓ order them as the judge does? Three numbers per prompt answer it:

- pairwise ranking accuracy: of the candidate pairs the judge tells apart, the share ℓ orders
  the same way (a pair ℓ ties counts ½, as a tie does in a win rate);
- Kendall's τ-b (Kendall 1945): (C − D) / sqrt((P − T_judge)(P − T_model)) over the P pairs.
  τ-b rather than τ-a because judges tie (a word-count judge often does): τ-a keeps tied pairs in
  its denominator, so it cannot reach ±1 even when ℓ orders every untied pair right, while τ-b
  reaches ±1 whenever the two orders agree up to ties (scipy.stats.kendalltau's default). Without
  ties τ-b = τ-a = 2·accuracy − 1;
- re-rank outcome: the judge's verdict (win 1, tie ½, loss 0 against the reference) on the candidate
  ℓ ranks first, averaged over the candidates that tie for first.

Undefined cases return nan and are left out of the means: accuracy and τ of a prompt whose
candidates the judge cannot tell apart (fewer than two, or all tied), the re-rank of a prompt
without candidates. Those depend on the candidates and the judge only, so every model leaves out
the same prompts and comparisons stay paired. A model that ties every candidate orders nothing:
τ 0 (and accuracy ½), not nan. Scores within `tie_tol` of each other tie (as in
`metrics.pairwise_outcomes`).
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from prefdistill.evaluation.bootstrap import bootstrap_ci, paired_difference_seeds

METRICS = ("pairwise_accuracy", "kendall_tau", "rerank_win_rate")
SOURCE_METRICS = ("within_source_accuracy", "cross_source_accuracy")  # per_prompt(..., sources=...)
SCALE = {"pairwise_accuracy": 100.0, "kendall_tau": 1.0, "rerank_win_rate": 100.0,  # reported ×100 (points), τ as it is
         "within_source_accuracy": 100.0, "cross_source_accuracy": 100.0}
TIE_TOL = 1e-6  # as metrics.pairwise_outcomes


def _scores(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: need one score per candidate (1-D), got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: a score is NaN")
    return arr


def _pair_signs(x: np.ndarray, tol: float) -> np.ndarray:
    """(P,) sign of x_i − x_j over the P = K(K−1)/2 pairs i < j: +1, −1, or 0 within `tol`."""
    i, j = np.triu_indices(x.shape[0], k=1)
    d = x[i] - x[j]  # (P,)
    return np.where(np.abs(d) <= tol, 0.0, np.sign(d))


def _signs(model_scores, judge_scores, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(model signs (P,), judge signs (P,)) of the pairs of one prompt's K candidates."""
    m, j = _scores(model_scores, "model_scores"), _scores(judge_scores, "judge_scores")
    if m.shape != j.shape:
        raise ValueError(f"model_scores and judge_scores: {m.shape[0]} vs {j.shape[0]} candidates")
    return _pair_signs(m, tol), _pair_signs(j, tol)


def pairwise_accuracy(model_scores: Sequence[float], judge_scores: Sequence[float], tie_tol: float = TIE_TOL,
                      pairs: np.ndarray | None = None) -> float:
    """Share of candidate pairs with distinct judge scores that the model orders alike (model ties ½); nan without one.

    model_scores, judge_scores: (K,) one prompt's candidates, by the model (ℓ) and by the judge; pairs:
    (K(K−1)/2,) bool over the pairs i < j (`np.triu_indices` order), the ones to count (None: all).
    """
    sm, sj = _signs(model_scores, judge_scores, tie_tol)
    told = (sj != 0) & (True if pairs is None else np.asarray(pairs, dtype=bool))  # (P,) the pairs the judge orders
    if not told.any():
        return float("nan")
    agree = np.where(sm[told] == 0, 0.5, (sm[told] == sj[told]).astype(np.float64))
    return float(agree.mean())


def kendall_tau(model_scores: Sequence[float], judge_scores: Sequence[float], tie_tol: float = TIE_TOL) -> float:
    """Kendall's τ-b between the model's and the judge's scores of one prompt's K candidates ((K,) each).

    nan when the judge orders no pair (K < 2 or all tied); 0 when the model orders none.
    """
    sm, sj = _signs(model_scores, judge_scores, tie_tol)
    pairs = sm.shape[0]
    judge_ties, model_ties = int((sj == 0).sum()), int((sm == 0).sum())
    if pairs == judge_ties:
        return float("nan")
    if pairs == model_ties:
        return 0.0
    concordant_minus_discordant = float((sm * sj).sum())  # +1 concordant, −1 discordant, 0 a tie on either side
    return concordant_minus_discordant / float(np.sqrt((pairs - judge_ties) * (pairs - model_ties)))


def rerank_outcome(model_scores: Sequence[float], judge_scores: Sequence[float], reference_score: float,
                   tie_tol: float = TIE_TOL) -> float:
    """The judge's verdict against the reference (1 win, ½ tie, 0 loss) on the candidate the model ranks first.

    model_scores, judge_scores: (K,); candidates within `tie_tol` of the model's best share first place and their
    verdicts are averaged (a random pick among them, in expectation). nan for K = 0.
    """
    m, j = _scores(model_scores, "model_scores"), _scores(judge_scores, "judge_scores")
    if m.shape != j.shape:
        raise ValueError(f"model_scores and judge_scores: {m.shape[0]} vs {j.shape[0]} candidates")
    if m.shape[0] == 0:
        return float("nan")
    top = m >= m.max() - tie_tol  # (K,) the candidates tied for first
    d = j[top] - float(reference_score)
    return float(np.where(np.abs(d) <= tie_tol, 0.5, (d > 0).astype(np.float64)).mean())


def same_source_pairs(sources: Sequence[str]) -> np.ndarray:
    """(K(K−1)/2,) bool over one prompt's candidate pairs i < j: True where both come from the same model."""
    i, j = np.triu_indices(len(sources), k=1)
    src = np.asarray(list(sources), dtype=object)
    return src[i] == src[j]


def per_prompt(model: Sequence[Sequence[float]], judge: Sequence[Sequence[float]], references: Sequence[float],
               tie_tol: float = TIE_TOL, sources: Sequence[Sequence[str]] | None = None) -> dict[str, np.ndarray]:
    """{metric: (N,)} over N prompts: model[i], judge[i] are prompt i's K_i candidates' scores (K_i may differ),
    references[i] the judge's score of its reference; nan where a metric is undefined (see the module docstring).

    sources (N lists of K_i names of the model each candidate came from) adds the pairwise accuracy split in
    two (SOURCE_METRICS): over the pairs of one source's samples, and over the pairs across sources. A model's
    likelihood favours its own samples, so the second measures mostly whose sample it is (PLaD trains exactly
    that order, teacher ≻ student); the first is whether ℓ ranks like the judge among comparable texts.
    """
    if not len(model) == len(judge) == len(references) == (len(model) if sources is None else len(sources)):
        raise ValueError(f"per_prompt: {len(model)} prompts of model scores, {len(judge)} of judge scores, "
                         f"{len(references)} references" + ("" if sources is None else f", {len(sources)} of sources"))
    rows = [(pairwise_accuracy(m, j, tie_tol), kendall_tau(m, j, tie_tol), rerank_outcome(m, j, r, tie_tol))
            for m, j, r in zip(model, judge, references)]
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(METRICS))  # (N, 3)
    out = {name: table[:, k] for k, name in enumerate(METRICS)}
    if sources is not None:
        same = [same_source_pairs(s) for s in sources]
        out["within_source_accuracy"] = np.array([pairwise_accuracy(m, j, tie_tol, pairs=k) for m, j, k in zip(model, judge, same)])
        out["cross_source_accuracy"] = np.array([pairwise_accuracy(m, j, tie_tol, pairs=~k) for m, j, k in zip(model, judge, same)])
    return out


def _defined(*arrays: np.ndarray) -> np.ndarray:
    """(N,) the prompts every seed of every array defines."""
    return np.logical_and.reduce([np.isfinite(a).all(axis=0) for a in arrays])


def _subset(groups: Sequence[Hashable] | None, keep: np.ndarray) -> list | None:
    return None if groups is None else [g for g, k in zip(groups, keep) if k]


def _seeds(x, name: str) -> np.ndarray:
    arr = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if arr.ndim != 2:
        raise ValueError(f"{name}: need (seeds, prompts) values, got shape {arr.shape}")
    return arr


def calibration_summary(values: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0,
                        groups: Sequence[Hashable] | None = None) -> dict[str, dict]:
    """Each metric's mean over the prompts it defines and every seed, with a two-level bootstrap 95% interval.

    values: {metric: (S, N)} per seed and prompt (`per_prompt` stacked over seeds; nan: undefined);
    groups: N labels, one per prompt (`io.group_of`; None: each prompt its own). Returns, per metric,
    {"value", "ci": [low, high], "n": prompts used, "groups": their groups}, ×SCALE (points; τ as it is),
    or value and ci None when no prompt defines it.
    """
    out = {}
    for name, x in values.items():
        x = _seeds(x, name)
        keep = _defined(x)
        scale, used = SCALE.get(name, 1.0), _subset(groups, keep)
        n_groups = int(keep.sum()) if used is None else len(set(used))
        if not keep.any():
            out[name] = {"value": None, "ci": None, "n": 0, "groups": 0}
            continue
        mean, low, high = bootstrap_ci(x[:, keep], n_boot=n_boot, seed=seed, groups=used)
        out[name] = {"value": scale * mean, "ci": [scale * low, scale * high], "n": int(keep.sum()), "groups": n_groups}
    return out


def calibration_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0,
                           groups: Sequence[Hashable] | None = None) -> dict[str, dict | None]:
    """Per metric, mean(a) − mean(b) on the prompts both define: `paired_difference_seeds` (groups drawn once for both
    sides, each side's seeds on their own), ×SCALE. a: {metric: (Sa, N)}, b: {metric: (Sb, N)}; None where no
    prompt is defined by both."""
    out: dict[str, dict | None] = {}
    for name in a:
        x, y = _seeds(a[name], name), _seeds(b[name], name)
        keep = _defined(x, y)
        if not keep.any():
            out[name] = None
            continue
        d = paired_difference_seeds(x[:, keep], y[:, keep], n_boot=n_boot, seed=seed, groups=_subset(groups, keep))
        factor = SCALE.get(name, 1.0) / 100.0  # paired_difference_seeds reports ×100
        out[name] = {**d, "diff": d["diff"] * factor, "ci": [c * factor for c in d["ci"]], "half_width": d["half_width"] * factor}
    return out
