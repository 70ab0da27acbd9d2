"""Is the judge right on model text? Pure functions of the evaluation judge's scores of real model outputs.

    check = judge_check(rows, reference_scores, references, prompts)   # results.json's "judge_check"
    # rows: {row: RowOutputs(label, generations (seeds, prompts), scores (seeds, prompts), similarity or None)}

The judges' validation accuracy (`judges.reward.pairwise_accuracy`) is measured on synthetic
negatives, which are corruptions of references. This measures the grader where it works: on
the rows' test outputs. Per row, its **accuracy against the reference** is the share of
outputs (prompts x seeds) it scores below their reference (ties count half): 1 - win rate.
For a student that has not learned the task (the initial one) it should be near 1; a trained
row can beat references honestly, so a row's accuracy is reported, never judged.

Outputs no reader would prefer to a human reference are detected apart (`degenerate_kind`):
empty ones, **loops** (a large share of repeated word trigrams) and **templates** (at most
three distinct content words, e.g. "Describe the parser of the parser."). On them the judge
must side with the reference. It is flagged as unable to tell degenerate outputs from the
reference when its accuracy on them, pooled over the rows, is below `ACCURACY_FLOOR`, or when
degenerate outputs earn a row more than `DEGENERATE_POINTS` points of win rate.

**Rank agreement**: the rows' win rates ranked against their ROUGE-L and their mean embedding
similarity to the reference (cosine of mean-pooled MiniLM sentence embeddings, computed by the
bench: `judges.similarity`), by Spearman's rho and Kendall's tau-b. Two judges of quality need
not agree (ROUGE rewards copying words, the judge was trained to punish extractive copies), but
a judge whose order of the rows runs against both is ranking something else.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from prefdistill.evaluation.metrics import content_words, pairwise_outcomes, repeated_ngram_share, rouge

ACCURACY_FLOOR = 0.90  # on degenerate outputs the reference should win at least 9 times in 10
DEGENERATE_POINTS = 5.0  # win-rate points a row may owe to degenerate outputs: about a paired CI's half-width here
MIN_DEGENERATE = 5  # fewer pooled degenerate outputs than this say nothing about the judge
LOOP_SHARE, LOOP_MIN_WORDS = 0.3, 8  # a loop: >= 30% of its word trigrams repeat an earlier one, 8 words or more
TEMPLATE_MAX_CONTENT = 3  # a template: at most this many distinct content words
REFERENCE_ROWS = ("student_init", "student_sft")  # the students' outputs the brief of this check names first
SAMPLE_SIZE, PROMPT_HEAD = 5, 160  # the hand-checkable sample: prompts, and characters of each prompt shown


@dataclass(frozen=True)
class RowOutputs:
    """One row's test outputs as the judge check reads them."""

    label: str
    generations: list[list[str]]  # (seeds, prompts)
    scores: list[list[float]]  # (seeds, prompts): the evaluation judge's
    similarity: list[list[float]] | None = None  # (seeds, prompts): cosine to the reference; None: not computed


def degenerate_kind(text: str) -> str | None:
    """"empty", "loop" or "template" when `text` is an output no reader would take over a reference, else None."""
    words = text.split()
    if not words:
        return "empty"
    if len(words) >= LOOP_MIN_WORDS and repeated_ngram_share(text) >= LOOP_SHARE:
        return "loop"
    if len(set(content_words(text))) <= TEMPLATE_MAX_CONTENT:
        return "template"
    return None


def reference_outcomes(scores: Sequence[float], reference_scores: Sequence[float]) -> list[float]:
    """Per prompt: 1 where the judge scores the reference above the output, ½ on a tie, 0 below (the win rate's tie rule)."""
    return pairwise_outcomes(reference_scores, scores)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def row_check(row: RowOutputs, reference_scores: Sequence[float]) -> dict:
    """A row's accuracy against the reference, over all its outputs and over its degenerate ones."""
    kinds = [degenerate_kind(g) for gens in row.generations for g in gens]
    right = [o for sc in row.scores for o in reference_outcomes(sc, reference_scores)]
    bad = [o for o, k in zip(right, kinds) if k]
    return {"label": row.label, "n": len(right), "accuracy": _mean(right), "win_rate": 100.0 * (1.0 - _mean(right)),
            "degenerate": {"n": len(bad), "share": len(bad) / len(right),
                           "kinds": {k: kinds.count(k) for k in ("empty", "loop", "template") if k in kinds},
                           "accuracy": _mean(bad),
                           "win_points": 100.0 * sum(1.0 - o for o in bad) / len(right)}}  # of the row's win rate


def pooled_degenerate(rows: dict[str, RowOutputs], reference_scores: Sequence[float]) -> dict:
    """The judge's accuracy on every row's degenerate outputs together, and by kind."""
    by_kind: dict[str, list[float]] = {}
    for row in rows.values():
        for gens, sc in zip(row.generations, row.scores):
            for g, o in zip(gens, reference_outcomes(sc, reference_scores)):
                if kind := degenerate_kind(g):
                    by_kind.setdefault(kind, []).append(o)
    every = [o for v in by_kind.values() for o in v]
    return {"n": len(every), "accuracy": _mean(every),
            "by_kind": {k: {"n": len(v), "accuracy": _mean(v)} for k, v in sorted(by_kind.items())}}


def verdict(rows: dict[str, dict], pooled: dict) -> dict:
    """Whether the judge can tell degenerate outputs from the reference, and why not (`ACCURACY_FLOOR`, `DEGENERATE_POINTS`)."""
    reasons = []
    if pooled["n"] >= MIN_DEGENERATE and pooled["accuracy"] < ACCURACY_FLOOR:
        reasons.append(f"it ranks the reference above {100 * pooled['accuracy']:.0f}% of {pooled['n']} degenerate outputs "
                       f"(floor {100 * ACCURACY_FLOOR:.0f}%)")
    for name, r in rows.items():
        if r["degenerate"]["win_points"] > DEGENERATE_POINTS:
            reasons.append(f"{r['label']} owes {r['degenerate']['win_points']:.1f} points of its {r['win_rate']:.1f}% win rate "
                           f"to {r['degenerate']['n']} degenerate outputs (ceiling {DEGENERATE_POINTS:g})")
    if reasons:
        status = "cannot tell degenerate outputs from the reference"
    elif pooled["n"] < MIN_DEGENERATE:
        status = f"untested: fewer than {MIN_DEGENERATE} degenerate outputs among the rows"
    else:
        status = "tells degenerate outputs from the reference"
    return {"cannot_tell_degenerate": bool(reasons), "status": status, "reasons": reasons}


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties given their mean rank (what Spearman's rho needs)."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        out[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the mean ranks (Spearman 1904); None for < 3 rows or a constant side."""
    if len(a) != len(b):
        raise ValueError(f"spearman: length mismatch ({len(a)} vs {len(b)})")
    ra, rb = ranks(a), ranks(b)
    if len(a) < 3 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b (Kendall 1945): (concordant − discordant) / sqrt((n0 − ties a)(n0 − ties b)); None as `spearman`."""
    if len(a) != len(b):
        raise ValueError(f"kendall: length mismatch ({len(a)} vs {len(b)})")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(x), k=1)  # every pair of rows once
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    untied_x, untied_y = np.count_nonzero(sx), np.count_nonzero(sy)
    if len(x) < 3 or not untied_x or not untied_y:
        return None
    return float((sx * sy).sum() / np.sqrt(untied_x * untied_y))


def rank_agreement(rows: dict[str, RowOutputs], reference_scores: Sequence[float], references: list[str]) -> dict:
    """Each row's win rate, ROUGE-L and mean similarity to the reference; rho and tau of the win rate with the other two."""
    table = []
    for name, row in rows.items():
        wins = [1.0 - o for sc in row.scores for o in reference_outcomes(sc, reference_scores)]
        sims = [s for seed in row.similarity for s in seed] if row.similarity is not None else None
        table.append({"row": name, "label": row.label, "win_rate": 100.0 * float(np.mean(wins)),
                      "rougeL": float(np.mean([rouge(g, references)["rougeL"] for g in row.generations])),
                      "similarity": float(np.mean(sims)) if sims else None})
    out: dict = {"rows": table, "n_rows": len(table)}
    win = [t["win_rate"] for t in table]
    for metric in ("rougeL", "similarity"):
        other = [t[metric] for t in table]
        usable = all(v is not None for v in other)
        out[metric] = {"spearman": spearman(win, other) if usable else None, "kendall": kendall(win, other) if usable else None}
    return out


def hand_sample(rows: dict[str, RowOutputs], reference_scores: Sequence[float], references: list[str],
                prompts: list[str] | None, *, k: int = SAMPLE_SIZE, seed: int = 0) -> list[dict]:
    """`k` outputs a reader can check by hand: first up to k - 2 degenerate outputs the judge put above their reference
    (largest margin first), then the students' outputs (`REFERENCE_ROWS`, first seed) on prompts drawn with `seed`."""
    def item(name, i, s=0):
        row = rows[name]
        out, ref = row.scores[s][i], reference_scores[i]
        return {"row": name, "label": row.label, "prompt_index": i, "seed_index": s,
                "prompt_head": (prompts[i][:PROMPT_HEAD] if prompts else ""), "reference": references[i],
                "output": row.generations[s][i], "reference_score": float(ref), "output_score": float(out),
                "judge_prefers": "reference" if ref > out else "output" if out > ref else "tie",
                "degenerate": degenerate_kind(row.generations[s][i])}

    fooled = [(row.scores[s][i] - reference_scores[i], name, i, s) for name, row in rows.items()
              for s, gens in enumerate(row.generations) for i, g in enumerate(gens)
              if degenerate_kind(g) and row.scores[s][i] > reference_scores[i]]
    picked = [item(name, i, s) for _, name, i, s in sorted(fooled, key=lambda t: -t[0])[:max(1, k - 2)]]
    students = [r for r in REFERENCE_ROWS if r in rows] or list(rows)[:1]
    order = random.Random(seed).sample(range(len(references)), len(references))
    for n, i in enumerate(order):
        if len(picked) >= k:
            break
        name = students[n % len(students)]
        if not any(p["row"] == name and p["prompt_index"] == i for p in picked):
            picked.append(item(name, i))
    return picked


def judge_check(rows: dict[str, RowOutputs], reference_scores: Sequence[float], references: list[str],
                prompts: list[str] | None = None, *, seed: int = 0) -> dict:
    """The whole check (JSON-ready): per row, pooled degenerate outputs, the verdict, rank agreement, a hand sample."""
    if not rows:
        raise ValueError("judge_check: no rows")
    for name, row in rows.items():
        if any(len(g) != len(references) for g in row.generations) or any(len(s) != len(references) for s in row.scores):
            raise ValueError(f"judge_check: row {name!r} needs {len(references)} outputs and scores per seed")
    checked = {name: row_check(row, reference_scores) for name, row in rows.items()}
    pooled = pooled_degenerate(rows, reference_scores)
    return {"thresholds": {"accuracy_floor": ACCURACY_FLOOR, "degenerate_points": DEGENERATE_POINTS,
                           "min_degenerate": MIN_DEGENERATE, "loop_share": LOOP_SHARE, "loop_min_words": LOOP_MIN_WORDS,
                           "template_max_content_words": TEMPLATE_MAX_CONTENT},
            "rows": checked, "degenerate": pooled, "verdict": verdict(checked, pooled),
            "rank_agreement": rank_agreement(rows, reference_scores, references),
            "sample": hand_sample(rows, reference_scores, references, prompts, seed=seed)}
