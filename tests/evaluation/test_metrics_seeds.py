"""Seed-aware paired differences and detection limits, checked against hand values and a naive loop."""
import time
from statistics import NormalDist

import numpy as np
import pytest

from prefdistill.evaluation.metrics import detection_limit, paired_difference, paired_difference_seeds


def _naive(a, b, n_boot, seed, level=0.95):
    """The same two-level resampling as a plain loop: per resample N prompt ids, then Sa, then Sb seed ids."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    (sa, n), sb = a.shape, b.shape[0]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        u = rng.random(n + sa + sb)
        prompts = [min(int(x * n), n - 1) for x in u[:n]]
        seeds_a = [min(int(x * sa), sa - 1) for x in u[n:n + sa]]
        seeds_b = [min(int(x * sb), sb - 1) for x in u[n + sa:]]
        stats.append(a[seeds_a][:, prompts].mean() - b[seeds_b][:, prompts].mean())
    tail = (1 - level) / 2 * 100
    return list(np.percentile(stats, [tail, 100 - tail]) * 100)


def _outcomes(rng, shape, p=0.5):
    return rng.choice([0.0, 0.5, 1.0], size=shape, p=[(1 - p) * 0.9, 0.1, p * 0.9])


def test_point_estimate_by_hand():
    a = [[1.0, 0.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.5]]  # pooled mean 5/8
    b = [0.0, 0.0, 1.0, 0.5]  # one seed (1-D), mean 3/8
    out = paired_difference_seeds(a, b, n_boot=200)
    assert out["diff"] == pytest.approx(25.0)
    assert out["n"] == 4 and out["seeds"] == [2, 1]
    assert out["ci"][0] <= out["diff"] <= out["ci"][1]
    assert out["half_width"] == pytest.approx((out["ci"][1] - out["ci"][0]) / 2)
    assert all(isinstance(v, float) for v in (out["diff"], *out["ci"], out["half_width"]))


@pytest.mark.parametrize("sa,sb,n", [(3, 1, 37), (2, 5, 20), (1, 1, 15)])
def test_interval_equals_naive_loop(sa, sb, n):
    rng = np.random.default_rng(7)
    a, b = _outcomes(rng, (sa, n), 0.6), _outcomes(rng, (sb, n), 0.4)
    out = paired_difference_seeds(a, b, n_boot=300, seed=11)
    assert out["ci"] == pytest.approx(_naive(a, b, 300, 11), abs=1e-9)
    assert paired_difference_seeds(a, b, n_boot=300, seed=11) == out  # reproducible
    assert paired_difference_seeds(a, b, n_boot=300, seed=12)["ci"] != out["ci"]


def test_pairing_removes_between_prompt_variance():
    rng = np.random.default_rng(0)
    a = rng.random(300)  # large between-prompt spread
    b = a - 0.02  # same prompts, exactly 2 points worse on every one
    out = paired_difference_seeds(a, b, n_boot=500)
    assert out["diff"] == pytest.approx(2.0)
    assert out["ci"][1] - out["ci"][0] < 1.0
    assert out["ci"][0] == pytest.approx(2.0, abs=1e-6)
    # unpaired: normal-theory width of the difference of two independent means, ~9.5 points here
    unpaired_width = 2 * 1.96 * 100 * np.sqrt(a.var() / 300 + b.var() / 300)
    assert unpaired_width > 5.0 > 5 * (out["ci"][1] - out["ci"][0])


def test_one_seed_each_agrees_with_paired_difference():
    rng = np.random.default_rng(3)
    a, b = _outcomes(rng, 400, 0.6), _outcomes(rng, 400, 0.45)
    ours = paired_difference_seeds(a, b, n_boot=4000, seed=1)
    ref = paired_difference(a.tolist(), b.tolist(), n_boot=4000, seed=2)
    assert ours["diff"] == pytest.approx(ref["diff"])
    assert ours["ci"] == pytest.approx(ref["ci"], abs=1.0)  # different draws, same resampling idea


def test_seed_variance_widens_interval():
    rng = np.random.default_rng(5)
    base, b = rng.random(200), rng.random(200)
    spread = np.vstack([base - 0.1, base, base + 0.1])  # same mean, seeds differ by a constant offset
    same = np.vstack([base, base, base])
    wide = paired_difference_seeds(spread, b, n_boot=2000)
    narrow = paired_difference_seeds(same, b, n_boot=2000)
    assert wide["diff"] == pytest.approx(narrow["diff"])
    assert wide["half_width"] > narrow["half_width"] + 1.0


def test_errors():
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference_seeds([[1.0, 0.0, 1.0]], [[1.0, 0.0]])
    with pytest.raises(ValueError, match="empty"):
        paired_difference_seeds([], [])
    with pytest.raises(ValueError, match="b is empty"):
        paired_difference_seeds([[1.0]], np.zeros((0, 1)))
    with pytest.raises(ValueError, match="3-D"):
        paired_difference_seeds(np.zeros((1, 2, 3)), np.zeros((2, 3)))


def test_fast_enough():
    rng = np.random.default_rng(0)
    a, b = _outcomes(rng, (5, 2000)), _outcomes(rng, (1, 2000))
    start = time.perf_counter()
    paired_difference_seeds(a, b, n_boot=1000)
    assert time.perf_counter() - start < 1.0


def test_detection_limit():
    out = detection_limit([3.0, 1.0, 10.0, 2.0, 4.0])
    assert out["significant_at"] == 3.0 and out["n"] == 5
    assert out["detectable_with_power"] / out["significant_at"] == pytest.approx(1.4294, abs=5e-5)  # (1.95996+0.84162)/1.95996
    z = NormalDist().inv_cdf
    assert out["detectable_with_power"] / 3.0 == pytest.approx((z(0.975) + z(0.8)) / z(0.975))
    assert detection_limit([1.0, 2.0])["significant_at"] == 1.5  # even count: median is the midpoint
    assert detection_limit([2.0], power=0.5)["detectable_with_power"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no half-widths"):
        detection_limit([])
