"""The bench report's comparison section: three statistics against SFT and SeqKD, a forest plot, the head-to-head map.

    lines = statistics_section(results, plots)    # markdown lines; draws plots/forest.png and plots/head_to_head.png
    detection_lines(results)                      # one sentence per statistic and baseline (the console prints them too)

Reads what `prefdistill.bench.comparisons` wrote: each row's `vs_*` (win rate), `soft_vs_*` (soft
win rate) and `head_to_head.vs_*`, the top-level `head_to_head_matrix` and `detection_limit`.
Results written before the soft win rate (a `detection_limit` with `vs_sft` at its top) render
the win-rate line only.
"""
from __future__ import annotations

from pathlib import Path

from prefdistill.reporting.common import DASH, ci_bounds, fmt, fmt_diff, md_table, new_figure, number, row_label, save_figure

NAMES = {"win_rate": "win rate vs reference", "soft_win_rate": "soft win rate", "head_to_head": "head-to-head"}
BASELINES = (("sft", "SFT"), ("seqkd", "SeqKD"))


def comparison(row: dict, statistic: str, suffix: str) -> dict | None:
    """The row's comparison on a statistic against a baseline, as {"diff", "ci"} in points (head-to-head: rate − 50)."""
    if statistic == "head_to_head":
        h = (row.get("head_to_head") or {}).get(f"vs_{suffix}")
        if not isinstance(h, dict) or number(h.get("rate")) is None:
            return None
        ci = ci_bounds(h.get("ci"))
        return {"diff": h["rate"] - 50.0, "ci": None if ci is None else [ci[0] - 50.0, ci[1] - 50.0], "rate": h["rate"]}
    d = row.get(("vs_{}" if statistic == "win_rate" else "soft_vs_{}").format(suffix))
    return d if isinstance(d, dict) else None


def h2h_cell(row: dict, suffix: str, unit: str = "") -> str:
    """The row's head-to-head rate against a baseline with its interval, "68.1 [52.8, 83.3]" (`unit` after the rate)."""
    h = (row.get("head_to_head") or {}).get(f"vs_{suffix}")
    if not isinstance(h, dict) or number(h.get("rate")) is None:
        return DASH
    ci = ci_bounds(h.get("ci"))
    return fmt(h["rate"], 1) + unit + ("" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]")


def statistics_table(results: dict) -> str:
    rows = [r for r in results.get("rows") or [] if isinstance(r, dict)]
    header = ["Method", "Soft win rate"] + [f"{h} vs {b}" for b in ("SFT", "SeqKD")
                                           for h in ("Δ win rate", "Δ soft win rate", "Head-to-head (%)")]
    body = [[row_label(r.get("name", "?"), r), fmt(r.get("soft_win_rate"), 1)]
            + [c for s, _ in BASELINES for c in (fmt_diff(r.get(f"vs_{s}")), fmt_diff(r.get(f"soft_vs_{s}")), h2h_cell(r, s))]
            for r in rows]
    return md_table(header, body)


def detection_lines(results: dict) -> list[str]:
    """Per statistic and baseline: the difference the bench resolves and the one it detects with 80% power."""
    limits = results.get("detection_limit") or {}
    by_stat = {"win_rate": limits} if "vs_sft" in limits or "vs_seqkd" in limits else limits
    out = []
    for statistic, name in NAMES.items():
        unit = "points (of preference rate, around 50)" if statistic == "head_to_head" else "points"
        for suffix, baseline in BASELINES:
            d = (by_stat.get(statistic) or {}).get(f"vs_{suffix}")
            if not isinstance(d, dict) or number(d.get("significant_at")) is None:
                continue
            level, power = number(d.get("level")) or 0.95, number(d.get("power")) or 0.8
            out.append(f"{name[0].upper() + name[1:]} against {baseline}: a difference larger than {fmt(d['significant_at'], 1)} "
                       f"{unit} has a {100 * level:g}% interval excluding 0; one of about {fmt(d.get('detectable_with_power'), 1)} "
                       f"points is detected with {100 * power:g}% power (median over {d.get('n')} comparisons).")
    snr, best = limits.get("signal_to_noise") or {}, limits.get("most_sensitive")
    if best in NAMES and snr:
        ratios = ", ".join(f"{NAMES[k]} {fmt(v, 2)}" for k, v in snr.items())
        out.append(f"Most sensitive here: the {NAMES[best]} (median |effect| / interval half-width over the same comparisons: {ratios}).")
    return out


def plot_forest(results: dict, path) -> Path | None:
    """Every method's paired differences against SFT and SeqKD, one panel per statistic (head-to-head as rate − 50)."""
    rows = [r for r in results.get("rows") or [] if isinstance(r, dict)]
    panels = [s for s in NAMES if any(comparison(r, s, b) for r in rows for b, _ in BASELINES)]
    if not panels:
        return None
    fig = new_figure(4.2 * len(panels), 0.45 * len(rows) + 1.6)
    for k, statistic in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for j, (suffix, baseline) in enumerate(BASELINES):
            for i, r in enumerate(rows):
                d = comparison(r, statistic, suffix)
                ci = ci_bounds(d.get("ci")) if d else None
                if d is None or ci is None:
                    continue
                y = i + (0.15 if j else -0.15)  # a percentile interval may miss its point estimate on few groups: clipped
                ax.errorbar([d["diff"]], [y], xerr=[[max(0.0, d["diff"] - ci[0])], [max(0.0, ci[1] - d["diff"])]], fmt="o" if j == 0 else "s",
                            color=f"C{j}", capsize=2, markersize=4, label=f"vs {baseline}" if i == 0 else None)
        ax.axvline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_yticks(range(len(rows)), [row_label(r.get("name", "?"), r) for r in rows] if k == 0 else [""] * len(rows))
        ax.invert_yaxis()
        xlabel = "head-to-head rate − 50 (points)" if statistic == "head_to_head" else f"Δ {NAMES[statistic]} (points)"
        ax.set(xlabel=xlabel, title=NAMES[statistic])
        if k == 0:
            ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def plot_head_to_head(results: dict, path) -> Path | None:
    """The head-to-head matrix as a heat map: cell (i, j) = how often row i's output beats row j's (%)."""
    m = results.get("head_to_head_matrix") or {}
    rates, labels = m.get("rates"), m.get("labels")
    if not rates or not labels or len(rates) < 2:
        return None
    n = len(labels)
    fig = new_figure(0.55 * n + 2.5, 0.5 * n + 1.5)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="RdBu", vmin=20, vmax=80)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{rates[i][j]:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(title="head-to-head: row beats column (%)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return save_figure(fig, path)


def statistics_section(results: dict, plots: Path) -> list[str]:
    """"Three statistics" (table, forest plot, heat map) and "Detection limit"; empty when the results have neither."""
    out = []
    if any(isinstance(r, dict) and "soft_win_rate" in r for r in results.get("rows") or []):
        scale = results.get("soft_scale") or {}
        out += ["## Three statistics against SFT and SeqKD", "", statistics_table(results), "",
                "Soft win rate: the mean of σ((s(y) − s(ref)) / scale) under the evaluation judge"
                + (f" ({scale['how']}; scale {fmt(scale.get('scale'), 3)})" if scale.get("how") else "") + ". Head-to-head: "
                "the share of test prompts on which the evaluation judge prefers the method's output over the baseline's "
                "(ties half, every pair of seeds); 50 is a draw. Every interval resamples whole groups of prompts and each "
                "side's seeds.", ""]
        if plot_forest(results, plots / "forest.png"):
            out += ["![paired differences](plots/forest.png)", ""]
        if plot_head_to_head(results, plots / "head_to_head.png"):
            out += ["![head-to-head](plots/head_to_head.png)", ""]
    detection = detection_lines(results)
    if detection:
        out += ["## Detection limit", ""] + [f"- {x}" for x in detection] + [""]
    return out
