"""The bench report renders a finished results dict (numbers computed elsewhere): every section, and a minimal dict."""
import copy
import json

import pytest

from prefdistill.reporting.bench_report import build_bench_report, console_summary, plot_budget, plot_sweep, write_bench_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(label, win, rouge_l=20.0):
    buckets = [{"bucket": "<15", "n": 3, "win_rate": win}, {"bucket": ">=15", "n": 5, "win_rate": win / 2}]
    return {"label": label, "word_count": 21.5, "rouge1": 30.0, "rouge2": 10.0, "rougeL": rouge_l, "rougeL_ci": [rouge_l - 2, rouge_l + 2],
            "win_rate": win, "win_rate_ci": [win - 6, win + 6], "ts_win_rate": 30.0, "ts_win_rate_ci": [25.0, 35.0],
            "length_buckets": buckets}


def _diff(d, lo, hi):
    return {"diff": d, "ci": [lo, hi], "half_width": (hi - lo) / 2, "n": 64, "seeds": [3, 1]}


def _cost(samples=0):
    return {"rows": 64, "steps": 16, "train_wall_s": 12.5, "eval_wall_s": 3.0, "peak_memory_mb": 900.0, "memory_kind": "RSS",
            "count_samples": samples, "count_oracle_comparisons": samples // 2, "tokens_student_generated": 100 * samples}


def _method(name, label, method, win, *, setting, step, vs_seqkd, collapse=(), training=True, samples=0):
    val = {"8": {"win_rate": win - 1, "rougeL": 21.0, "word_count": 20.0}, "16": {"win_rate": win, "rougeL": 22.0, "word_count": 21.0}}
    other = {k: v | {"win_rate": v["win_rate"] - 5} for k, v in val.items()}
    row = {"name": name, "method": method, **_row(label, win), "seeds": 3, "per_seed_win_rate": [win - 1, win, win + 1],
           "win_rate_seed_sd": 1.0, "vs_sft": _diff(win - 35, win - 41, win - 29), "vs_seqkd": vs_seqkd,
           "rougeL_vs_sft": _diff(1.5, -0.5, 3.5), "rougeL_vs_seqkd": vs_seqkd,
           "selected": {"setting": setting, "step": step, "val": val[str(step)]},
           "grid": [{"setting": setting, "val": val}, {"setting": {k: v * 2 for k, v in setting.items()}, "val": other}],
           "curves": {"0": val, "1": val, "2": {"8": val["8"]}}, "collapse": list(collapse), "cost": _cost(samples)}
    if training:
        row |= {"training_judge_win_rate": win + 3, "vs_sft_training_judge": _diff(4.2, 0.7, 7.7)}
    return row


@pytest.fixture
def results():
    rows = [
        _method("plad", "PLaD", "plad", 42.0, setting={"lr": 1e-4, "beta": 0.5}, step=16, vs_seqkd=_diff(3.1, -2.0, 8.0)),
        _method("seqkd", "SeqKD", "seqkd", 38.0, setting={"lr": 5e-5}, step=8, vs_seqkd=None, training=False),
        _method("sppo", "SPPO", "sppo", 20.0, setting={"lr": 2e-4, "eta": 1.0}, step=8, vs_seqkd=_diff(-18.0, -24.0, -12.0), samples=512,
                collapse=[{"seed": 1, "setting": {"lr": 2e-4, "eta": 1.0}, "step": 8, "metric": "rougeL", "value": 1.2, "floor": 4.6}]),
    ]
    base = {"teacher": _row("Teacher (SFT)", 48.0), "student_init": _row("Initial student", 30.0), "student_sft": _row("SFT student", 35.0)}
    for r in base.values():
        r["training_judge_win_rate"] = r["win_rate"] + 1
    return {
        "config": "bench", "task": "builtin:aclsum", "teacher": "tiny-teacher", "student": "tiny-student", "n_test": 64, "n_val": 32,
        "seeds": [0, 1, 2], "steps": 16, "batch_size": 4, "lora": {"enabled": True, "r": 8, "alpha": 32, "dropout": 0.1},
        "select_metric": "win_rate", "judges": {"eval": {"name": "heldout"}, "training": {"name": "trained", "oracle": {}}},
        "teacher_gap": {"diff": 13.4, "ci": [6.2, 20.6], "n": 64},
        "teacher_gap_validation": {"diff": 11.7, "ci": [3.3, 19.9], "n": 32, "floor": 5.0, "passed": True, "ignored": False},
        "base_rows": base, "rows": rows,
        "costs": {r["name"]: {"label": r["label"], **r["cost"]} for r in rows},
        "val_reference": {"student_init": {"win_rate": 28.0, "rougeL": 4.6, "word_count": 30.0},
                          "student_sft": {"win_rate": 34.0, "rougeL": 19.0, "word_count": 22.0}},
        "detection_limit": {"vs_sft": {"significant_at": 6.3, "detectable_with_power": 9.1, "power": 0.8, "level": 0.95, "n": 3},
                            "vs_seqkd": {"significant_at": 7.4, "detectable_with_power": 10.6, "power": 0.8, "level": 0.95, "n": 2}},
        "orderings": [{"paper": "PLaD", "claim": "PLaD > SeqKD", "metric": "win_rate", "diff": 3.1, "ci": [-2.0, 8.0], "verdict": "not separable"},
                      {"paper": "SPPO", "claim": "SPPO > SFT", "metric": "rougeL", "diff": -9.5, "ci": [-12.0, -7.0], "verdict": "reversed"}],
        "sft": {"teacher": {"steps": 40, "val_loss_initial": 3.2, "val_loss": [[20, 2.1], [40, 2.3]], "kept_step": 20,
                            "criterion": "win_rate", "curve": [{"step": 20, "val": {"loss": 2.1, "win_rate": 45.0, "rougeL": 20.0}},
                                                               {"step": 40, "val": {"loss": 2.3, "win_rate": 41.0, "rougeL": 21.0}}]},
                "student": {"steps": 60, "val_loss_initial": None, "val_loss": [[30, 2.9], [60, 2.6]]}},
        "data_sweep": {"plad": [{"share": 0.5, "win_rate": 39.0, "win_rate_ci": [33.0, 45.0], "word_count": 20.0},
                                {"share": 1.0, "win_rate": 42.0, "win_rate_ci": [36.0, 48.0], "word_count": 21.0}]},
        "relabel_sweep": {"entry": "plad", "points": [{"share": 0.0, "win_rate": 42.0, "win_rate_ci": [36.0, 48.0], "word_count": 21.0},
                                                      {"share": 1.0, "win_rate": 40.0, "win_rate_ci": [34.0, 46.0], "word_count": 20.0}]},
        "wall_s": {"jobs": 310.0, "this_invocation": 120.0, "total": 455.0}, "timings_s": {"sft": 60.0, "judges": 12.0},
    }


def test_full_report(results, tmp_path):
    json.dumps(results)  # the dict the report reads is JSON-ready, as bench writes it
    path = write_bench_report(tmp_path, results)
    report = path.read_text()
    assert path == tmp_path / "report.md"
    for text in ("+13.4 [6.2, 20.6] points on 64 prompts", "+11.7 [3.3, 19.9] points on 32 prompts (floor 5.0: passed)",
                 "32 validation prompts", "16 steps × batch 4", "LoRA r 8, alpha 32, dropout 0.1", "two-level bootstrap over seeds and whole groups of prompts",
                 "Win rate, training judge", "Δ vs SFT by the training judge", "Δ vs SeqKD [95% CI]", "Δ ROUGE-L vs SFT [95% CI]"):
        assert text in report, text
    # Selected settings, per-seed win rates and paired differences.
    assert "lr 1e-4, beta 0.5, step 16" in report and "lr 5e-5, step 8" in report and "lr 2e-4, eta 1, step 8" in report
    assert "41.0, 42.0, 43.0 (s.d. 1.0)" in report and "+7.0 [1.0, 13.0]" in report and "+3.1 [-2.0, 8.0]" in report
    seqkd_line = [line for line in report.splitlines() if line.startswith("| SeqKD |")][1]  # the paired table's line
    assert seqkd_line.count("—") >= 3  # no Δ vs itself, no training-judge numbers, no collapse
    # Collapse: in the table and listed with seed and setting.
    assert "| yes (step 8, ROUGE-L 1.2 < 4.6) |" in report
    assert "- SPPO, seed 1, lr 2e-4, eta 1: step 8, ROUGE-L 1.2 < 4.6" in report
    # Detection limit and orderings.
    assert "larger than 6.3 points" in report and "about 9.1 points" in report and "80% power" in report
    assert "larger than 7.4 points" in report and "about 10.6 points" in report and "95% interval excluding 0" in report
    assert "- PLaD paper: PLaD > SeqKD on win rate: +3.1 [-2.0, 8.0] — not separable" in report
    assert "- SPPO paper: SPPO > SFT on ROUGE-L: -9.5 [-12.0, -7.0] — reversed" in report
    # Selection grid: the chosen setting ticked, its chosen step bold; the step-0 references.
    assert "| lr 1e-4, beta 0.5 ✓ | 41.0 / 21.0 | **42.0 / 22.0** |" in report
    assert "| lr 2e-4, beta 1 | 36.0 / 21.0 | 37.0 / 22.0 |" in report
    assert "Step 0 (SFT student): 34.0 / 19.0; initial student: 28.0 / 4.6." in report
    # SFT warm-up: budget, the kept step and its criterion, validation loss initial / kept / last / lowest, and the curve of
    # the criterion with the kept step in bold; a missing initial loss is a dash, results without a choice kept the last step.
    assert "| teacher | 40 | 20 (win_rate) | 3.200 | 2.100 | 2.300 | 2.100 (step 20) |" in report
    assert "| student | 60 | 60 (last: no choice recorded) | — | 2.600 | 2.600 | 2.600 (step 60) |" in report
    assert "- teacher, validation win rate (%) at each evaluation (step: value): **20: 45.0**, 40: 41.0" in report
    assert "all told 455 s" in report and "## Cost" in report
    sections = ["Teacher–student gap", "Table 1 analogue", "Against SFT and SeqKD", "Detection limit", "Which orderings held",
                "Settings chosen on validation", "Validation curves", "Figure 2 analogue", "Figure 3 analogue", "Figure 4 analogue",
                "samples and oracle calls", "SFT warm-up", "## Cost", "## Wall time"]
    assert [report.index(s) for s in sections] == sorted(report.index(s) for s in sections)
    for png in ("val_curves", "win_rates", "relabel_share", "length_buckets", "data_share", "samples_and_oracle_calls", "sft_val_loss"):
        data = (tmp_path / "plots" / f"{png}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, png
        assert f"(plots/{png}.png)" in report


def test_report_does_not_change_the_results(results, tmp_path):
    before = copy.deepcopy(results)
    build_bench_report(tmp_path, results)
    console_summary(results)
    assert results == before


def test_minimal_results_render(results, tmp_path):
    keep = ("task", "teacher", "student", "n_test", "seeds", "steps", "batch_size", "base_rows")
    minimal = {k: results[k] for k in keep}
    minimal["rows"] = [{k: v for k, v in r.items() if k not in ("grid", "curves", "selected", "collapse", "cost", "vs_seqkd")}
                       for r in results["rows"]]
    report = write_bench_report(tmp_path, minimal).read_text()
    assert "## Table 1 analogue" in report and "| PLaD |" in report and "Against SFT" in report
    for absent in ("Teacher–student gap", "Detection limit", "Which orderings held", "Settings chosen", "Validation curves",
                   "Figure 2 analogue", "Figure 4 analogue", "SFT warm-up", "## Cost", "Δ vs SeqKD"):
        assert absent not in report, absent
    assert not (tmp_path / "plots" / "val_curves.png").exists() and not (tmp_path / "plots" / "sft_val_loss.png").exists()
    assert "| SPPO |" in report and "—" in report
    # Only the rows: still a table, and a console summary without the extra lines.
    bare = {"base_rows": results["base_rows"], "rows": []}
    assert "Table 1 analogue" in build_bench_report(tmp_path / "bare", bare)
    assert console_summary(bare).startswith("Model")


def test_console_summary(results):
    text = console_summary(results)
    header = text.splitlines()[0]
    assert header.startswith("Model") and "Win rate vs ref. (95% CI)" in header and "Win rate, training judge" in header
    assert "SFT student" in text and "PLaD" in text and "SPPO" in text
    assert "Teacher − SFT student win rate (paired): validation +11.7 [3.3, 19.9] points" in text
    assert "test +13.4 [6.2, 20.6] points on 64 prompts" in text
    assert "larger than 6.3 points" in text and "PLaD paper: PLaD > SeqKD on win rate: +3.1 [-2.0, 8.0] — not separable" in text


def test_gap_floor_not_met(results):
    results["teacher_gap_validation"] |= {"passed": False, "ignored": True}
    assert "(floor 5.0: not met, ignored as configured)" in console_summary(results)
    results["teacher_gap_validation"]["ignored"] = False
    assert "(floor 5.0: not met)" in console_summary(results)


def test_budget_and_sweep_plots_skip_without_data(results, tmp_path):
    assert plot_budget(results, tmp_path / "budget.png") is not None  # only SPPO drew samples
    assert plot_budget({**results, "costs": {}}, tmp_path / "none.png") is None
    assert plot_sweep({"plad": []}, {}, tmp_path / "sweep.png", xlabel="x", title="t") is None
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "sweep.png").exists()


def test_report_says_what_the_intervals_resampled(results, tmp_path):
    grouped = {**copy.deepcopy(results), "resampled": "groups (64 prompts in 22 groups) and seeds (3)"}
    grouped["teacher_gap"]["groups"], grouped["teacher_gap_validation"]["groups"] = 22, 11
    report = build_bench_report(tmp_path, grouped)
    assert "resampled here: groups (64 prompts in 22 groups) and seeds (3)." in report
    assert "+11.7 [3.3, 19.9] points on 32 prompts in 11 groups (floor 5.0: passed)" in report
    assert "+13.4 [6.2, 20.6] points on 64 prompts in 22 groups" in report
    assert "resampling whole groups of prompts once for both sides and each side's seeds" in report
