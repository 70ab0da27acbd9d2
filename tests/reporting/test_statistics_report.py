"""The three-statistics section renders from results as bench.comparisons writes them, and old results still render."""
from prefdistill.reporting.statistics_report import detection_lines, plot_forest, plot_head_to_head, statistics_section

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _d(diff, lo, hi):
    return {"diff": diff, "ci": [lo, hi], "half_width": (hi - lo) / 2}


def _h(rate, lo, hi):
    return {"rate": rate, "ci": [lo, hi], "half_width": (hi - lo) / 2}


def _limit(h):
    return {"significant_at": h, "detectable_with_power": 1.43 * h, "power": 0.8, "level": 0.95, "n": 2}


def results():
    rows = [{"name": "seqkd", "label": "SeqKD", "soft_win_rate": 30.2, "vs_sft": _d(2.0, -4.0, 8.0), "soft_vs_sft": _d(1.5, -1.0, 4.0),
             "head_to_head": {"vs_sft": _h(55.0, 48.0, 62.0), "vs_seqkd": None}, "vs_seqkd": None, "soft_vs_seqkd": None},
            {"name": "plad", "label": "PLaD", "soft_win_rate": 33.9, "vs_sft": _d(5.0, -1.0, 11.0), "soft_vs_sft": _d(4.1, 1.6, 6.6),
             "head_to_head": {"vs_sft": _h(61.0, 54.0, 68.0), "vs_seqkd": _h(53.0, 46.0, 60.0)},
             "vs_seqkd": _d(3.0, -3.0, 9.0), "soft_vs_seqkd": _d(2.6, 0.1, 5.1)}]
    return {"rows": rows, "soft_scale": {"scale": 1.0, "how": "bradley-terry"},
            "head_to_head_matrix": {"rows": ["SFT", "seqkd", "plad"], "labels": ["SFT student", "SeqKD", "PLaD"],
                                    "rates": [[50, 45, 39], [55, 50, 47], [61, 53, 50]]},
            "detection_limit": {"win_rate": {"vs_sft": _limit(6.0), "vs_seqkd": _limit(6.0)},
                                "soft_win_rate": {"vs_sft": _limit(2.5), "vs_seqkd": _limit(2.5)},
                                "head_to_head": {"vs_sft": _limit(7.0), "vs_seqkd": _limit(7.0)},
                                "signal_to_noise": {"win_rate": 0.5, "soft_win_rate": 1.5, "head_to_head": 1.2},
                                "most_sensitive": "soft_win_rate"}}


def test_section_has_the_table_the_figures_and_the_limits(tmp_path):
    lines = statistics_section(results(), tmp_path)
    text = "\n".join(lines)
    plad = next(line for line in text.splitlines() if line.startswith("| PLaD |"))
    assert "33.9" in plad and "+4.1 [1.6, 6.6]" in plad and "61.0 [54.0, 68.0]" in plad and "53.0 [46.0, 60.0]" in plad
    assert "bradley-terry" in text
    for name in ("forest.png", "head_to_head.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC and f"plots/{name}" in text
    assert "Soft win rate against SFT: a difference larger than 2.5 points" in text
    assert "Head-to-head against SeqKD" in text and "around 50" in text
    assert "Most sensitive here: the soft win rate" in text


def test_old_results_render_the_win_rate_limit_only(tmp_path):
    old = {"rows": [{"name": "kd", "label": "KD", "vs_sft": _d(1.0, -5.0, 7.0)}],
           "detection_limit": {"vs_sft": _limit(6.3), "vs_seqkd": None}}
    lines = detection_lines(old)
    assert len(lines) == 1 and lines[0].startswith("Win rate vs reference against SFT: a difference larger than 6.3 points")
    assert not any("Three statistics" in x for x in statistics_section(old, tmp_path))


def test_figures_need_their_data(tmp_path):
    assert plot_forest({"rows": []}, tmp_path / "f.png") is None
    assert plot_head_to_head({"head_to_head_matrix": {"rates": [[50]], "labels": ["a"]}}, tmp_path / "h.png") is None


def test_forest_draws_an_interval_that_misses_its_point(tmp_path):
    """A percentile interval on few groups can lie beside its estimate; the plot clips the error bar instead of failing."""
    odd = {"rows": [{"name": "kd", "label": "KD", "vs_sft": _d(3.0, 3.5, 9.0)}]}
    assert plot_forest(odd, tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC
