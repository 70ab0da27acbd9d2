"""Percentile-bootstrap intervals that resample whole groups of prompts (a cluster bootstrap), and seeds.

    mean, low, high = bootstrap_ci(wins, groups=[group_of(e) for e in test])
    d = paired_difference_seeds(wins_a, wins_b, groups=groups)     # {"diff", "ci", "half_width", ...}

Prompts are not independent: ACLSum asks three questions of each paper, and a model that
misreads a paper tends to fail all three. Resampling prompts one by one then treats three
correlated answers as three independent ones and the interval comes out too narrow (by
about sqrt(1 + (m − 1)ρ) for groups of m prompts with within-group correlation ρ). Every
bootstrap here draws G group ids with replacement and takes all the prompts of each drawn
group (Davison & Hinkley 1997, §3.8; Field & Welsh 2007, "Bootstrapping clustered data").
`groups` is one label per prompt (`io.group_of(example)`); None makes each prompt its own
group, which reproduces the per-prompt bootstrap draw for draw.

The resampled statistic is the mean over every prompt of the drawn groups: the sum of their
outcomes over the number of their prompts. With unequal group sizes that is a ratio
estimator: each prompt keeps weight 1, so the point estimate stays the plain mean over
prompts, and a resample that drew a big group moves more than one that drew a small group.
(The mean of group means would weight prompts unequally and change the point estimate.)
With few groups (say under 20) a percentile interval is still somewhat too narrow.
"""
from __future__ import annotations

from statistics import NormalDist
from typing import Hashable, Sequence

import numpy as np


def group_codes(groups: Sequence[Hashable] | None, n: int, where: str) -> tuple[np.ndarray, int]:
    """(codes (N,) int in [0, G), G): each prompt's group as an index, groups numbered by first appearance."""
    if groups is None:
        return np.arange(n), n
    labels = list(groups)
    if len(labels) != n:
        raise ValueError(f"{where}: groups has {len(labels)} labels for {n} prompts; give one group label per prompt, "
                         "in the prompts' order ([io.group_of(e) for e in examples])")
    index: dict = {}
    for i, g in enumerate(labels):
        if g is None:
            raise ValueError(f"{where}: the group label of prompt {i} is None; use io.group_of(example)")
        index.setdefault(g, len(index))
    return np.array([index[g] for g in labels], dtype=np.int64), len(index)


def resampled(n: int, groups: Sequence[Hashable] | None = None, seeds: int = 1) -> str:
    """What a bootstrap over these prompts resamples, for results and reports: "groups (N prompts in G groups) and seeds (S)"."""
    if groups is None:
        what = f"prompts ({n}, each its own group)"
    else:
        what = f"groups ({n} prompts in {group_codes(groups, n, 'resampled')[1]} groups)"
    return what + (f" and seeds ({seeds})" if seeds > 1 else "")


def _group_sums(x: np.ndarray, codes: np.ndarray, g: int) -> np.ndarray:
    """(S, G) per seed, the sum of the outcomes of each group's prompts; x is (S, N)."""
    return np.stack([np.bincount(codes, weights=row, minlength=g) for row in x])


def bootstrap_ci(
    values: Sequence[float] | Sequence[Sequence[float]], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
    groups: Sequence[Hashable] | None = None,
) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and its percentile-bootstrap interval.

    Resamples whole groups of examples with replacement `n_boot` times (G group ids per
    resample; `groups` None: each example its own group) and takes the (1-level)/2 and
    (1+level)/2 percentiles of the resampled means (Efron & Tibshirani 1993, ch. 13), each the
    mean over all examples of the drawn groups (see the module docstring). numpy Generator
    seeded with `seed`, so the interval is reproducible.
    A 2-D input (S training seeds × N examples) is resampled at both levels, seeds and
    groups independently, so the interval covers seed-to-seed variation too.
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
    codes, g = group_codes(groups, x.shape[-1], "bootstrap_ci")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    sizes = np.bincount(codes, minlength=g).astype(np.float64)  # (G,) prompts per group
    if x.ndim == 1:
        sums = _group_sums(x[None], codes, g)[0]  # (G,)
        idx = rng.integers(0, g, size=(n_boot, g))  # (n_boot, G) resampled group ids
        boot_means = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)  # (n_boot,)
    else:
        s = x.shape[0]
        sums = _group_sums(x, codes, g)  # (S, G)
        seeds = rng.integers(0, s, size=(n_boot, s, 1))
        idx = rng.integers(0, g, size=(n_boot, 1, g))
        boot_means = sums[seeds, idx].sum(axis=(1, 2)) / (s * sizes[idx[:, 0]].sum(axis=1))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(boot_means, [tail, 100.0 - tail])
    return mean, float(low), float(high)


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


def paired_difference_seeds(a, b, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                            groups: Sequence[Hashable] | None = None) -> dict:
    """mean(a) − mean(b) ×100 over the same N prompts, each side pooled over its own training seeds.

    a: (Sa, N), b: (Sb, N) per-seed, per-prompt outcomes (e.g. wins 1 / ½ / 0 against the
    reference); a 1-D input is one seed, and Sa may differ from Sb. groups: N labels, one per
    prompt (None: each prompt its own group). The interval is a two-level percentile
    bootstrap: each of `n_boot` resamples draws G group ids with replacement once, shared by a
    and b (the pairing), and independently Sa seed ids for a and Sb for b (a one-seed side is
    thereby not resampled); the statistic is the mean over the drawn seeds and every prompt of
    the drawn groups of a, minus the same of b (a ratio estimator, see the module docstring).
    Draw order (reproducible by a loop): resample r takes row r of
    rng.random((n_boot, G + Sa + Sb)) — G uniforms for groups, then Sa, then Sb — and maps
    u to floor(u · k) for k choices (numpy Generator seeded with `seed`).
    Returns {"n": N, "groups": G, "seeds": [Sa, Sb], "diff", "ci": [low, high], "half_width"} (points).
    """
    a, b = _seed_matrix(a, "a"), _seed_matrix(b, "b")
    (sa, n), (sb, nb) = a.shape, b.shape
    if n != nb:
        raise ValueError(f"paired_difference_seeds: a and b must cover the same prompts, got N={n} vs N={nb}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"paired_difference_seeds: level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"paired_difference_seeds: n_boot must be >= 1, got {n_boot}")
    codes, g = group_codes(groups, n, "paired_difference_seeds")
    sizes = np.bincount(codes, minlength=g).astype(np.float64)  # (G,)
    sums_a, sums_b = _group_sums(a, codes, g), _group_sums(b, codes, g)  # (Sa, G), (Sb, G)
    rng = np.random.default_rng(seed)
    width = g + sa + sb
    chunk = max(1, 2_000_000 // width)  # bounds memory; consecutive draws continue the same stream
    boots = []
    for start in range(0, n_boot, chunk):
        u = rng.random((min(chunk, n_boot - start), width))  # (m, G + Sa + Sb)
        drawn = _draw_counts(u[:, :g], g)  # (m, G) how often each group was drawn
        seeds_a, seeds_b = _draw_counts(u[:, g:g + sa], sa), _draw_counts(u[:, g + sa:], sb)  # (m, Sa), (m, Sb)
        prompts = drawn @ sizes  # (m,) prompts in the resample
        mean_a = ((seeds_a @ sums_a) * drawn).sum(axis=1) / (sa * prompts)  # (m,)
        mean_b = ((seeds_b @ sums_b) * drawn).sum(axis=1) / (sb * prompts)
        boots.append(mean_a - mean_b)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(np.concatenate(boots), [tail, 100.0 - tail]) * 100.0
    return {"n": int(n), "groups": int(g), "seeds": [int(sa), int(sb)], "diff": float(100.0 * (a.mean() - b.mean())),
            "ci": [float(low), float(high)], "half_width": float((high - low) / 2.0)}


def detection_limit(half_widths: Sequence[float], *, power: float = 0.8, level: float = 0.95) -> dict:
    """What size of paired difference a bench can resolve, from its CI half-widths (points).

    A paired difference is significant at `level` (its interval excludes 0) when its absolute
    value exceeds the half-width h: "significant_at" is the median h. To be detected with
    probability `power` a true difference must be larger, h · (z_{1−α/2} + z_power) / z_{1−α/2}
    under a normal approximation — ≈1.43 h at 95% and 80% power ("detectable_with_power").
    The half-widths come from group-resampled intervals, so the limit is in independent groups.
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


def head_to_head_seeds(outcomes, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                       groups: Sequence[Hashable] | None = None) -> dict:
    """The head-to-head rate ×100 of row a over row b on the same N prompts, pooled over both rows' seeds.

    outcomes: (Sa, Sb, N), outcome[i, j, n] of a's seed-i output against b's seed-j output on
    prompt n (1 / ½ / 0, or a probability). The rate is the mean over every seed pair and
    prompt. The interval is the two-level bootstrap of `paired_difference_seeds`, with the same
    draw order (row r of rng.random((n_boot, G + Sa + Sb))): G group ids shared by both sides,
    Sa seed ids for a and Sb for b; a resample's rate is Σ_ij c_a[i] c_b[j] Σ_g d_g W[i, j, g] /
    (Sa · Sb · prompts drawn), with W the group sums, c the seed counts and d the group counts.
    Returns {"n", "groups", "seeds": [Sa, Sb], "rate", "ci": [low, high], "half_width"} (points);
    the rows differ when the interval excludes 50.
    """
    w = np.asarray(outcomes, dtype=np.float64)
    if w.ndim != 3 or w.size == 0:
        raise ValueError(f"head_to_head_seeds: outcomes must be a non-empty (Sa, Sb, N) array, got shape {w.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"head_to_head_seeds: level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"head_to_head_seeds: n_boot must be >= 1, got {n_boot}")
    sa, sb, n = w.shape
    codes, g = group_codes(groups, n, "head_to_head_seeds")
    sizes = np.bincount(codes, minlength=g).astype(np.float64)  # (G,)
    sums = _group_sums(w.reshape(sa * sb, n), codes, g).reshape(sa, sb, g)  # (Sa, Sb, G)
    rng = np.random.default_rng(seed)
    width = g + sa + sb
    chunk = max(1, 2_000_000 // (width + sa * sb))
    boots = []
    for start in range(0, n_boot, chunk):
        u = rng.random((min(chunk, n_boot - start), width))  # (m, G + Sa + Sb)
        drawn = _draw_counts(u[:, :g], g)  # (m, G)
        seeds_a, seeds_b = _draw_counts(u[:, g:g + sa], sa), _draw_counts(u[:, g + sa:], sb)  # (m, Sa), (m, Sb)
        per_pair = np.einsum("mg,ijg->mij", drawn, sums)  # (m, Sa, Sb) outcomes summed over the drawn prompts
        total = np.einsum("mi,mj,mij->m", seeds_a, seeds_b, per_pair)  # (m,)
        boots.append(total / (sa * sb * (drawn @ sizes)))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(np.concatenate(boots), [tail, 100.0 - tail]) * 100.0
    return {"n": int(n), "groups": int(g), "seeds": [int(sa), int(sb)], "rate": float(100.0 * w.mean()),
            "ci": [float(low), float(high)], "half_width": float((high - low) / 2.0)}
