"""What every report shares: numbers as table cells, intervals, markdown tables, figures.

    cell = fmt_rate(row.get("win_rate"), row.get("win_rate_ci"))   # "61.25 [50.0, 70.0]", or "—"
    text = md_table(["Model", "Win rate"], [[row_label(key, row), cell]])
    save_figure(new_figure(6.0, 4.0), plots / "win_rates.png")

Used by the run report, the bench report, the SFT section and the bandit lab's report.
Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so no window opens
and no global backend or figure registry is touched.
"""
from __future__ import annotations

import math
from pathlib import Path

from prefdistill.io import atomic_open

DASH = "—"  # a missing number's cell


def number(x) -> float | None:
    """A finite float, or None for missing / non-numeric / boolean / NaN / infinite values."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def fmt(x, nd: int = 2) -> str:
    """`x` with `nd` decimals, or DASH when it is not a finite number."""
    v = number(x)
    return DASH if v is None else f"{v:.{nd}f}"


def ci_bounds(ci) -> tuple[float, float] | None:
    """(low, high) of a two-number interval, or None when it is not one."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(number(c) is not None for c in ci):
        return float(ci[0]), float(ci[1])
    return None


def fmt_rate(rate, ci) -> str:
    """A rate with its interval: "61.25 [50.0, 70.0]"; the rate alone without an interval; DASH without a rate."""
    if number(rate) is None:
        return DASH
    bounds = ci_bounds(ci)
    return fmt(rate) + ("" if bounds is None else f" [{bounds[0]:.1f}, {bounds[1]:.1f}]")


def fmt_diff(d) -> str:
    """A paired difference in points: "+3.1 [-2.0, 8.0]", or DASH."""
    if not isinstance(d, dict) or number(d.get("diff")) is None:
        return DASH
    ci = ci_bounds(d.get("ci"))
    return f"{d['diff']:+.1f}" + ("" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]")


def in_groups(d: dict) -> str:
    """" in G groups" for a result that says how many groups its interval resampled, else ""."""
    return f" in {d['groups']} groups" if number(d.get("groups")) is not None else ""


def row_label(key: str, row: dict) -> str:
    """A table row's label: its "label", else its key."""
    return str(row.get("label") or key)


def md_table(header: list[str], body: list[list[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned; pipes in cells escaped."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731 - a label may contain a pipe
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def new_figure(width: float, height: float):
    """A matplotlib Figure (inches) on an off-screen Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)  # Agg: renders off-screen, never opens a window
    return fig


def save_figure(fig, path) -> Path:
    """Write a figure as PNG atomically, like every run-folder file; return its path."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    return path
