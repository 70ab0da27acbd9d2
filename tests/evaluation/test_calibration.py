"""The calibration measures: hand-worked examples, limiting cases (agreement, reversal, ties, K = 2), naive loops and
scipy's τ-b as references, and the row numbers' intervals."""
import itertools
import math

import numpy as np
import pytest

from prefdistill.evaluation.bootstrap import bootstrap_ci, paired_difference_seeds
from prefdistill.evaluation.calibration import (calibration_difference, calibration_summary, kendall_tau, pairwise_accuracy,
                                                per_prompt, rerank_outcome)


def naive_accuracy(m, j):
    agree = []
    for a, b in itertools.combinations(range(len(m)), 2):
        if j[a] == j[b]:
            continue
        agree.append(0.5 if m[a] == m[b] else float((m[a] > m[b]) == (j[a] > j[b])))
    return sum(agree) / len(agree) if agree else math.nan


def naive_tau_b(m, j):
    c = d = tm = tj = n = 0
    for a, b in itertools.combinations(range(len(m)), 2):
        n += 1
        tm += m[a] == m[b]
        tj += j[a] == j[b]
        if m[a] != m[b] and j[a] != j[b]:
            if (m[a] > m[b]) == (j[a] > j[b]):
                c += 1
            else:
                d += 1
    if n == tj:
        return math.nan
    if n == tm:
        return 0.0
    return (c - d) / math.sqrt((n - tj) * (n - tm))


def naive_rerank(m, j, ref):
    best = max(m)
    tops = [k for k in range(len(m)) if m[k] == best]
    return sum(1.0 if j[k] > ref else 0.5 if j[k] == ref else 0.0 for k in tops) / len(tops)


def test_agreement_and_reversal_are_the_limits():
    judge = [0.1, 0.9, 0.5, -0.3]
    same = [-1.0, -0.2, -0.6, -2.0]  # the judge's order, on another scale
    assert pairwise_accuracy(same, judge) == 1.0 and kendall_tau(same, judge) == pytest.approx(1.0)
    reversed_ = [-x for x in same]
    assert pairwise_accuracy(reversed_, judge) == 0.0 and kendall_tau(reversed_, judge) == pytest.approx(-1.0)
    # Re-ranking: the model's first is the judge's best (0.9) or its worst (−0.3), against a reference scored 0.5.
    assert rerank_outcome(same, judge, 0.5) == 1.0 and rerank_outcome(reversed_, judge, 0.5) == 0.0


def test_two_candidates():
    assert pairwise_accuracy([-1.0, -2.0], [0.3, 0.1]) == 1.0 and kendall_tau([-1.0, -2.0], [0.3, 0.1]) == 1.0
    assert pairwise_accuracy([-2.0, -1.0], [0.3, 0.1]) == 0.0 and kendall_tau([-2.0, -1.0], [0.3, 0.1]) == -1.0
    assert pairwise_accuracy([-1.0, -1.0], [0.3, 0.1]) == 0.5 and kendall_tau([-1.0, -1.0], [0.3, 0.1]) == 0.0
    assert math.isnan(pairwise_accuracy([-1.0, -2.0], [0.3, 0.3])) and math.isnan(kendall_tau([-1.0, -2.0], [0.3, 0.3]))
    # Tied on both sides: ℓ picks either, half a win each against a reference between them.
    assert rerank_outcome([-1.0, -1.0], [0.3, 0.1], 0.2) == 0.5


def test_hand_worked_example_with_ties():
    """K = 4: judge (3, 1, 2, 2), model (0.4, 0.1, 0.4, 0.2). Pairs (i, j): judge sign, model sign
    (0,1) + +  (0,2) + 0  (0,3) + +  (1,2) − −  (1,3) − −  (2,3) 0 +.
    The judge orders 5 pairs: 4 concordant, 1 tied by the model -> accuracy (4 + ½) / 5 = 0.9.
    τ-b: (C − D) / sqrt((6 − 1)(6 − 1)) = 4 / 5 = 0.8 (one judge tie, one model tie); τ-a would be 4 / 6."""
    judge, model = [3.0, 1.0, 2.0, 2.0], [0.4, 0.1, 0.4, 0.2]
    assert pairwise_accuracy(model, judge) == pytest.approx(0.9)
    assert kendall_tau(model, judge) == pytest.approx(0.8)
    # The model's top is candidates 0 and 2 (0.4 each): judged 3 and 2 against a reference of 2 -> (1 + ½) / 2.
    assert rerank_outcome(model, judge, 2.0) == pytest.approx(0.75)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert kendall_tau(model, judge) == pytest.approx(scipy_stats.kendalltau(model, judge).statistic)


def test_without_ties_tau_is_twice_the_accuracy_less_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(2, 9))
        m, j = rng.normal(size=k), rng.normal(size=k)
        assert kendall_tau(m, j) == pytest.approx(2 * pairwise_accuracy(m, j) - 1)


def test_the_measures_match_naive_loops_on_random_tied_scores():
    rng = np.random.default_rng(1)
    scipy_stats = pytest.importorskip("scipy.stats")
    for _ in range(200):
        k = int(rng.integers(1, 8))
        m, j = rng.integers(0, 3, size=k).astype(float), rng.integers(0, 3, size=k).astype(float)  # many ties
        ref = float(rng.integers(0, 3))
        for got, want in ((pairwise_accuracy(m, j), naive_accuracy(m, j)), (kendall_tau(m, j), naive_tau_b(m, j)),
                          (rerank_outcome(m, j, ref), naive_rerank(m, j, ref))):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want), (m, j, ref)
        defined = k >= 2 and len(set(m)) > 1 and len(set(j)) > 1  # where scipy's τ-b is defined at all
        if defined:
            assert kendall_tau(m, j) == pytest.approx(scipy_stats.kendalltau(m, j).statistic)


def test_undefined_cases_and_bad_input():
    assert math.isnan(pairwise_accuracy([1.0], [2.0])) and math.isnan(kendall_tau([1.0], [2.0]))
    assert rerank_outcome([1.0], [2.0], 2.0) == 0.5 and math.isnan(rerank_outcome([], [], 0.0))
    assert math.isnan(kendall_tau([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    assert kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0 and pairwise_accuracy([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.5
    # Scores within the tolerance tie.
    assert pairwise_accuracy([1.0, 1.0 + 1e-9], [1.0, 2.0]) == 0.5
    with pytest.raises(ValueError, match="3 vs 2"):
        pairwise_accuracy([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        kendall_tau([1.0, float("nan")], [1.0, 2.0])
    assert rerank_outcome([float("-inf"), -1.0], [5.0, 0.0], 1.0) == 0.0  # -inf ranks last


def test_per_prompt_takes_candidate_sets_of_different_sizes():
    model = [[-1.0, -2.0, -3.0], [-1.0, -1.0], [], [-0.5, -0.1]]
    judge = [[3.0, 2.0, 1.0], [0.0, 1.0], [], [0.2, 0.2]]
    refs = [2.5, 0.5, 0.0, 0.2]
    v = per_prompt(model, judge, refs)
    assert set(v) == {"pairwise_accuracy", "kendall_tau", "rerank_win_rate"} and all(a.shape == (4,) for a in v.values())
    np.testing.assert_allclose(v["pairwise_accuracy"], [1.0, 0.5, np.nan, np.nan])
    np.testing.assert_allclose(v["kendall_tau"], [1.0, 0.0, np.nan, np.nan])
    np.testing.assert_allclose(v["rerank_win_rate"], [1.0, 0.5, np.nan, 0.5])
    with pytest.raises(ValueError, match="3 references"):
        per_prompt(model, judge, refs[:3])


def test_the_summary_is_the_group_bootstrap_of_the_defined_prompts():
    rng = np.random.default_rng(2)
    acc = rng.random((2, 10))
    acc[:, 3] = np.nan  # a prompt the judge cannot order: out of every seed's mean
    win = rng.integers(0, 3, size=(2, 10)) / 2
    groups = [i // 2 for i in range(10)]
    row = calibration_summary({"pairwise_accuracy": acc, "rerank_win_rate": win}, n_boot=200, seed=3, groups=groups)
    keep = [i for i in range(10) if i != 3]
    mean, low, high = bootstrap_ci(acc[:, keep], n_boot=200, seed=3, groups=[groups[i] for i in keep])
    assert row["pairwise_accuracy"] == {"value": pytest.approx(100 * mean), "ci": [pytest.approx(100 * low), pytest.approx(100 * high)],
                                        "n": 9, "groups": 5}
    assert row["rerank_win_rate"]["n"] == 10 and row["rerank_win_rate"]["value"] == pytest.approx(100 * win.mean())
    tau = calibration_summary({"kendall_tau": np.full((1, 4), 0.5)}, n_boot=50)["kendall_tau"]
    assert tau == {"value": 0.5, "ci": [0.5, 0.5], "n": 4, "groups": 4}  # τ is not scaled
    empty = calibration_summary({"kendall_tau": np.full((1, 3), np.nan)}, n_boot=50)["kendall_tau"]
    assert empty == {"value": None, "ci": None, "n": 0, "groups": 0}


def test_paired_differences_keep_the_prompts_both_sides_define_and_scale_tau():
    rng = np.random.default_rng(4)
    a = {"kendall_tau": rng.uniform(-1, 1, size=(3, 8)), "pairwise_accuracy": rng.random((3, 8))}
    b = {"kendall_tau": rng.uniform(-1, 1, size=(1, 8)), "pairwise_accuracy": rng.random((1, 8))}
    b["kendall_tau"][0, 0] = np.nan
    groups = list("aabbccdd")
    d = calibration_difference(a, b, n_boot=300, seed=5, groups=groups)
    ref = paired_difference_seeds(a["kendall_tau"][:, 1:], b["kendall_tau"][:, 1:], n_boot=300, seed=5, groups=groups[1:])
    assert d["kendall_tau"]["diff"] == pytest.approx(ref["diff"] / 100) and d["kendall_tau"]["n"] == 7
    assert d["kendall_tau"]["ci"] == [pytest.approx(c / 100) for c in ref["ci"]]
    assert d["kendall_tau"]["half_width"] == pytest.approx(ref["half_width"] / 100) and d["kendall_tau"]["seeds"] == [3, 1]
    acc = paired_difference_seeds(a["pairwise_accuracy"], b["pairwise_accuracy"], n_boot=300, seed=5, groups=groups)
    assert d["pairwise_accuracy"] == {**acc, "diff": pytest.approx(acc["diff"])}  # in points, as a win-rate difference
    same = calibration_difference(b, b, n_boot=100, groups=groups)
    assert same["pairwise_accuracy"]["diff"] == 0.0 and same["pairwise_accuracy"]["ci"] == [0.0, 0.0]
    assert calibration_difference({"kendall_tau": np.full((1, 2), np.nan)}, {"kendall_tau": np.zeros((1, 2))}) == {"kendall_tau": None}


def test_accuracy_within_and_across_sources_by_hand():
    """Two teacher samples (t1, t2) and two student samples (s1, s2). The judge: t1 > t2 > s1 > s2. The model prefers its
    own samples (s2 > s1 > t1 > t2): across sources it is wrong on all 4 pairs, within a source right on t1-t2, wrong on
    s1-s2; all 6 pairs: 1 of 6 right."""
    judge, model = [4.0, 3.0, 2.0, 1.0], [2.0, 1.0, 3.0, 4.0]
    sources = [["teacher", "teacher", "student", "student"]]
    out = per_prompt([model], [judge], [0.0], sources=sources)
    assert out["pairwise_accuracy"][0] == pytest.approx(1 / 6)
    assert out["within_source_accuracy"][0] == pytest.approx(1 / 2)
    assert out["cross_source_accuracy"][0] == pytest.approx(0.0)
    assert pairwise_accuracy(model, judge, pairs=np.array([True, False, False, False, False, False])) == 1.0  # t1-t2 only
    assert "within_source_accuracy" not in per_prompt([model], [judge], [0.0])  # without sources, the three measures


def test_within_source_accuracy_is_undefined_without_a_same_source_pair_the_judge_orders():
    one_each = per_prompt([[1.0, 2.0]], [[2.0, 1.0]], [0.0], sources=[["teacher", "student"]])
    assert math.isnan(one_each["within_source_accuracy"][0]) and one_each["cross_source_accuracy"][0] == 0.0
    tied = per_prompt([[1.0, 2.0, 3.0]], [[1.0, 1.0, 2.0]], [0.0], sources=[["teacher", "teacher", "student"]])
    assert math.isnan(tied["within_source_accuracy"][0])  # the only same-source pair is tied by the judge
    assert tied["cross_source_accuracy"][0] == 1.0
    with pytest.raises(ValueError, match="of sources"):
        per_prompt([[1.0, 2.0]], [[2.0, 1.0]], [0.0], sources=[])
