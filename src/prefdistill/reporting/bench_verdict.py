"""What a bench's numbers mean, in sentences: the console's three statistics and calibration, and a method's verdict.

    statistics_console(results)           # one line per method row: soft win rate, head-to-heads (vs SFT, vs SeqKD)
    calibration_console(results)          # one line: each row's pairwise accuracy of its likelihood
    verdict_lines(results, "plad")        # the method against SFT and SeqKD on each statistic, and what that means

Reads results.json as `prefdistill.bench.numbers.summarize` and `bench.comparisons` wrote it; formats only.
"""
from __future__ import annotations

from prefdistill.reporting.calibration_report import calibrated_rows
from prefdistill.reporting.common import ci_bounds, fmt, fmt_diff, number, row_label
from prefdistill.reporting.statistics_report import BASELINES, NAMES, comparison, h2h_cell

TOL = 1e-9  # an interval end this close to 0 is 0 (bootstrap sums leave 1e-15)


def outcome(d: dict | None) -> str | None:
    """"better" (interval above 0), "worse" (below 0), "not separable", or None without an interval."""
    ci = ci_bounds((d or {}).get("ci"))
    if ci is None:
        return None
    return "better" if ci[0] > TOL else "worse" if ci[1] < -TOL else "not separable"


def statistics_console(results: dict) -> list[str]:
    out = []
    for row in (r for r in results.get("rows") or [] if isinstance(r, dict) and number(r.get("soft_win_rate")) is not None):
        ci = ci_bounds(row.get("soft_win_rate_ci"))
        level = fmt(row["soft_win_rate"], 1) + ("" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]")
        parts = [f"Δ soft {fmt_diff(row.get(f'soft_vs_{s}'))}, head-to-head {h2h_cell(row, s, '%')} vs {name}" for s, name in BASELINES
                 if row.get(f"soft_vs_{s}") is not None]
        out.append(f"{row_label(row.get('name', '?'), row)}: soft win rate {level}" + ("; " if parts else "") + "; ".join(parts))
    return out


def calibration_console(results: dict) -> list[str]:
    cells = []
    for key, row in calibrated_rows(results).items():
        acc = row["calibration"].get("pairwise_accuracy")
        if isinstance(acc, dict) and number(acc.get("value")) is not None:
            ci = ci_bounds(acc.get("ci"))
            cells.append(f"{row_label(key, row)} {acc['value']:.1f}" + ("" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]"))
    return ["Calibration, pairwise accuracy of each row's likelihood against the judge (%; chance 50): " + ", ".join(cells)] if cells else []


# The statistic the verdict reads, fixed in advance (not the one that came out most significant, which would pick
# among three tests after seeing them): the soft win rate, the papers' scale with the lowest variance.
PRIMARY = "soft_win_rate"


def _against(row: dict, suffix: str, name: str) -> str:
    parts = []
    for statistic, label in NAMES.items():
        d = comparison(row, statistic, suffix)
        if d is not None and outcome(d):
            value = h2h_cell(row, suffix, "%") if statistic == "head_to_head" else fmt_diff(d)
            parts.append(f"{label} {value} ({outcome(d)})")
    return f"{row_label(row.get('name', '?'), row)} against {name}: " + "; ".join(parts) + "." if parts else ""


def _calibration_line(row: dict, label: str) -> str:
    cal = row.get("calibration") or {}
    acc, diff = cal.get("pairwise_accuracy"), (cal.get("vs_sft") or {}).get("pairwise_accuracy")
    if not isinstance(acc, dict) or number(acc.get("value")) is None or not isinstance(diff, dict):
        return ""
    verb = {"better": "better", "worse": "worse", "not separable": "no better or worse"}.get(outcome(diff) or "", "?")
    ci = ci_bounds(acc.get("ci"))
    below = ", below chance: it prefers the candidates the judge ranks lower" if ci is not None and ci[1] < 50 else ""
    return (f"Calibration (PLaD's claim): {label}'s likelihood orders the judge's candidate pairs right on {acc['value']:.1f}% "
            f"(chance 50{below}), {verb} than the SFT student's: {fmt_diff(diff)} points.")


def _meaning(results: dict, row: dict, label: str) -> str:
    stat = PRIMARY
    name = NAMES[stat]
    vs_sft, vs_seqkd = (outcome(comparison(row, stat, s)) for s in ("sft", "seqkd"))
    limit = ((results.get("detection_limit") or {}).get(stat) or {}).get("vs_sft") or {}
    resolves = f" (here a difference must exceed about {fmt(limit.get('significant_at'), 1)} points to show)" \
        if number(limit.get("significant_at")) is not None else ""
    if vs_sft == "better":
        if vs_seqkd == "better":
            return f"{label} beat SFT and SeqKD on the {name}: its objective gained more than imitating the teacher's samples."
        tail = "SeqKD did better still" if vs_seqkd == "worse" else "it could not be told from SeqKD"
        return (f"{label} beat SFT on the {name}, but {tail}: the gain may come from the teacher's text, which SeqKD "
                "imitates with plain cross-entropy, rather than from the method's own objective.")
    if vs_sft == "worse":
        return f"{label} did worse than the SFT student on the {name}: distilling this way cost quality here."
    return (f"{label} could not be told from the SFT student on the {name}{resolves}: no evidence either way at this "
            "size; `prefdistill bench bench` measures on 300 test prompts and 3 seeds.")


def verdict_lines(results: dict, method: str) -> list[str]:
    """The method's comparisons, its calibration and what they mean; the teacher gap first (room to gain or not)."""
    row = next((r for r in results.get("rows") or [] if isinstance(r, dict) and r.get("name") == method), None)
    if row is None:
        return [f"Verdict: no row named {method!r} in these results."]
    label = row_label(method, row)
    gap = results.get("teacher_gap") or {}
    room = outcome(gap)
    lines = [f"Teacher − SFT student on test: {fmt_diff(gap)} points of win rate: "
             + ("the teacher is clearly better, so there was room to gain." if room == "better" else
                "the teacher is not clearly better here, so no method can be expected to gain from it.")]
    lines += [x for x in (_against(row, s, n) for s, n in BASELINES) if x]
    lines += [x for x in (_calibration_line(row, label),) if x]
    lines.append("Verdict: " + _meaning(results, row, label))
    return lines
