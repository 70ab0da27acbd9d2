"""The bench report's calibration section (PLaD's claim): how each row's likelihood ranks one fixed candidate set.

    lines = calibration_section(results, plots)     # markdown lines, and plots/calibration.png; [] without the numbers

Reads what `prefdistill.bench.calibration.attach_calibration` put in results.json: each row's
"calibration" and the candidate set's summary ("calibration" at the top). Formats and draws only.
"""
from __future__ import annotations

from pathlib import Path

from prefdistill.reporting.common import DASH, ci_bounds, fmt, md_table, new_figure, number, row_label, save_figure

MEASURES = (("pairwise_accuracy", "Pairwise accuracy (%)", 1), ("within_source_accuracy", "…within a source (%)", 1),
            ("cross_source_accuracy", "…across sources (%)", 1), ("kendall_tau", "Kendall τ-b", 2),
            ("rerank_win_rate", "Re-rank win rate (%)", 1))  # (key, header, decimals)
SHORT = {"pairwise_accuracy": "accuracy", "within_source_accuracy": "within", "cross_source_accuracy": "across",
         "kendall_tau": "τ", "rerank_win_rate": "re-rank"}  # the differences' headers
BASELINES = (("vs_sft", "SFT"), ("vs_seqkd", "SeqKD"))


def calibrated_rows(results: dict) -> dict[str, dict]:
    """Base rows then method rows that carry calibration numbers, by key."""
    methods = {r["name"]: r for r in results.get("rows") or [] if isinstance(r, dict) and "name" in r}
    rows = {**(results.get("base_rows") or {}), **methods}
    return {k: r for k, r in rows.items() if isinstance(r, dict) and isinstance(r.get("calibration"), dict)}


def _level(m, nd: int) -> str:
    """A measure with its interval: "61.2 [50.0, 70.1]", or a dash."""
    if not isinstance(m, dict) or number(m.get("value")) is None:
        return DASH
    ci = ci_bounds(m.get("ci"))
    return fmt(m["value"], nd) + ("" if ci is None else f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]")


def _diff(d, nd: int) -> str:
    """A paired difference with its interval: "+3.1 [-2.0, 8.0]", or a dash."""
    if not isinstance(d, dict) or number(d.get("diff")) is None:
        return DASH
    ci = ci_bounds(d.get("ci"))
    return f"{d['diff']:+.{nd}f}" + ("" if ci is None else f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]")


def level_table(rows: dict[str, dict]) -> str:
    body = [[row_label(k, r)] + [_level(r["calibration"].get(key), nd) for key, _, nd in MEASURES]
            + [str(r["calibration"].get("seeds", DASH))] for k, r in rows.items()]
    return md_table(["Row"] + [h for _, h, _ in MEASURES] + ["Seeds"], body)


def difference_table(rows: dict[str, dict]) -> str:
    header = ["Row"] + [f"Δ {SHORT[m]} vs {name}" for _, name in BASELINES for m, _, _ in MEASURES]
    body = [[row_label(k, r)] + [_diff((r["calibration"].get(key) or {}).get(m), nd) for key, _ in BASELINES for m, _, nd in MEASURES]
            for k, r in rows.items()]
    return md_table(header, body)


def plot_calibration(rows: dict[str, dict], summary: dict, path) -> Path | None:
    """Pairwise accuracy (all pairs, within a source) and re-rank win rate per row with 95% intervals; chance and the
    judge's own pick dashed."""
    if not rows:
        return None
    labels = [row_label(k, r) for k, r in rows.items()]
    picks = (("random_rerank_win_rate", "random pick"), ("oracle_rerank_win_rate", "judge's pick"))
    marks = {"pairwise_accuracy": [(50.0, "chance")], "within_source_accuracy": [(50.0, "chance")],
             "rerank_win_rate": [(number((summary.get(k) or {}).get("value")), name) for k, name in picks]}
    panels = [m for m in MEASURES if m[0] in marks and any((r["calibration"].get(m[0]) or {}).get("value") is not None
                                                           for r in rows.values())]
    fig = new_figure(4.0 * len(panels) + 2.0, 0.9 + 0.35 * len(rows))
    for i, (key, header, _) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for y, r in enumerate(rows.values()):
            m = r["calibration"].get(key) or {}
            v, ci = number(m.get("value")), ci_bounds(m.get("ci"))
            if v is not None:
                err = [[max(0.0, v - ci[0])], [max(0.0, ci[1] - v)]] if ci else None  # a percentile CI may miss v
                ax.errorbar([v], [y], xerr=err, marker="o", capsize=3, color=f"C{y % 10}")
        for j, (x, name) in enumerate(marks[key]):
            if x is not None:
                ax.axvline(x, color="grey", ls="--" if j == 0 else ":", lw=0.9, label=name)
        ax.set_yticks(range(len(labels)), labels if i == 0 else [""] * len(labels))
        ax.set(xlabel=header, xlim=(-3, 103))
        ax.invert_yaxis()
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Calibration: each row's likelihood ranking the same candidates (95% intervals)")
    return save_figure(fig, path)


def _candidates_line(summary: dict) -> str:
    s = summary.get("settings") or {}
    share = number(summary.get("teacher_share"))
    return (f"{summary.get('n_prompts')} test prompts, {fmt(summary.get('candidates_per_prompt'), 1)} candidates each "
            f"({summary.get('candidates_min')}–{summary.get('candidates_max')} after empty and repeated samples were dropped; "
            f"{s.get('teacher_samples')} sampled from the teacher and {s.get('student_samples')} from the SFT student at "
            f"temperature {s.get('temperature')}, top-p {s.get('top_p')}"
            + (f"; {100 * share:.0f}% of them the teacher's" if share is not None else "") + "), graded once by the evaluation "
            f"judge; {summary.get('ranked_prompts')} prompts have candidates the judge tells apart (accuracy and τ read those).")


def calibration_section(results: dict, plots: Path) -> list[str]:
    """The "Calibration (PLaD's claim)" section, or nothing when no row was measured."""
    rows, summary = calibrated_rows(results), results.get("calibration") or {}
    if not rows:
        return []
    out = ["## Calibration (PLaD's claim)", "", _candidates_line(summary), "",
           "Each row scores every candidate by its length-normalised log-likelihood log q(y|x)/|y|. Pairwise accuracy: of "
           "the candidate pairs the judge orders, the share the likelihood orders alike (ties ½; chance 50%). Kendall τ-b: "
           "the rank correlation of the two orders (chance 0). Within a source: the accuracy over pairs of two teacher "
           "samples or two student samples; across sources: over a teacher sample against a student sample, where a "
           "model's likelihood mostly says whose sample it is (its own higher), the order PLaD trains. Re-rank win rate: "
           "the judge's win rate against the reference of the candidate the likelihood ranks first; a random pick wins "
           f"{_level(summary.get('random_rerank_win_rate'), 1)}, "
           f"the judge's own pick {_level(summary.get('oracle_rerank_win_rate'), 1)}. Method rows pool their seeds; intervals "
           "resample whole groups of prompts (and seeds).", "", level_table(rows), "",
           "Paired differences on the same candidates (points; τ as is), groups drawn once for both sides, each side's seeds "
           "on their own:", "", difference_table(rows), ""]
    if plot_calibration(rows, summary, Path(plots) / "calibration.png"):
        out += ["![calibration](plots/calibration.png)", ""]
    return out
