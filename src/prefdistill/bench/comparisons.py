"""The bench's three statistics per row, their paired comparisons and their detection limits (no model runs here).

    add_statistics(rows, base_rows, outcomes, seqkd="seqkd", scale=scored.soft_scale, opts=opts)
    limits = detection_by_statistic(rows)          # results.json "detection_limit"

1. **win rate vs reference** (the papers' Table 1; 1 / ½ / 0 per prompt): `vs_sft`, `vs_seqkd`;
2. **soft win rate**: mean P(y ≻ ref) = σ((s(y) − s(ref)) / scale) under the evaluation judge
   (`prefdistill.evaluation.paired`; scale 1 for a Bradley–Terry judge): `soft_win_rate`,
   `soft_win_rate_ci`, `soft_vs_sft`, `soft_vs_seqkd`;
3. **head-to-head**: the share of test prompts on which the evaluation judge prefers the row's
   output over SFT's or SeqKD's (ties half, every seed pair): `head_to_head.vs_sft/vs_seqkd`,
   and a matrix over every row (`head_to_head_matrix`, point estimates).

Every interval is the two-level group × seed bootstrap of `evaluation.bootstrap`. A
comparison's detection limit is read off its interval's half-width; the head-to-head's is in
points of preference rate around 50 (a rate of 50 + h means the row wins h points more often
than it loses half the ties), not of win rate against the reference. Which statistic is the
most sensitive is decided by the numbers: the median, over the comparisons, of |effect| /
half-width (the effect of a head-to-head is its rate − 50).
"""
from __future__ import annotations

import numpy as np

from prefdistill.evaluation.bootstrap import bootstrap_ci, detection_limit, head_to_head_seeds, paired_difference_seeds
from prefdistill.evaluation.paired import head_to_head_outcomes

SFT = "SFT"  # the outcomes key of the SFT student (bench.numbers)
STATISTICS = ("win_rate", "soft_win_rate", "head_to_head")
# statistic -> (row key of its comparison against a baseline, the field holding the effect, the effect's null value)
COMPARISON_KEYS = {"win_rate": ("vs_{}", "diff", 0.0), "soft_win_rate": ("soft_vs_{}", "diff", 0.0),
                   "head_to_head": ("head_to_head.vs_{}", "rate", 50.0)}
BASELINES = (("sft", SFT), ("seqkd", None))
# an interval narrower than this (points) compares outputs that are the same texts: its width is float noise from
# scoring them in other batches or threads, and its effect / width ratio means nothing
NOISE_FLOOR = 1e-3


def _comparison(row: dict, statistic: str, baseline: str) -> dict | None:
    key = COMPARISON_KEYS[statistic][0].format(baseline)
    if "." in key:
        outer, inner = key.split(".")
        return (row.get(outer) or {}).get(inner)
    return row.get(key)


def add_statistics(rows: list[dict], base_rows: dict[str, dict], outcomes: dict[str, dict], *, seqkd: str | None,
                   opts: dict) -> dict:
    """Add the soft win rate and the head-to-heads to each method row and base row (in place); the matrix.

    outcomes: row name ("SFT" for the SFT student, "teacher", each entry) -> {"soft_win_rate": (S, N),
    "scores": (S, N) the evaluation judge's scores}. Returns {"rows": names, "labels", "rates": M} with
    M[i][j] the head-to-head rate ×100 of row i over row j (50 on the diagonal).
    """
    for name, row in base_rows.items():
        key = {"student_sft": SFT}.get(name, name)
        if key in outcomes:
            _soft(row, outcomes[key], opts)
    for row in rows:
        mine = outcomes[row["name"]]
        _soft(row, mine, opts)
        row["head_to_head"] = {}
        for suffix, other in ((s, o or seqkd) for s, o in BASELINES):
            usable = other is not None and other != row["name"] and other in outcomes
            row[f"soft_vs_{suffix}"] = (paired_difference_seeds(mine["soft_win_rate"], outcomes[other]["soft_win_rate"], **opts)
                                        if usable else None)
            row["head_to_head"][f"vs_{suffix}"] = (head_to_head_seeds(head_to_head_outcomes(mine["scores"], outcomes[other]["scores"]), **opts)
                                                   if usable else None)
    return head_to_head_matrix(outcomes, {"teacher": "Teacher", SFT: "SFT student"} | {r["name"]: r["label"] for r in rows})


def _soft(row: dict, outcome: dict, opts: dict) -> None:
    mean, low, high = bootstrap_ci(outcome["soft_win_rate"], **opts)
    row["soft_win_rate"], row["soft_win_rate_ci"] = 100.0 * mean, [100.0 * low, 100.0 * high]


def head_to_head_matrix(outcomes: dict[str, dict], labels: dict[str, str]) -> dict:
    """Every row against every other (point estimates ×100, pooled over both rows' seeds): the report's heat map."""
    names = [n for n in labels if n in outcomes]
    rates = [[50.0 if a == b else float(100.0 * head_to_head_outcomes(outcomes[a]["scores"], outcomes[b]["scores"]).mean())
              for b in names] for a in names]
    return {"rows": names, "labels": [labels[n] for n in names], "rates": rates}


def detection_by_statistic(rows: list[dict]) -> dict:
    """Per statistic and baseline, the detection limit of its paired comparisons (`bootstrap.detection_limit`), and
    which statistic is the most sensitive: the largest median |effect| / half-width over its comparisons."""
    out: dict = {}
    snr: dict[str, float] = {}
    for statistic in STATISTICS:
        _, field, null = COMPARISON_KEYS[statistic]
        out[statistic], ratios = {}, []
        for suffix, _ in BASELINES:
            found = [c for c in (_comparison(r, statistic, suffix) for r in rows) if isinstance(c, dict)]
            out[statistic][f"vs_{suffix}"] = detection_limit([c["half_width"] for c in found]) if found else None
            ratios += [abs(c[field] - null) / c["half_width"] for c in found if c["half_width"] > NOISE_FLOOR]
        if ratios:
            snr[statistic] = float(np.median(ratios))
    out["signal_to_noise"] = snr
    out["most_sensitive"] = max(snr, key=snr.get) if snr else None
    return out
