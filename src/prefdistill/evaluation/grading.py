"""Grading generations: every judge's scores, each row's numbers, the paired comparison of two rows.

    scores = score_all(graders, prompts, references, generations)   # {"eval": {...}, "training": {...}}
    rows = summarize_rows(generations, references, scores, labels, n_boot=1000, seed=0, length_edges=[15, 25, 35],
                          groups=[group_of(e) for e in test])

`graders` maps a role to a judge: "eval" grades every row (the held-out judge by default);
"training", when present, is the judge training used, graded with too so that a method
that gamed it shows a gap between the two. Scores are plain lists, so reports only render.
Every interval resamples whole groups of prompts (`groups`, one label per prompt; see
`prefdistill.evaluation.bootstrap`): the test examples' `io.group_of`, so a paper's prompts go together.
"""
from __future__ import annotations

from typing import Hashable, Sequence

from prefdistill.evaluation.metrics import compare_rows, summarize_generations, win_rate_with_ci


def score_all(graders: dict, prompts: list[str], references: list[str], generations: dict[str, list[str]]) -> dict[str, dict]:
    """{role: {"reference": scores, row: scores, ...}} for every judge and row."""
    return {role: {"reference": judge.score(prompts, references), **{row: judge.score(prompts, g) for row, g in generations.items()}}
            for role, judge in graders.items()}


def summarize_rows(generations: dict[str, list[str]], references: list[str], scores: dict[str, dict], labels: dict[str, str], *,
                   n_boot: int, seed: int, length_edges, groups: Sequence[Hashable] | None = None) -> dict[str, dict]:
    """Each row's Table-1 numbers by the grader, plus its win rate by the training judge when there is one."""
    rows, opts = {}, dict(n_boot=n_boot, seed=seed, groups=groups)
    for row, gens in generations.items():
        rows[row] = {"label": labels[row], **_summary(row, gens, references, scores["eval"], length_edges, opts)}
        if "training" in scores:  # only the win rate: ROUGE and lengths do not depend on the judge
            rate, ci = win_rate_with_ci([scores["training"][row]], scores["training"]["reference"], **opts)
            rows[row]["training_judge_win_rate"], rows[row]["training_judge_win_rate_ci"] = rate, ci
    return rows


def _summary(row: str, gens: list[str], refs: list[str], scores: dict, length_edges, opts: dict) -> dict:
    opponent = scores["teacher"] if "teacher" in scores and row != "teacher" else None  # T-S win rate
    return summarize_generations(gens, refs, scores[row], scores["reference"], opponent_scores=opponent,
                                 length_edges=length_edges, **opts)


def compare(method: str, baseline: str, generations: dict[str, list[str]], references: list[str], scores: dict[str, dict], *,
            n_boot: int, seed: int, groups: Sequence[Hashable] | None = None) -> dict:
    """The paired comparison of two rows by each judge: {"comparison": ..., "training_judge_comparison": ...}."""
    out = {}
    for role, by_row in scores.items():
        sides = [{"generations": generations[r], "references": references, "judge_scores": by_row[r],
                  "reference_scores": by_row["reference"]} for r in (method, baseline)]
        key = "comparison" if role == "eval" else "training_judge_comparison"
        out[key] = {"method_row": method, "baseline_row": baseline,
                    **compare_rows(*sides, n_boot=n_boot, seed=seed, groups=groups)}
    return out
