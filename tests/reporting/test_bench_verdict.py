"""The bench's sentences: each comparison's outcome, the console lines, and the demo's verdict in every case."""
import pytest

from prefdistill.reporting.bench_verdict import (calibration_console, outcome, statistics_console, verdict_lines)


def _diff(d, lo, hi):
    return {"diff": d, "ci": [lo, hi], "half_width": (hi - lo) / 2}


def _results(soft_sft, soft_seqkd, gap=(30.0, 10.0, 50.0), acc=(40.0, 30.0, 48.0)):
    plad = {"name": "plad", "label": "PLaD", "soft_win_rate": 30.0, "soft_win_rate_ci": [20.0, 40.0],
            "vs_sft": _diff(4.0, -2.0, 10.0), "vs_seqkd": _diff(1.0, -5.0, 7.0),
            "soft_vs_sft": _diff(*soft_sft), "soft_vs_seqkd": _diff(*soft_seqkd),
            "head_to_head": {"vs_sft": {"rate": 60.0, "ci": [52.0, 68.0]}, "vs_seqkd": {"rate": 49.0, "ci": [40.0, 58.0]}},
            "calibration": {"pairwise_accuracy": {"value": acc[0], "ci": [acc[1], acc[2]]},
                            "vs_sft": {"pairwise_accuracy": _diff(2.0, -1.0, 5.0)}}}
    seqkd = {"name": "seqkd", "label": "SeqKD", "soft_win_rate": 25.0, "soft_win_rate_ci": [15.0, 35.0],
             "soft_vs_sft": _diff(3.0, -1.0, 7.0), "soft_vs_seqkd": None, "head_to_head": {"vs_sft": None, "vs_seqkd": None}}
    return {"rows": [seqkd, plad], "teacher_gap": _diff(*gap),
            "base_rows": {"student_sft": {"label": "SFT student", "calibration": {"pairwise_accuracy": {"value": 38.0, "ci": [29.0, 47.0]}}}},
            "detection_limit": {"soft_win_rate": {"vs_sft": {"significant_at": 4.2}}, "most_sensitive": "head_to_head"}}


def test_outcome_reads_the_interval_and_ignores_float_dust():
    assert outcome(_diff(5, 1, 9)) == "better" and outcome(_diff(-5, -9, -1)) == "worse"
    assert outcome(_diff(0, -1, 1)) == "not separable" and outcome(_diff(-2, -5, 3e-15)) == "not separable"
    assert outcome(None) is None and outcome({"diff": 1.0}) is None


@pytest.mark.parametrize("soft_sft, soft_seqkd, expected", [
    ((6.0, 1.0, 11.0), (5.0, 0.5, 9.5), "beat SFT and SeqKD"),
    ((6.0, 1.0, 11.0), (1.0, -3.0, 5.0), "could not be told from SeqKD"),
    ((6.0, 1.0, 11.0), (-6.0, -10.0, -2.0), "SeqKD did better still"),
    ((1.0, -3.0, 5.0), (0.0, -4.0, 4.0), "could not be told from the SFT student"),
    ((-6.0, -10.0, -2.0), (-6.0, -10.0, -2.0), "did worse than the SFT student"),
])
def test_the_verdict_reads_the_soft_win_rate_fixed_in_advance(soft_sft, soft_seqkd, expected):
    """Not the statistic that came out most significant (here the head-to-head): the soft win rate, always."""
    lines = verdict_lines(_results(soft_sft, soft_seqkd), "plad")
    assert lines[-1].startswith("Verdict: PLaD") and expected in lines[-1] and "soft win rate" in lines[-1]
    assert lines[0].startswith("Teacher − SFT student on test: +30.0 [10.0, 50.0]") and "room to gain" in lines[0]
    against = next(x for x in lines if x.startswith("PLaD against SFT"))
    assert "head-to-head 60.0% [52.0, 68.0] (better)" in against and "win rate vs reference +4.0 [-2.0, 10.0] (not separable)" in against


def test_the_verdict_says_when_there_was_no_room_and_when_a_likelihood_is_below_chance():
    lines = verdict_lines(_results((1.0, -3.0, 5.0), (0.0, -4.0, 4.0), gap=(3.0, -5.0, 11.0)), "plad")
    assert "not clearly better" in lines[0]
    assert "about 4.2 points" in lines[-1]  # the size this bench resolves
    cal = next(x for x in lines if x.startswith("Calibration"))
    assert "40.0%" in cal and "below chance" in cal and "no better or worse" in cal
    assert "below chance" not in next(x for x in verdict_lines(_results((1, -3, 5), (0, -4, 4), acc=(60.0, 52.0, 68.0)), "plad")
                                      if x.startswith("Calibration"))
    assert verdict_lines(_results((1, -3, 5), (0, -4, 4)), "dpkd") == ["Verdict: no row named 'dpkd' in these results."]


def test_console_lines_name_each_row_and_its_comparisons():
    stats = statistics_console(_results((6.0, 1.0, 11.0), (5.0, 0.5, 9.5)))
    assert stats[0] == "SeqKD: soft win rate 25.0 [15.0, 35.0]; Δ soft +3.0 [-1.0, 7.0], head-to-head — vs SFT"
    assert stats[1].startswith("PLaD: soft win rate 30.0 [20.0, 40.0]; Δ soft +6.0 [1.0, 11.0], head-to-head 60.0% [52.0, 68.0] vs SFT; ")
    cal = calibration_console(_results((6.0, 1.0, 11.0), (5.0, 0.5, 9.5)))
    assert cal == ["Calibration, pairwise accuracy of each row's likelihood against the judge (%; chance 50): "
                   "SFT student 38.0 [29.0, 47.0], PLaD 40.0 [30.0, 48.0]"]
    assert calibration_console({"rows": []}) == [] and statistics_console({}) == []


def test_demo_prints_the_verdict_of_the_bench_it_ran(monkeypatch, capsys, tmp_path):
    """`prefdistill demo` runs demo.yaml as a bench and prints the verdict after the bench's own summary."""
    from prefdistill.bench import runner
    from prefdistill.cli import main

    ran = {}

    class FakeBench:
        def __init__(self, cfg, bench, **kw):
            ran.update(cfg=cfg, bench=bench, **kw)

        def run(self):
            return _results((6.0, 1.0, 11.0), (1.0, -3.0, 5.0))

    monkeypatch.setattr(runner, "Bench", FakeBench)
    assert main(["demo", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Verdict: PLaD beat SFT on the soft win rate, but it could not be told from SeqKD" in out
    assert ran["config_name"] == "demo" and [m.name for m in ran["bench"].methods] == ["seqkd", "plad"]
    assert ran["cfg"].teacher.name_or_path == "builtin:smollm2-135m-instruct" and str(tmp_path) in str(ran["cfg"].run_dir)
