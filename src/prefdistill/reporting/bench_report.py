"""The bench's report: PLaD's Table 1 and Figures 2–4 as analogues, paired comparisons, selection, cost.

    write_bench_report(run_dir / "bench" / "main", results)   # -> report.md + plots/*.png

`results` is JSON-ready, every number already computed (prefdistill.bench.numbers): this module
formats and draws only. Every part but the rows is optional and left out when missing.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from prefdistill.io import atomic_write_text
from prefdistill.reporting.bench_verdict import calibration_console, statistics_console
from prefdistill.reporting.calibration_report import calibration_section
from prefdistill.reporting.common import (DASH, ci_bounds, fmt, fmt_diff, fmt_rate, in_groups, md_table, new_figure, number, row_label,
                                          save_figure)
from prefdistill.reporting.judge_check import judge_check_console, judge_check_section
from prefdistill.reporting.phases import phase_section
from prefdistill.reporting.run_report import console_table, length_table, plot_length_buckets, plot_win_rates, render_table
from prefdistill.reporting.sft_report import curve_lines, sft_table
from prefdistill.reporting.statistics_report import detection_lines, statistics_section

METRIC_NAMES = {"win_rate": "win rate", "rougeL": "ROUGE-L", "word_count": "words"}
VAL_METRICS = (("win_rate", "validation win rate vs reference (%)"), ("rougeL", "validation ROUGE-L"))
COST_COLUMNS = (  # (field, header, decimals)
    ("rows", "Rows", 0), ("steps", "Steps", 0), ("count_samples", "Samples drawn (training)", 0), ("count_oracle_comparisons", "Oracle comparisons", 0),
    ("data_teacher_generated", "Teacher tok. generated (data)", 0), ("data_student_generated", "Student tok. generated (data)", 0),
    ("data_teacher_scored", "Teacher tok. scored (data)", 0), ("tokens_student_generated", "Student tok. generated (training)", 0),
    ("tokens_teacher_scored", "Teacher tok. scored (training)", 0), ("train_wall_s", "Train wall (s)", 1), ("eval_wall_s", "Eval wall (s)", 1),
    ("peak_memory_mb", "Peak memory (MB)", 0))


# ----------------------------------------------------------------------------- views and formatting
def _method_rows(results: dict) -> dict[str, dict]:
    """Method rows by name, in bench order."""
    return {r["name"]: r for r in results.get("rows") or [] if isinstance(r, dict) and "name" in r}


def table_view(results: dict) -> dict:
    """What report.py's table helpers take: {"rows": {key: row}}, base rows then method rows."""
    return {"rows": {**(results.get("base_rows") or {}), **_method_rows(results)}}


def _value(v) -> str:
    """A setting's value as written in a config: 1e-4, 0.5, 16, true."""
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v).lower() if isinstance(v, bool) else str(v)
    if v and (abs(v) < 1e-2 or abs(v) >= 1e5):
        mantissa, exponent = f"{v:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:g}"


def _setting(setting) -> str:
    return ", ".join(f"{k} {_value(v)}" for k, v in (setting or {}).items()) or "defaults"


def _selected(row: dict) -> str:
    sel = row.get("selected")
    if not isinstance(sel, dict):
        return DASH
    return _setting(sel.get("setting")) + (f", step {sel['step']}" if sel.get("step") is not None else "")


def _collapse_event(c: dict) -> str:
    return f"step {c.get('step')}, {METRIC_NAMES.get(c.get('metric'), c.get('metric'))} {fmt(c.get('value'), 1)} < {fmt(c.get('floor'), 1)}"


def _collapse(row: dict) -> str:
    events = row.get("collapse") or []
    more = f"; {len(events) - 1} more" if len(events) > 1 else ""
    return f"yes ({_collapse_event(events[0])}{more})" if events else DASH


# ----------------------------------------------------------------------------- figures
def plot_sweep(series: dict[str, list[dict]], labels: dict[str, str], path, *, xlabel: str, title: str) -> Path | None:
    """Win rate (with 95% interval) against a share, one line per series. None if no data."""
    series = {k: v for k, v in (series or {}).items() if v}
    if not series:
        return None
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for i, (key, points) in enumerate(series.items()):
        xs = [100 * p["share"] for p in points]
        ys = [p["win_rate"] for p in points]
        err = [[y - p["win_rate_ci"][0] for y, p in zip(ys, points)], [p["win_rate_ci"][1] - y for y, p in zip(ys, points)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=labels.get(key, key), color=f"C{i}", alpha=0.9)
    ax.set(xlabel=xlabel, ylabel="win rate vs reference (%)", ylim=(0, 100), title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_budget(results: dict, path) -> Path | None:
    """Judge win rate against samples drawn and oracle comparisons in training, one point per method."""
    rows, costs = _method_rows(results), results.get("costs") or {}
    keys = [k for k, c in costs.items() if c.get("count_samples") and number((rows.get(k) or {}).get("win_rate")) is not None]
    if not keys:
        return None
    fig = new_figure(10.0, 4.0)
    for i, (field, xlabel) in enumerate((("count_samples", "samples drawn in training"), ("count_oracle_comparisons", "oracle comparisons"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, key in enumerate(keys):
            r = rows[key]
            lo, hi = ci_bounds(r.get("win_rate_ci")) or (r["win_rate"], r["win_rate"])
            ax.errorbar([costs[key].get(field, 0)], [r["win_rate"]], yerr=[[r["win_rate"] - lo], [hi - r["win_rate"]]],
                        marker="o", capsize=3, color=f"C{j}", label=row_label(key, r))
        ax.set(xlabel=xlabel, ylabel="win rate vs reference (%)", ylim=(0, 100))
    fig.axes[0].legend(fontsize=8)
    fig.suptitle("Win-rate methods: what they reach for the samples and oracle calls they use")
    return save_figure(fig, path)


def _mean_curve(curves: dict, metric: str) -> list[tuple[int, float]]:
    """(step, mean over seeds) of one metric from {seed: {step: scores}}."""
    by_step: dict[int, list[float]] = {}
    for per_step in (curves or {}).values():
        for step, scores in (per_step or {}).items():
            v = number((scores or {}).get(metric))
            if v is not None:
                by_step.setdefault(int(step), []).append(v)
    return [(s, statistics.fmean(v)) for s, v in sorted(by_step.items())]


def plot_val_curves(results: dict, path) -> Path | None:
    """Validation win rate and ROUGE-L against step, one line per method (its chosen setting, mean over seeds)."""
    rows = [(k, r) for k, r in _method_rows(results).items() if r.get("curves")]
    if not rows:
        return None
    ref = results.get("val_reference") or {}
    sft, init = ref.get("student_sft") or {}, ref.get("student_init") or {}
    fig = new_figure(11.0, 4.2)
    for i, (metric, ylabel) in enumerate(VAL_METRICS):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, (key, r) in enumerate(rows):
            pts, start = _mean_curve(r["curves"], metric), number(sft.get(metric))
            if start is not None and (not pts or pts[0][0] != 0):
                pts = [(0, start)] + pts
            collapsed = bool(r.get("collapse"))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="x" if collapsed else "o", ms=5, color=f"C{j}",
                    label=row_label(key, r) + (" (collapsed)" if collapsed else ""))
        for scores, name, colour in ((sft, "SFT student", "grey"), (init, "initial student", "black")):
            v = number(scores.get(metric))
            if v is not None:
                ax.axhline(v, color=colour, ls="--", lw=0.9, label=name)
        ax.set(xlabel="training step", ylabel=ylabel)
    fig.axes[0].legend(fontsize=8)
    fig.suptitle("Validation scores of each method's chosen setting (mean over seeds; step 0 = SFT student)")
    return save_figure(fig, path)


def _loss_points(log: dict) -> list[tuple[int, float]]:
    pts = [(0, float(log["val_loss_initial"]))] if number(log.get("val_loss_initial")) is not None else []
    return pts + [(int(s), float(v)) for s, v in (log.get("val_loss") or []) if number(v) is not None]


def plot_sft_loss(sft: dict, path) -> Path | None:
    """Validation loss against SFT step, one panel per model; the initial loss at step 0. None if no data."""
    models = [(k, v) for k, v in (sft or {}).items() if isinstance(v, dict) and _loss_points(v)]
    if not models:
        return None
    fig = new_figure(4.5 * len(models), 3.4)
    for i, (name, log) in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        pts = _loss_points(log)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=f"C{i}")
        if log.get("kept_step") is not None:  # the weights every later stage starts from
            ax.axvline(log["kept_step"], color="grey", ls=":", lw=1.0, label=f"kept: step {log['kept_step']}")
            ax.legend(fontsize=8)
        ax.set(title=f"{name} SFT", xlabel="step", ylabel="validation loss")
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- sections
def _intro(results: dict) -> list[str]:
    lora = results.get("lora") or {}
    tuning = (f"LoRA r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}" if lora.get("enabled")
              else "full fine-tuning" if lora else "")
    n_val = f", {results['n_val']} validation prompts" if results.get("n_val") is not None else ""
    judges = results.get("judges") or {}
    graders = "".join(f" {role.capitalize()} judge `{j['name']}`." for role, j in
                      (("evaluation", judges.get("eval")), ("training", judges.get("training"))) if isinstance(j, dict) and j.get("name"))
    text = (f"Teacher `{results.get('teacher')}`, student `{results.get('student')}`, task `{results.get('task')}`; "
            f"{results.get('n_test')} test prompts{n_val}; seeds {results.get('seeds')}; every method trains "
            f"{results.get('steps')} steps × batch {results.get('batch_size')} from the same SFT student"
            + (f" ({tuning})." if tuning else ".") + graders)
    return ["# prefdistill bench", "", text, ""]


def _gap_line(results: dict) -> str:
    val, test = results.get("teacher_gap_validation"), results.get("teacher_gap")
    parts = []
    if isinstance(val, dict) and number(val.get("diff")) is not None:
        status = "passed" if val.get("passed") else "not met, ignored as configured" if val.get("ignored") else "not met"
        floor = f" (floor {fmt(val.get('floor'), 1)}: {status})" if number(val.get("floor")) is not None else ""
        parts.append(f"validation {fmt_diff(val)} points on {val.get('n')} prompts{in_groups(val)}{floor}")
    if isinstance(test, dict) and number(test.get("diff")) is not None:
        parts.append(f"test {fmt_diff(test)} points on {test.get('n')} prompts{in_groups(test)}")
    return ("Teacher − SFT student win rate (paired): " + "; ".join(parts) + ".") if parts else ""


def _gap_section(results: dict) -> list[str]:
    line = _gap_line(results)
    return ["## Teacher–student gap", "", line, "", "This gap is the room distillation has: a method gains over the SFT "
            "student only by closing part of it, so a gap whose interval reaches 0 leaves a method nothing to win.", ""] if line else []


def _table1(view: dict, resampled: str | None = None) -> list[str]:
    rows = view["rows"].values()
    judge = (" The last column grades with the training judge (the oracle the win-rate methods optimised)."
             if any("training_judge_win_rate" in r for r in rows) else "")
    return ["## Table 1 analogue", "", render_table(view), "",
            "Win rates: the evaluation judge's score above the reference's (ties half). Method rows pool every training "
            "seed; their 95% intervals are a two-level bootstrap over seeds and whole groups of prompts (base rows: over "
            "groups), since one document's prompts fail together" + (f"; resampled here: {resampled}." if resampled else ".") + judge, ""]


def _per_seed(row: dict) -> str:
    seeds = row.get("per_seed_win_rate") or []
    sd = f" (s.d. {fmt(row['win_rate_seed_sd'], 1)})" if number(row.get("win_rate_seed_sd")) is not None and len(seeds) > 1 else ""
    return (", ".join(fmt(x, 1) for x in seeds) or DASH) + sd


def _paired_section(results: dict) -> list[str]:
    rows = _method_rows(results)
    if not rows:
        return []
    seqkd = any(isinstance(r.get("vs_seqkd"), dict) for r in rows.values())
    judge = any(isinstance(r.get("vs_sft_training_judge"), dict) for r in rows.values())
    header = (["Method", "Selected", "Win rate per seed", "Δ win rate vs SFT [95% CI]"] + (["Δ vs SeqKD [95% CI]"] if seqkd else [])
              + ["Δ ROUGE-L vs SFT [95% CI]"] + (["Δ vs SFT by the training judge"] if judge else []) + ["Collapse"])
    body = [[row_label(k, r), _selected(r), _per_seed(r), fmt_diff(r.get("vs_sft"))] + ([fmt_diff(r.get("vs_seqkd"))] if seqkd else [])
            + [fmt_diff(r.get("rougeL_vs_sft"))] + ([fmt_diff(r.get("vs_sft_training_judge"))] if judge else []) + [_collapse(r)]
            for k, r in rows.items()]
    out = ["## Against SFT and SeqKD (paired, two-level bootstrap)", "", md_table(header, body), "",
           "Each Δ compares a method with the baseline on the same test prompts, resampling whole groups of prompts once "
           "for both sides and each side's seeds (points). It is significant when its interval excludes 0.", ""]
    events = [(k, r, c) for k, r in rows.items() for c in (r.get("collapse") or [])]
    if events:
        out += ["Collapse: a run (a grid point on the first seed, or the chosen setting on another seed) scored below the "
                "initial student on validation:", ""]
        out += [f"- {row_label(k, r)}, seed {c.get('seed')}, {_setting(c.get('setting'))}: {_collapse_event(c)}" for k, r, c in events]
        out.append("")
    return out


def _ordering_lines(results: dict) -> list[str]:
    return [f"{o.get('paper')} paper: {o.get('claim')} on {METRIC_NAMES.get(o.get('metric'), o.get('metric'))}: "
            f"{fmt_diff(o)} — {o.get('verdict')}" for o in (results.get("orderings") or []) if isinstance(o, dict)]


def _selection_table(row: dict, metric: str) -> str:
    other = "rougeL" if metric == "win_rate" else "win_rate"
    grid = [g for g in row.get("grid") or [] if isinstance(g, dict)]
    steps = sorted({s for g in grid for s in (g.get("val") or {})}, key=int)
    sel = row.get("selected") or {}
    body = []
    for g in grid:
        chosen = g.get("setting") == sel.get("setting")
        cells = []
        for s in steps:
            v = (g.get("val") or {}).get(s)
            cell = DASH if v is None else f"{fmt(v.get(metric), 1)} / {fmt(v.get(other), 1)}"
            cells.append(f"**{cell}**" if chosen and str(sel.get("step")) == s and v is not None else cell)
        body.append([_setting(g.get("setting")) + (" ✓" if chosen else "")] + cells)
    return md_table(["Setting"] + [f"step {s}" for s in steps], body)


def _selection_section(results: dict) -> list[str]:
    rows = [(k, r) for k, r in _method_rows(results).items() if r.get("grid")]
    if not rows:
        return []
    metric = results.get("select_metric") or "win_rate"
    other = "rougeL" if metric == "win_rate" else "win_rate"
    out = ["## Settings chosen on validation", "",
           f"Each cell: validation {METRIC_NAMES[metric]} / {METRIC_NAMES[other]} of a candidate at a scored step (first seed). "
           f"The chosen setting (✓) and step (bold) maximise validation {METRIC_NAMES[metric]}.", ""]
    ref = results.get("val_reference") or {}
    sft, init = ref.get("student_sft") or {}, ref.get("student_init") or {}
    if sft or init:
        out += [f"Step 0 (SFT student): {fmt(sft.get(metric), 1)} / {fmt(sft.get(other), 1)}; initial student: "
                f"{fmt(init.get(metric), 1)} / {fmt(init.get(other), 1)}.", ""]
    for key, row in rows:
        out += [f"### {row_label(key, row)}", "", _selection_table(row, metric), ""]
    return out


def _sweep_sections(results: dict, view: dict, plots: Path) -> list[str]:
    labels = {k: row_label(k, r) for k, r in view["rows"].items()}
    out = []
    relabel = results.get("relabel_sweep") or {}
    if plot_sweep({relabel.get("entry"): relabel.get("points")}, labels, plots / "relabel_share.png", xlabel="judge-relabelled pairs (%)",
                  title="Figure 2 analogue: win rate vs share of real preference pairs"):
        pts = relabel["points"]
        out += ["## Figure 2 analogue: share of judge-relabelled pairs", "", "![relabel](plots/relabel_share.png)", "",
                md_table(["Relabelled", "Win rate (95% CI)"], [[f"{100 * p['share']:.0f}%", fmt_rate(p["win_rate"], p["win_rate_ci"])] for p in pts]), ""]
    if plot_length_buckets(view, plots / "length_buckets.png"):
        out += ["## Figure 3 analogue: win rate by generation length", "", "![length](plots/length_buckets.png)", "", length_table(view), ""]
    data = results.get("data_sweep") or {}
    if plot_sweep(data, labels, plots / "data_share.png", xlabel="share of distillation data (%)", title="Figure 4 analogue: win rate vs data share"):
        shares = sorted({p["share"] for v in data.values() for p in v})
        body = []
        for key, pts in data.items():
            by = {p["share"]: p for p in pts}
            body.append([labels.get(key, key)] + [fmt_rate(by[s]["win_rate"], by[s]["win_rate_ci"]) if s in by else DASH for s in shares])
        out += ["## Figure 4 analogue: share of distillation data", "", "![data](plots/data_share.png)", "",
                md_table(["Method"] + [f"{100 * s:g}%" for s in shares], body), ""]
    return out


def _sft_section(results: dict, plots: Path) -> list[str]:
    sft = {k: v for k, v in (results.get("sft") or {}).items() if isinstance(v, dict)}
    if not sft:
        return []
    out = ["## SFT warm-up", "", "Each model was fine-tuned on the references before distillation and kept its best "
           "evaluation's weights (the chosen step, out of its budget, by the criterion shown: under the bench, the select "
           "metric that chooses every method's step); validation loss before (initial), at the kept step, after the last "
           "step, and at its lowest.", "", md_table(*sft_table(sft)), "", *curve_lines(sft), ""]
    if plot_sft_loss(sft, plots / "sft_val_loss.png"):
        out += ["![SFT validation loss](plots/sft_val_loss.png)", ""]
    return out


def _cost_table(results: dict) -> str:
    costs = results.get("costs") or {k: {"label": row_label(k, r), **r["cost"]} for k, r in _method_rows(results).items()
                                         if isinstance(r.get("cost"), dict)}
    if not costs:
        return ""
    body = [[c.get("label", k)] + [fmt(c.get(f, 0), nd) for f, _, nd in COST_COLUMNS] for k, c in costs.items()]
    kind = next((c["memory_kind"] for c in costs.values() if c.get("memory_kind")), "")
    return md_table(["Method"] + [h for _, h, _ in COST_COLUMNS], body) + f"\n\nMeans over seeds. Memory: peak {kind} during training."


def _cost_sections(results: dict) -> list[str]:
    table = _cost_table(results)
    out = (["## Cost", "", table, ""] if table else []) + phase_section(results)
    timings, wall = results.get("timings_s") or {}, results.get("wall_s") or {}
    if timings or wall:
        shared = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if number(v) is not None)
        total = f"; all told {wall['total']:.0f} s" if number(wall.get("total")) is not None else ""
        out += ["## Wall time", "", f"Shared stages: {shared or DASH}. Bench jobs (training + evaluation, summed over all "
                f"invocations): {wall.get('jobs', 0):.0f} s; this invocation: {wall.get('this_invocation', 0):.0f} s{total}.", ""]
    return out


# ----------------------------------------------------------------------------- report
def build_bench_report(folder: Path, results: dict) -> str:
    """The report's markdown; draws the figures under folder/plots/ as a side effect."""
    plots, view = Path(folder) / "plots", table_view(results)
    lines = _intro(results) + _gap_section(results) + _table1(view, results.get("resampled")) + _paired_section(results)
    lines += statistics_section(results, plots)
    orderings = _ordering_lines(results)
    if orderings:
        lines += ["## Which orderings held", ""] + [f"- {x}" for x in orderings] + [""]
    lines += calibration_section(results, plots) + judge_check_section(results) + _selection_section(results)
    if plot_val_curves(results, plots / "val_curves.png"):
        lines += ["## Validation curves", "", "Dashed: the SFT student and the initial student on validation; a method "
                  "marked (collapsed) fell below the initial student on some seed.", "", "![validation curves](plots/val_curves.png)", ""]
    if plot_win_rates(view, plots / "win_rates.png"):
        lines += ["## Win rates", "", "![win rates](plots/win_rates.png)", ""]
    lines += _sweep_sections(results, view, plots)
    if plot_budget(results, plots / "samples_and_oracle_calls.png"):
        lines += ["## Win-rate methods: samples and oracle calls", "", "![budget](plots/samples_and_oracle_calls.png)", ""]
    return "\n".join(lines + _sft_section(results, plots) + _cost_sections(results))


def write_bench_report(folder: Path, results: dict) -> Path:
    """Write folder/report.md (atomically) and its PNGs under folder/plots/; return the path."""
    path = Path(folder) / "report.md"
    atomic_write_text(path, build_bench_report(Path(folder), results))
    return path


def console_summary(results: dict) -> str:
    """The table as aligned text, then the teacher gap, the three statistics, calibration, detection limits, orderings."""
    extra = ([_gap_line(results)] + statistics_console(results) + calibration_console(results) + detection_lines(results)
             + _ordering_lines(results) + judge_check_console(results))
    return console_table(table_view(results)) + "\n\n" + "\n".join(x for x in extra if x)
