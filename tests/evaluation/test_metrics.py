"""Metrics pinned to hand-computed values: ROUGE, pairwise outcomes, bootstrap, buckets."""
import math

import numpy as np
import pytest

from prefdistill.evaluation.metrics import (bootstrap_ci, length_buckets, pairwise_outcomes, rouge, rouge_per_example,
                                 summarize_generations, win_rate, win_rate_with_ci, word_count)


def test_word_count():
    assert word_count("  the cat\tsat\non  the mat ") == 6
    assert word_count("") == 0


def test_rouge_identical_and_disjoint():
    assert rouge(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
    assert rouge(["alpha beta gamma"], ["delta epsilon"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    # mean over examples: one identical (100) and one disjoint (0) pair
    assert rouge(["a b c", "x y"], ["a b c", "z w"])["rouge1"] == pytest.approx(50.0)


def test_rouge_partial_hand_computed():
    # pred "cats eat fish daily" (4 tokens), ref "cats eat meat" (3); stemming maps cats -> cat.
    # unigrams: overlap {cat, eat} = 2 -> P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7
    # bigrams: pred {cat eat, eat fish, fish daili}, ref {cat eat, eat meat}: overlap 1 -> P=1/3, R=1/2, F=0.4
    # LCS = "cat eat" = 2 -> same as unigrams
    r = rouge(["cats eat fish daily"], ["Cats eat meat"])
    assert r["rouge1"] == pytest.approx(100 * 4 / 7)
    assert r["rouge2"] == pytest.approx(40.0)
    assert r["rougeL"] == pytest.approx(100 * 4 / 7)


def test_rouge_uses_stemmer_and_rejects_bad_input():
    assert rouge(["running dogs"], ["run dog"])["rouge1"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="length mismatch"):
        rouge(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        rouge([], [])


def test_rouge_per_example_is_f1_in_unit_interval():
    scores = rouge_per_example(["cats eat fish daily", "same words", "foo"], ["cats eat meat", "same words", "bar"])
    assert scores == pytest.approx([4 / 7, 1.0, 0.0])
    assert rouge_per_example(["cats eat fish daily"], ["cats eat meat"], key="rouge2") == pytest.approx([0.4])


def test_pairwise_outcomes_with_ties():
    assert pairwise_outcomes([2.0, 1.0, 0.5, 3.0], [1.0, 2.0, 0.5, 3.0 + 1e-9]) == [1.0, 0.0, 0.5, 0.5]
    assert pairwise_outcomes([1.0], [0.9], tie_tol=0.2) == [0.5]
    with pytest.raises(ValueError):
        pairwise_outcomes([1.0], [1.0, 2.0])


def test_win_rate_counts_ties_half_and_is_the_point_of_its_ci():
    scores, ref = [2.0, 1.0, 0.5, 3.0], [1.0, 2.0, 0.5, 0.0]  # win, loss, tie, win
    assert win_rate(scores, ref) == pytest.approx(62.5)
    rate, (low, high) = win_rate_with_ci([scores], ref, n_boot=200)
    assert rate == pytest.approx(win_rate(scores, ref)) and low <= rate <= high


def test_bootstrap_constant_input_has_zero_width():
    assert bootstrap_ci([0.5] * 20) == pytest.approx((0.5, 0.5, 0.5))
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_bootstrap_contains_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    values = rng.random(50).tolist()
    mean, low, high = bootstrap_ci(values, seed=3)
    assert mean == pytest.approx(np.mean(values))
    assert low < mean < high
    assert bootstrap_ci(values, seed=3) == (mean, low, high)
    assert bootstrap_ci(values, seed=4) != (mean, low, high)


def test_bootstrap_width_matches_normal_theory_and_shrinks_with_n():
    # Bernoulli(0.5) outcomes, n = 400: standard error 0.025, 95% interval width ~ 2 * 1.96 * 0.025 = 0.098
    _, low, high = bootstrap_ci([0.0, 1.0] * 200, n_boot=2000)
    assert high - low == pytest.approx(0.098, abs=0.012)
    _, low_small, high_small = bootstrap_ci([0.0, 1.0] * 5)
    assert high_small - low_small > 2 * (high - low)
    # a wider level gives a wider interval
    _, low90, high90 = bootstrap_ci([0.0, 1.0] * 200, n_boot=2000, level=0.9)
    assert high90 - low90 < high - low


def test_length_buckets_hand_made_with_empty_bucket():
    rows = length_buckets([3, 15, 24, 40, 50, 35], [1.0, 0.0, 0.5, 1.0, 0.0, 0.5], [15, 25, 35])
    assert [r["bucket"] for r in rows] == ["<15", "15-24", "25-34", ">=35"]
    assert [r["n"] for r in rows] == [1, 2, 0, 3]
    assert rows[0]["win_rate"] == pytest.approx(100.0)
    assert rows[1]["win_rate"] == pytest.approx(25.0)
    assert rows[2]["win_rate"] is None
    assert rows[3]["win_rate"] == pytest.approx(50.0)
    with pytest.raises(ValueError):
        length_buckets([1], [1.0], [25, 15])


def test_summarize_generations_hand_made():
    gens = ["the cat sat", "a dog ran far away"]
    refs = ["the cat sat", "birds fly"]
    row = summarize_generations(gens, refs, judge_scores=[1.0, 0.0], reference_scores=[0.5, 0.0],
                                opponent_scores=[2.0, -1.0], n_boot=200, length_edges=(4,))
    assert row["n"] == 2
    assert row["word_count"] == pytest.approx(4.0)  # (3 + 5) / 2
    assert row["rouge1"] == pytest.approx(50.0) and row["rougeL"] == pytest.approx(50.0)
    assert row["win_rate"] == pytest.approx(75.0)  # outcomes [1, 0.5]: a win and a tie
    lo, hi = row["win_rate_ci"]
    assert 50.0 <= lo <= 75.0 <= hi <= 100.0
    assert row["ts_win_rate"] == pytest.approx(50.0)  # outcomes vs opponent [0, 1]
    assert row["length_buckets"] == [{"bucket": "<4", "n": 1, "win_rate": 100.0},
                                     {"bucket": ">=4", "n": 1, "win_rate": 50.0}]
    for key in ("rouge2", "rougeL_ci", "ts_win_rate_ci"):
        assert key in row
    assert all(isinstance(v, float) and math.isfinite(v) for v in row["win_rate_ci"])


def test_summarize_generations_without_opponent_and_bad_lengths():
    row = summarize_generations(["x"], ["x"], [1.0], [0.0])
    assert row["ts_win_rate"] is None and row["ts_win_rate_ci"] is None
    assert row["win_rate"] == 100.0 and row["win_rate_ci"] == [100.0, 100.0]
    with pytest.raises(ValueError, match="judge_scores"):
        summarize_generations(["x", "y"], ["x", "y"], [1.0], [0.0, 0.0])


def test_paired_difference_hand_case_and_head_to_head():
    from prefdistill.evaluation.metrics import compare_rows, paired_difference

    out = paired_difference([1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0], n_boot=200, seed=0)
    assert out["n"] == 4 and out["diff"] == pytest.approx(50.0)
    assert out["ci"][0] <= 50.0 <= out["ci"][1]
    same = paired_difference([0.3, 0.7], [0.3, 0.7])
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0]
    a = {"generations": ["a b", "c d"], "references": ["a b", "x y"], "judge_scores": [2.0, 1.0], "reference_scores": [1.0, 1.0]}
    b = {"generations": ["x", "c d"], "references": ["a b", "x y"], "judge_scores": [0.0, 1.0], "reference_scores": [1.0, 1.0]}
    cmp = compare_rows(a, b, n_boot=100)
    assert cmp["head_to_head"]["win_rate"] == pytest.approx(75.0)  # one win, one tie
    assert cmp["win_rate_diff"]["diff"] == pytest.approx(50.0)  # (1 - 0) and (0.5 - 0.5)
    assert cmp["rougeL_diff"]["diff"] == pytest.approx(50.0)
