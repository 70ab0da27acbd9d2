"""The run report: table layout, an honest verdict, and report.md + PNGs from partial metrics."""
import copy

import pytest

from prefdistill.reporting.run_report import console_table, plot_length_buckets, render_table, verdict, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(label, win, ci, rouge_l=20.0, rouge_l_ci=None, ts=None):
    buckets = [{"bucket": "<15", "n": 3, "win_rate": win}, {"bucket": "15-24", "n": 0, "win_rate": None},
               {"bucket": ">=25", "n": 5, "win_rate": win / 2}]
    return {"label": label, "n": 64, "word_count": 21.25, "rouge1": 30.0, "rouge2": 10.0, "rougeL": rouge_l,
            "rougeL_ci": rouge_l_ci, "win_rate": win, "win_rate_ci": ci, "ts_win_rate": ts,
            "ts_win_rate_ci": None if ts is None else [ts - 5, ts + 5], "length_buckets": buckets}


@pytest.fixture
def metrics():
    return {
        "task": "builtin:aclsum", "teacher": "builtin:gemma3-270m", "student": "builtin:smollm2-135m-instruct",
        "method": "plad",
        "rows": {
            "student_kd": _row("KD student", 37.7, [30.0, 45.0]),  # an extra row comes after the four
            "student_distill": _row("PLaD student", 40.46, [35.0, 46.0], rouge_l=23.45, rouge_l_ci=[21.0, 26.0],
                                    ts=30.0),
            "teacher": _row("Teacher (SFT)", 45.28, [39.0, 51.0]),
            "student_sft": _row("SFT student", 35.13, [29.0, 41.0], rouge_l=22.0, rouge_l_ci=[19.5, 24.5], ts=25.0),
            "student_init": _row("Initial student", 33.42, [27.0, 39.0]),
        },
        "judge": {"name": "tiny-rm", "heldout_accuracy": 0.93, "per_kind": {"mismatched": 0.99, "truncated": 0.9},
                  "measures": "whether a summary fits its paper"},
        "training": {"sft_teacher": [{"step": 1, "loss": 2.3}, {"step": 2, "loss": 2.0}],
                     "distill": [{"step": 1, "loss": 0.4, "reward_margin": 0.1}, {"step": 2, "loss": 0.3}]},
        "pairs": {"n": 64, "relabelled": 0, "swapped": 0},
        "timings_s": {"reward": 40.1, "total": 610.7},
    }


def test_render_table_rows_in_order_with_known_numbers(metrics):
    table = render_table(metrics)
    lines = table.splitlines()
    assert lines[0].startswith("| Model | Words | ROUGE-1 | ROUGE-2 | ROUGE-L | Win rate vs ref. (95% CI)")
    labels = ["Teacher (SFT)", "Initial student", "SFT student", "PLaD student", "KD student"]
    assert [line.split("|")[1].strip() for line in lines[2:]] == labels
    assert "40.46 [35.0, 46.0]" in table and "23.45" in table and "21.2" in table


def test_render_table_dash_for_missing(metrics):
    metrics["rows"]["teacher"].update(rouge2=None, win_rate=float("nan"))
    teacher_line = render_table(metrics).splitlines()[2]
    cells = [c.strip() for c in teacher_line.strip("|").split("|")]
    assert cells[3] == "—" and cells[5] == "—" and cells[6] == "—"


def test_console_table_is_aligned(metrics):
    lines = console_table(metrics).splitlines()
    assert len(lines) == 2 + 5
    assert "PLaD student" in lines[5] and "40.46" in lines[5]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule have the same width
    assert "|" not in "".join(lines)


def test_verdict_not_significant_when_intervals_overlap(metrics):
    text = verdict(metrics)
    assert "PLaD student is above SFT student by 5.33 points" in text
    assert "not significant" in text
    assert "ROUGE-L" in text and "1.45" in text  # 23.45 - 22.00


def test_verdict_names_better_row_when_intervals_separate(metrics):
    metrics["rows"]["student_distill"].update(win_rate=60.0, win_rate_ci=[55.0, 65.0])
    text = verdict(metrics)
    assert "do not overlap: PLaD student is better on win rate" in text
    first = text.split(". ")[0]
    assert "not significant" not in first


@pytest.mark.parametrize("ci", [[20.0, 28.0], [20.0, 40.0]], ids=["separate", "overlapping"])
def test_verdict_never_claims_a_win_when_worse(metrics, ci):
    metrics["rows"]["student_distill"].update(win_rate=30.0, win_rate_ci=ci, rougeL=15.0, rougeL_ci=[14.0, 16.0])
    text = verdict(metrics)
    assert "PLaD student does not beat SFT student" in text
    assert "PLaD student is above" not in text and "PLaD student is better" not in text
    assert "SFT student is better on ROUGE-L" in text
    if ci == [20.0, 28.0]:
        assert "SFT student is better on win rate" in text
    else:
        assert "not significant" in text


def test_verdict_without_intervals_or_rows(metrics):
    metrics["rows"]["student_distill"]["win_rate_ci"] = None
    assert "significance is unknown" in verdict(metrics)
    del metrics["rows"]["student_sft"]
    assert verdict(metrics).startswith("No verdict")


def test_write_report_full(tmp_path, metrics):
    path = write_report(tmp_path, metrics)
    assert path == tmp_path / "report.md"
    text = path.read_text(encoding="utf-8")
    for heading in ("## Results", "## How to read the table", "## Win rate by generation length", "## Judge",
                    "## Preference pairs", "## Training curves", "## Timings"):
        assert heading in text
    assert "93.0%" in text and "99.0%" in text and "610.7 s" in text and "not significant" in text
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["length_buckets.png", "training.png", "win_rates.png"]
    for name in pngs:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG_MAGIC
        assert f"plots/{name}" in text
    assert not [p for p in tmp_path.rglob("*.tmp")]  # atomic writes leave no temp files


def test_write_report_partial_metrics(tmp_path, metrics):
    partial = {"task": "builtin:aclsum",
               "rows": {k: copy.deepcopy(metrics["rows"][k]) for k in ("teacher", "student_distill")}}
    path = write_report(tmp_path / "run", partial)
    text = path.read_text(encoding="utf-8")
    assert "PLaD student" in text and "No verdict" in text
    for heading in ("## Judge", "## Preference pairs", "## Training curves", "## Timings"):
        assert heading not in text
    pngs = list((tmp_path / "run" / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)


def test_write_report_with_no_rows(tmp_path):
    text = write_report(tmp_path, {"timings_s": {"total": 1.0}}).read_text(encoding="utf-8")
    assert "No evaluation rows" in text and "## Timings" in text
    assert plot_length_buckets({"rows": {}}, tmp_path / "x.png") is None


def test_verdict_uses_paired_comparison_when_present():
    from prefdistill.reporting.run_report import verdict

    rows = {"student_sft": {"label": "SFT student", "win_rate": 10.0, "win_rate_ci": [0.0, 20.0], "rougeL": 20.0, "rougeL_ci": [15.0, 25.0]},
            "student_distill": {"label": "PLaD student", "win_rate": 15.0, "win_rate_ci": [5.0, 25.0], "rougeL": 21.0, "rougeL_ci": [16.0, 26.0]}}
    def comparison(lo, hi, h2h_lo, h2h_hi):
        return {"method_row": "student_distill", "baseline_row": "student_sft",
                "win_rate_diff": {"n": 40, "diff": 5.0, "ci": [lo, hi]}, "head_to_head": {"win_rate": 60.0, "ci": [h2h_lo, h2h_hi]}}
    both = verdict({"rows": rows, "comparison": comparison(1.0, 9.0, 52.0, 68.0)})
    assert both.count("significantly in favour of PLaD student") == 2
    mixed = verdict({"rows": rows, "comparison": comparison(1.0, 9.0, 45.0, 70.0)})
    assert mixed.count("significantly in favour of PLaD student") == 1 and "includes 50: not significant" in mixed
    neither = verdict({"rows": rows, "comparison": comparison(-2.0, 12.0, 45.0, 70.0)})
    assert "Paired over the same 40 prompts" in neither and "significantly" not in neither
    worse = verdict({"rows": rows, "comparison": comparison(-9.0, -1.0, 30.0, 45.0)})
    assert worse.count("significantly in favour of SFT student") == 2



def test_report_says_what_the_intervals_resampled(tmp_path, metrics):
    grouped = {**copy.deepcopy(metrics), "resampled": "groups (72 prompts in 24 groups)"}
    text = write_report(tmp_path, grouped).read_text()
    assert "Every interval in this report resampled groups (72 prompts in 24 groups)." in text
    assert "resamples whole groups of test prompts" in text
    assert "Every interval in this report" not in write_report(tmp_path, metrics).read_text()  # an old metrics.json says nothing
    paired = {"method_row": "student_distill", "baseline_row": "student_sft", "win_rate_diff": {"n": 72, "groups": 24, "diff": 5.0,
              "ci": [-1.0, 11.0]}, "head_to_head": {"win_rate": 55.0, "ci": [45.0, 65.0]}}
    assert "Paired over the same 72 prompts in 24 groups" in verdict({**metrics, "comparison": paired})
