"""The bench's three statistics per row, from hand-made scores: soft win rate, head-to-heads, matrix, detection limits."""
import numpy as np
import pytest

from prefdistill.bench.comparisons import add_statistics, detection_by_statistic, head_to_head_matrix
from prefdistill.bench.numbers import seed_outcomes

REFS = ["the reference text"] * 12
GROUPS = [f"doc{i // 3}" for i in range(12)]
OPTS = dict(n_boot=200, seed=0, groups=GROUPS)


def _outcome(scores):
    scores = np.atleast_2d(scores)
    return seed_outcomes([["a generation"] * 12 for _ in scores], scores.tolist(), [0.0] * 12, REFS)


@pytest.fixture
def outcomes():
    rng = np.random.default_rng(0)
    sft = rng.normal(-1.0, 1.0, (1, 12))
    return {"SFT": _outcome(sft), "teacher": _outcome(sft + 2.0),
            "seqkd": _outcome(sft + rng.normal(0.3, 0.1, (3, 12))), "plad": _outcome(sft + rng.normal(1.0, 0.1, (3, 12)))}


def _rows():
    return [{"name": "seqkd", "label": "SeqKD", "vs_sft": {"diff": 2.0, "half_width": 4.0}, "vs_seqkd": None},
            {"name": "plad", "label": "PLaD", "vs_sft": {"diff": 8.0, "half_width": 4.0}, "vs_seqkd": {"diff": 5.0, "half_width": 5.0}}]


def test_rows_get_the_soft_rate_and_the_head_to_heads(outcomes):
    rows, base = _rows(), {"teacher": {}, "student_sft": {}, "student_init": {}}
    matrix = add_statistics(rows, base, outcomes, seqkd="seqkd", opts=OPTS)
    plad, seqkd = rows[1], rows[0]
    assert plad["soft_win_rate"] == pytest.approx(100 * outcomes["plad"]["soft_win_rate"].mean())
    assert plad["soft_win_rate_ci"][0] <= plad["soft_win_rate"] <= plad["soft_win_rate_ci"][1]
    assert plad["head_to_head"]["vs_sft"]["rate"] == 100.0  # every seed beats SFT on every prompt by ~1 point of score
    assert plad["soft_vs_sft"]["diff"] > 0 and plad["soft_vs_seqkd"]["diff"] > 0
    assert seqkd["head_to_head"]["vs_seqkd"] is None and seqkd["soft_vs_seqkd"] is None
    assert base["teacher"]["soft_win_rate"] > base["student_sft"]["soft_win_rate"]
    assert "soft_win_rate" not in base["student_init"]  # no outcomes given for it
    assert matrix["rows"] == ["teacher", "SFT", "seqkd", "plad"]
    rates = np.array(matrix["rates"])
    assert np.allclose(rates + rates.T, 100.0) and np.allclose(np.diag(rates), 50.0)


def test_matrix_is_the_pooled_head_to_head(outcomes):
    m = head_to_head_matrix(outcomes, {"SFT": "SFT", "plad": "PLaD"})
    assert m["rates"][1][0] == 100.0 and m["labels"] == ["SFT", "PLaD"]


def test_detection_by_statistic_reads_each_comparison(outcomes):
    rows = _rows()
    add_statistics(rows, {}, outcomes, seqkd="seqkd", opts=OPTS)
    limits = detection_by_statistic(rows)
    assert set(limits) >= {"win_rate", "soft_win_rate", "head_to_head", "most_sensitive", "signal_to_noise"}
    assert limits["win_rate"]["vs_sft"]["significant_at"] == 4.0 and limits["win_rate"]["vs_sft"]["n"] == 2
    assert limits["win_rate"]["vs_seqkd"]["n"] == 1
    assert limits["head_to_head"]["vs_sft"]["n"] == 2
    ratios = [abs(2.0) / 4.0, 8.0 / 4.0, 5.0 / 5.0]
    assert limits["signal_to_noise"]["win_rate"] == pytest.approx(np.median(ratios))
    assert limits["most_sensitive"] == max(limits["signal_to_noise"], key=limits["signal_to_noise"].get)


def test_detection_without_comparisons_is_none():
    limits = detection_by_statistic([{"name": "a"}])
    assert limits["win_rate"]["vs_sft"] is None and limits["most_sensitive"] is None


def test_an_interval_of_float_noise_has_no_signal_to_noise_ratio():
    """Rows whose outputs are the same texts differ by float noise (1e-6 points): no ratio, so no 'most sensitive'."""
    rows = [{"name": "a", "vs_sft": {"diff": 2e-6, "half_width": 1e-6}, "vs_seqkd": None},
            {"name": "b", "vs_sft": {"diff": 3e-6, "half_width": 2e-6}, "vs_seqkd": None}]
    limits = detection_by_statistic(rows)
    assert limits["win_rate"]["vs_sft"]["n"] == 2  # the limits are still reported (about 0)
    assert "win_rate" not in limits["signal_to_noise"] and limits["most_sensitive"] is None
    rows[1]["vs_sft"]["half_width"] = 2.0
    assert detection_by_statistic(rows)["signal_to_noise"]["win_rate"] == pytest.approx(3e-6 / 2.0)
