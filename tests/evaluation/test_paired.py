"""Soft win rate, head-to-head outcomes and their bootstrap, the logistic scale: closed forms and naive loops."""
import math

import numpy as np
import pytest

from prefdistill.evaluation.bootstrap import head_to_head_seeds, paired_difference_seeds
from prefdistill.evaluation.paired import fit_logistic_scale, head_to_head_outcomes, sigmoid, soft_wins_per_seed


def test_soft_wins_are_the_bradley_terry_probability():
    soft = soft_wins_per_seed([[1.0, 0.0, -2.0]], [0.0, 0.0, 0.0])
    assert soft[0] == pytest.approx([1 / (1 + math.e ** -1), 0.5, 1 / (1 + math.e ** 2)])
    halved = soft_wins_per_seed([[1.0, 0.0, -2.0]], [0.0, 0.0, 0.0], scale=2.0)
    assert halved[0] == pytest.approx([1 / (1 + math.e ** -0.5), 0.5, 1 / (1 + math.e)])


def test_soft_wins_move_where_the_hard_win_rate_does_not():
    """An output that improves but stays below the reference: no change in the hard win, a rise in the soft one."""
    before, after = soft_wins_per_seed([[-3.0]], [0.0]), soft_wins_per_seed([[-1.0]], [0.0])
    assert after[0, 0] > before[0, 0] and after[0, 0] < 0.5


def test_sigmoid_is_stable_at_large_arguments():
    assert sigmoid(np.array([-1000.0, 1000.0])) == pytest.approx([0.0, 1.0])


def test_soft_wins_reject_a_bad_scale_and_shape():
    with pytest.raises(ValueError, match="scale"):
        soft_wins_per_seed([[1.0]], [0.0], scale=0.0)
    with pytest.raises(ValueError, match="reference scores"):
        soft_wins_per_seed([[1.0, 2.0]], [0.0])


def test_head_to_head_outcomes_match_a_loop():
    a, b = [[1.0, 2.0, 3.0], [0.0, 2.0, 5.0]], [[1.0, 1.0, 4.0]]
    w = head_to_head_outcomes(a, b)
    assert w.shape == (2, 1, 3)
    for i in range(2):
        for n in range(3):
            expected = 0.5 if a[i][n] == b[0][n] else float(a[i][n] > b[0][n])
            assert w[i, 0, n] == expected


def test_head_to_head_of_a_row_with_itself_is_a_tie():
    s = [[0.3, -1.0, 2.0]]
    assert head_to_head_seeds(head_to_head_outcomes(s, s), n_boot=50)["rate"] == 50.0


def test_head_to_head_bootstrap_matches_a_naive_loop():
    rng = np.random.default_rng(3)
    w = rng.integers(0, 3, size=(2, 3, 8)) / 2.0  # (Sa, Sb, N) outcomes in {0, ½, 1}
    groups = ["a", "a", "b", "c", "c", "c", "d", "e"]
    out = head_to_head_seeds(w, n_boot=200, seed=7, groups=groups)
    labels = list(dict.fromkeys(groups))
    g = len(labels)
    draws = np.random.default_rng(7).random((200, g + 2 + 3))
    boots = []
    for u in draws:
        picked = [labels[min(int(x * g), g - 1)] for x in u[:g]]
        sa = [min(int(x * 2), 1) for x in u[g:g + 2]]
        sb = [min(int(x * 3), 2) for x in u[g + 2:]]
        prompts = [n for lab in picked for n, gg in enumerate(groups) if gg == lab]
        boots.append(np.mean([w[i, j, n] for i in sa for j in sb for n in prompts]))
    low, high = np.percentile(boots, [2.5, 97.5]) * 100
    assert out["rate"] == pytest.approx(100 * w.mean())
    assert out["ci"] == pytest.approx([low, high])
    assert out["groups"] == 5 and out["seeds"] == [2, 3]


def test_head_to_head_interval_excludes_50_for_a_clear_winner():
    w = np.ones((1, 1, 40))
    w[0, 0, :4] = 0.0
    out = head_to_head_seeds(w, n_boot=300)
    assert out["rate"] == 90.0 and out["ci"][0] > 50.0


def test_the_soft_win_rate_has_the_narrower_paired_interval_on_continuous_gains():
    """The statistic's point: on the same scores, a shift that rarely crosses the reference is seen by the soft rate."""
    rng = np.random.default_rng(0)
    ref = rng.normal(0.0, 1.0, 300)
    base = ref + rng.normal(-2.0, 1.0, 300)  # mostly below the reference
    better = base + 0.4
    hard = [paired_difference_seeds((s > ref).astype(float), (base > ref).astype(float), n_boot=400) for s in (better,)][0]
    soft = paired_difference_seeds(soft_wins_per_seed([better], ref), soft_wins_per_seed([base], ref), n_boot=400)
    assert soft["ci"][0] > 0
    assert soft["half_width"] < hard["half_width"]


@pytest.mark.parametrize("true_scale", [0.5, 2.0])
def test_logistic_scale_recovers_the_scale_that_made_the_pairs(true_scale):
    rng = np.random.default_rng(1)
    gaps = rng.normal(0.5, 2.0, 4000)
    chosen_wins = rng.random(4000) < sigmoid(gaps / true_scale)
    chosen = np.where(chosen_wins, gaps, -gaps)  # the gap as seen from whichever text the oracle preferred
    assert fit_logistic_scale(chosen, np.zeros(4000)) == pytest.approx(true_scale, rel=0.1)


def test_logistic_scale_on_separable_pairs_is_bounded_and_errors_on_ties():
    assert 0 < fit_logistic_scale([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) < 1.0
    with pytest.raises(ValueError, match="tied"):
        fit_logistic_scale([1.0, 1.0], [1.0, 1.0])
