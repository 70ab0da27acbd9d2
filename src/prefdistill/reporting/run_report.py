"""Render a run's metrics.json as a markdown report with figures.

    from prefdistill.reporting.run_report import write_report
    write_report(Path("runs/demo"), read_json("runs/demo/metrics.json"))  # -> runs/demo/report.md

The table mirrors the PLaD paper's Table 1 (Zhang et al. 2024, arXiv 2406.02886) and the
length figure its Figure 3. Every section is optional: the report renders what is there.
Figures are drawn off-screen (`common.new_figure`).
"""
from __future__ import annotations

import math
from pathlib import Path

from prefdistill.io import atomic_write_text
from prefdistill.reporting.common import (DASH, ci_bounds, fmt, fmt_rate, in_groups, md_table, new_figure, number, row_label,
                                          save_figure)
from prefdistill.reporting.sft_report import curve_lines, run_summaries, sft_sentence, sft_table

ROW_ORDER = ("teacher", "student_init", "student_sft", "student_distill")
COLUMNS = ("Model", "Words", "ROUGE-1", "ROUGE-2", "ROUGE-L", "Win rate vs ref. (95% CI)", "T-S win rate")
TRAINING_JUDGE_COLUMN = "Win rate, training judge"  # shown when the grader is not the judge training used


def ordered_rows(metrics: dict) -> list[tuple[str, dict]]:
    """(key, row) pairs: teacher, student_init, student_sft, student_distill, then the rest."""
    rows = metrics.get("rows") or {}
    keys = [k for k in ROW_ORDER if k in rows] + [k for k in rows if k not in ROW_ORDER]
    return [(k, rows[k]) for k in keys if isinstance(rows[k], dict)]


def columns(metrics: dict) -> list[str]:
    both = any("training_judge_win_rate" in r for _, r in ordered_rows(metrics))
    return list(COLUMNS) + ([TRAINING_JUDGE_COLUMN] if both else [])


def _cells(key: str, row: dict, n_columns: int = len(COLUMNS)) -> list[str]:
    cells = [row_label(key, row), fmt(row.get("word_count"), 1), fmt(row.get("rouge1")), fmt(row.get("rouge2")),
             fmt(row.get("rougeL")), fmt_rate(row.get("win_rate"), row.get("win_rate_ci")),
             fmt_rate(row.get("ts_win_rate"), row.get("ts_win_rate_ci"))]
    if n_columns > len(COLUMNS):
        cells.append(fmt_rate(row.get("training_judge_win_rate"), row.get("training_judge_win_rate_ci")))
    return cells


# ----------------------------------------------------------------------------- tables


def render_table(metrics: dict) -> str:
    """Markdown table shaped like PLaD's Table 1, one line per row."""
    header = columns(metrics)
    return md_table(header, [_cells(k, r, len(header)) for k, r in ordered_rows(metrics)])


def console_table(metrics: dict) -> str:
    """The same table as plain aligned text for a terminal."""
    header = columns(metrics)
    body = [_cells(k, r, len(header)) for k, r in ordered_rows(metrics)]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in body])


def length_table(metrics: dict) -> str:
    """Markdown table of win rate vs reference per generation-length bucket (Figure 3)."""
    rows = [(k, r) for k, r in ordered_rows(metrics) if r.get("length_buckets")]
    if not rows:
        return ""
    buckets = [b["bucket"] for b in rows[0][1]["length_buckets"]]
    body = []
    for key, row in rows:
        by_label = {b["bucket"]: b for b in row["length_buckets"]}
        cells = [row_label(key, row)]
        for label in buckets:
            b = by_label.get(label)
            cells.append(DASH if b is None else f"{fmt(b.get('win_rate'), 1)} (n={b.get('n', 0)})")
        body.append(cells)
    return md_table(["Model"] + [f"{b} words" for b in buckets], body)


# ----------------------------------------------------------------------------- verdict


def _compare(name: str, unit: str, m_label: str, b_label: str, m, b, m_ci, b_ci) -> str:
    """One honest sentence comparing a method's number with a baseline's."""
    m, b = number(m), number(b)
    if m is None or b is None:
        return f"{name} is missing for {m_label if m is None else b_label}, so they cannot be compared on it."
    diff = m - b
    nums = f"{m:.2f}{unit} vs {b:.2f}{unit}"
    if abs(diff) < 0.005:
        return f"On {name}, {m_label} and {b_label} are tied ({nums})."
    if diff > 0:
        head = f"On {name}, {m_label} is above {b_label} by {diff:.2f} points ({nums})"
    else:
        head = f"On {name}, {m_label} does not beat {b_label}: it is {-diff:.2f} points lower ({nums})"
    m_ci, b_ci = ci_bounds(m_ci), ci_bounds(b_ci)
    if m_ci is None or b_ci is None:
        return head + "; no 95% intervals are available, so its significance is unknown."
    if m_ci[0] <= b_ci[1] and b_ci[0] <= m_ci[1]:
        joint = ", but" if diff > 0 else ";"
        return head + f"{joint} the 95% intervals overlap, so the difference is not significant on this test set size."
    better = m_label if diff > 0 else b_label
    return head + f", and the 95% intervals do not overlap: {better} is better on {name}."


def verdict(metrics: dict, method_row: str = "student_distill", baseline_row: str = "student_sft") -> str:
    """Sentences on whether `method_row` beats `baseline_row` on win rate and ROUGE-L.

    Computed from the numbers only: a higher mean whose 95% interval overlaps the
    baseline's is reported as not significant, and a lower mean is never called a win.
    """
    rows = metrics.get("rows") or {}
    missing = [k for k in (method_row, baseline_row) if not isinstance(rows.get(k), dict)]
    if missing:
        return f"No verdict: the run has no {' or '.join(repr(k) for k in missing)} row to compare."
    m, b = rows[method_row], rows[baseline_row]
    ml, bl = row_label(method_row, m), row_label(baseline_row, b)
    sentences = [
        _compare("win rate vs reference", "%", ml, bl, m.get("win_rate"), b.get("win_rate"),
                 m.get("win_rate_ci"), b.get("win_rate_ci")),
        _compare("ROUGE-L", "", ml, bl, m.get("rougeL"), b.get("rougeL"), m.get("rougeL_ci"), b.get("rougeL_ci")),
    ]
    paired = metrics.get("comparison")
    if isinstance(paired, dict) and paired.get("method_row") == method_row and paired.get("baseline_row") == baseline_row:
        sentences.append(_paired_sentence(paired, ml, bl))
    sft = sft_sentence((metrics.get("training") or {}).get("sft_student") or [], ml, ((metrics.get("sft") or {}).get("student") or {}).get("step"))
    return " ".join(sentences + ([sft] if sft else []))


def _paired_sentence(paired: dict, ml: str, bl: str) -> str:
    """The two paired tests on the same prompts, each called significant only when its
    95% interval excludes no difference (0 points; 50% head to head)."""
    wr, h2h = paired["win_rate_diff"], paired["head_to_head"]
    (lo, hi), (hlo, hhi) = wr["ci"], h2h["ci"]

    def outcome(low: float, high: float, null: float) -> str:
        if low > null:
            return f"excludes {null:g}: significantly in favour of {ml}"
        if high < null:
            return f"excludes {null:g}: significantly in favour of {bl}"
        return f"includes {null:g}: not significant"

    return (f"Paired over the same {wr['n']} prompts{in_groups(wr)}, the win-rate difference is {wr['diff']:+.2f} points "
            f"(95% CI [{lo:.2f}, {hi:.2f}], which {outcome(lo, hi, 0)}); head to head, the judge prefers "
            f"{ml}'s generation to {bl}'s on {h2h['win_rate']:.1f}% of prompts "
            f"(95% CI [{hlo:.1f}, {hhi:.1f}], ties half, which {outcome(hlo, hhi, 50)}).")


# ----------------------------------------------------------------------------- figures


def plot_length_buckets(metrics: dict, path) -> Path | None:
    """Grouped bars: win rate per length bucket, one colour per row. None if no data."""
    rows = [(k, r) for k, r in ordered_rows(metrics) if r.get("length_buckets")]
    if not rows:
        return None
    buckets = [b["bucket"] for b in rows[0][1]["length_buckets"]]
    fig = new_figure(max(6.0, 1.6 * len(buckets)), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    for i, (key, row) in enumerate(rows):
        by_label = {b["bucket"]: b for b in row["length_buckets"]}
        heights = [number((by_label.get(lb) or {}).get("win_rate")) for lb in buckets]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(buckets))]
        ax.bar(xs, [math.nan if h is None else h for h in heights], width, label=row_label(key, row))
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(buckets)), [f"{b} words" for b in buckets])
    ax.set_ylabel("win rate vs reference (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Win rate by generation length")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_training(metrics: dict, path) -> Path | None:
    """Loss against step for each training phase, one subplot each. None if no data."""
    phases = [(name, log) for name, log in (metrics.get("training") or {}).items()
              if isinstance(log, list) and any(number(r.get("loss")) is not None for r in log if isinstance(r, dict))]
    if not phases:
        return None
    fig = new_figure(4.0 * len(phases), 3.2)
    for i, (name, log) in enumerate(phases):
        ax = fig.add_subplot(1, len(phases), i + 1)
        pts = [(r.get("step", j + 1), r["loss"]) for j, r in enumerate(log)
               if isinstance(r, dict) and number(r.get("loss")) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, marker="o" if len(pts) <= 20 else None, ms=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_win_rates(metrics: dict, path) -> Path | None:
    """Win rate vs reference per row with its 95% interval as error bars. None if no data."""
    rows = [(k, r) for k, r in ordered_rows(metrics) if number(r.get("win_rate")) is not None]
    if not rows:
        return None
    fig = new_figure(max(5.0, 1.3 * len(rows)), 4.0)
    ax = fig.add_subplot()
    rates = [float(r["win_rate"]) for _, r in rows]
    cis = [ci_bounds(r.get("win_rate_ci")) or (rate, rate) for (_, r), rate in zip(rows, rates)]
    err = [[rate - lo for rate, (lo, _) in zip(rates, cis)], [hi - rate for rate, (_, hi) in zip(rates, cis)]]
    ax.bar(range(len(rows)), rates, yerr=err, capsize=4, color=[f"C{i}" for i in range(len(rows))])
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(rows)), [row_label(k, r) for k, r in rows], rotation=20, ha="right")
    ax.set_ylabel("win rate vs reference (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Win rate vs reference (95% bootstrap CI)")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- report

HOW_TO_READ = """\
- **Win rate vs ref.**: the share of test prompts on which the judge scores the model's
  generation above the dataset's reference answer; ties count half. The bracket is a
  percentile-bootstrap 95% interval that resamples whole groups of test prompts (one
  document's prompts together: a model that misreads a paper misses all of them): when two
  rows' intervals overlap, this test set is too small to tell them apart.
- **T-S win rate**: the share of test prompts on which the judge prefers this row's
  generation over the teacher's generation for the same prompt (ties half).
- **ROUGE-1/2/L**: F1 ×100 of word overlap with the reference (Porter stemming).
- **Words**: mean generation length in whitespace-separated words."""


def _kv_table(pairs: list[tuple[str, str]], header: tuple[str, str]) -> str:
    return md_table(list(header), [[k, v] for k, v in pairs])


def _judges_section(judges: dict) -> list[str]:
    """The grader, and the judge training used when it is another one."""
    grader = judges.get("eval") or {}
    if grader.get("same_as_training") or "training" not in judges:
        return _judge_section(grader, "## Judge (grades every row, and training used it too)")
    intro = ("The win rates are graded by a judge that no method optimised: it learned from other documents, with its own "
             "seed and negatives, than the training judge (the win-rate methods' oracle, relabelling, margins). The last "
             "column of the table grades with the training judge: a row that gains there but not here exploited that judge.")
    return _judge_section(grader, "## Evaluation judge (grades every row)", intro) + _judge_section(judges["training"], "## Training judge")


def _judge_section(judge: dict, title: str = "## Judge", intro: str = "") -> list[str]:
    out = [title, ""] + ([intro, ""] if intro else [])
    if judge.get("name"):
        out.append(f"Judge: `{judge['name']}`.")
    if isinstance(judge.get("trained_on"), dict):
        t = judge["trained_on"]
        out.append(f"Trained on the {t.get('half')} half of the reward data: {t.get('examples')} references of "
                   f"{t.get('documents')} documents, seed {judge.get('seed')}.")
    if judge.get("measures"):
        out.append(f"What it measures: {str(judge['measures']).rstrip('.')}.")
    acc = number(judge.get("heldout_accuracy"))
    if acc is not None:
        out.append(f"Held-out pairwise accuracy: {100 * acc:.1f}%.")
    per_kind = judge.get("per_kind") or {}
    if per_kind:
        out += ["", _kv_table([(str(k), f"{100 * v:.1f}%" if number(v) is not None else DASH)
                               for k, v in per_kind.items()], ("Held-out pair kind", "Accuracy"))]
    return out + [""]


def _timings_section(timings: dict) -> list[str]:
    def duration(v):
        v = number(v)
        return DASH if v is None else f"{v:.1f} s ({v / 60:.1f} min)"

    return ["## Timings", "", _kv_table([(str(k), duration(v)) for k, v in timings.items()], ("Phase", "Wall time")), ""]


def _summary(metrics: dict) -> str:
    who = ", ".join(f"{k} `{metrics[k]}`" for k in ("task", "teacher", "student", "method") if metrics.get(k))
    ns = {r.get("n") for _, r in ordered_rows(metrics) if r.get("n") is not None}
    size = f" on {ns.pop()} test examples" if len(ns) == 1 else ""
    return (f"Run: {who}. " if who else "") + f"Evaluated{size}. " + verdict(metrics)


def build_report(run_dir: Path, metrics: dict) -> str:
    """The report's markdown; draws the figures under run_dir/plots/ as a side effect."""
    plots = Path(run_dir) / "plots"
    title = f"# prefdistill report: {metrics.get('method', 'run')} on {metrics.get('task', 'task')}"
    out = [title, "", _summary(metrics), "", "## Results", ""]
    out += [render_table(metrics) if ordered_rows(metrics) else "No evaluation rows were recorded.", ""]
    if plot_win_rates(metrics, plots / "win_rates.png"):
        out += ["![Win rate vs reference](plots/win_rates.png)", ""]
    out += ["## How to read the table", "", HOW_TO_READ, ""]
    if metrics.get("resampled"):
        out += [f"Every interval in this report resampled {metrics['resampled']}.", ""]
    lengths = length_table(metrics)
    if lengths:
        out += ["## Win rate by generation length", "",
                "Win rate vs reference, bucketed by each row's own generation length (PLaD Figure 3).", "",
                lengths, ""]
        if plot_length_buckets(metrics, plots / "length_buckets.png"):
            out += ["![Win rate by length](plots/length_buckets.png)", ""]
    if metrics.get("judges"):
        out += _judges_section(metrics["judges"])
    elif metrics.get("judge"):
        out += _judge_section(metrics["judge"])
    if metrics.get("pairs"):
        out += ["## Preference pairs", "", "Teacher generation = chosen, student generation = rejected "
                "(PLaD step 2); relabelled/swapped count pairs changed by the reward model.", "",
                _kv_table([(str(k), str(v)) for k, v in metrics["pairs"].items()], ("Pairs", "Count")), ""]
    if metrics.get("sft"):  # the step each SFT kept, of its budget, and its validation curve
        out += ["## SFT: the kept checkpoints", "", md_table(*sft_table(sft := run_summaries(metrics))), "", *curve_lines(sft), ""]
    if metrics.get("training"):
        out += ["## Training curves", ""]
        if plot_training(metrics, plots / "training.png"):
            out += ["![Training loss](plots/training.png)", ""]
        else:
            out += ["No loss values were logged.", ""]
    if metrics.get("timings_s"):
        out += _timings_section(metrics["timings_s"])
    return "\n".join(out)


def write_report(run_dir: Path, metrics: dict) -> Path:
    """Write run_dir/report.md (atomically) and its PNGs under run_dir/plots/; return the path."""
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, build_report(Path(run_dir), metrics))
    return path
