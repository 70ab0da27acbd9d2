"""The bench's numbers, from what `Bench.scored` judged: no model or judge runs here.

    results = summarize(cfg, bench, scored)     # JSON-ready: RUN/bench/<report>/results.json

Each method row pools the test generations of its chosen setting over every seed. Its
comparisons with the SFT student and with SeqKD (the budget-matched control) are paired
on the same test prompts, with a two-level bootstrap: whole groups of prompts (a paper's
prompts together, `io.group_of`) resampled once for both sides, each side's seeds resampled
on their own (`metrics.paired_difference_seeds`). Every other interval here (rows, sweeps,
the teacher gap) resamples the same groups. The detection limit is read off the paired
intervals' half-widths (`metrics.detection_limit`), so it too counts groups, not prompts.
"""
from __future__ import annotations

import statistics

import numpy as np

from prefdistill.bench.calibration import attach_calibration
from prefdistill.bench.plan import collapse
from prefdistill.bench.records import PHASE_TOTALS, PHASES, JobResult, Scored, TestResult, phases
from prefdistill.bench.comparisons import add_statistics, detection_by_statistic
from prefdistill.evaluation.judge_check import judge_check
from prefdistill.evaluation.metrics import (paired_difference, paired_difference_seeds, resampled, rouge_per_example,
                                            summarize_generations, summarize_seeds, win_rate, wins_per_seed)
from prefdistill.evaluation.paired import soft_wins_per_seed
from prefdistill.methods.registry import SFT_ROW, paper_orderings
from prefdistill.reporting.sft_report import sft_summary



def summarize(cfg, bench, scored: Scored) -> dict:
    """The bench's results (JSON-ready: results.json) from what `Bench.scored` judged."""
    refs, ev, base = scored.references, scored.eval_scores, scored.base
    opts = dict(n_boot=cfg.eval.n_bootstrap, seed=cfg.seed, groups=scored.groups)  # every interval: whole groups
    base_rows = {row: {"label": scored.labels[row], **summarize_generations(
        gens, refs, ev[row], ev["reference"], opponent_scores=None if row == "teacher" else ev["teacher"],
        length_edges=cfg.eval.length_buckets, **opts)} for row, gens in base.items()}
    if scored.training_scores is not None:
        for row in base:
            base_rows[row]["training_judge_win_rate"] = win_rate(scored.training_scores[row], scored.training_scores["reference"])
    outcomes = {"SFT": _outcomes(scored, [base["student_sft"]], [ev["student_sft"]])}
    rows, costs, timed = [], {}, {}
    for entry in bench.methods:
        runs = scored.main_runs(entry.name)
        outcomes[entry.name] = _outcomes(scored, [t.generations for _, t in runs], [t.judge_scores for _, t in runs])
        rows.append(_method_row(cfg, entry, runs, scored, opts))
        costs[entry.name] = _cost(runs)
        timed[entry.name] = mean_phases(runs)
    for row in rows:
        _compare(row, outcomes, bench.seqkd_entry, opts)
    calibration = attach_calibration(base_rows, rows, scored, bench, opts)  # each row's "calibration" (None: not measured)
    outcomes["teacher"] = teacher = _outcomes(scored, [base["teacher"]], [ev["teacher"]])
    gap = paired_difference(teacher["win_rate"][0], outcomes["SFT"]["win_rate"][0], **opts)
    matrix = add_statistics(rows, base_rows, outcomes, seqkd=bench.seqkd_entry, opts=opts)
    return {
        "config": cfg.name, "task": cfg.data.source, "teacher": cfg.teacher.name_or_path, "student": cfg.student.name_or_path,
        "teacher_tokenizer": (scored.tokenizers or {}).get("teacher"), "student_tokenizer": (scored.tokenizers or {}).get("student"),
        "n_test": len(refs), "n_val": scored.n_val, "resampled": resampled(len(refs), scored.groups, len(bench.seeds)),
        "seeds": list(bench.seeds), "steps": cfg.distill.train.steps,
        "batch_size": cfg.distill.train.batch_size, "lora": {k: getattr(cfg.student.lora, k) for k in ("enabled", "r", "alpha", "dropout")},
        "select_metric": bench.select_metric, "teacher_gap": {k: gap[k] for k in ("diff", "ci", "n", "groups")},
        "teacher_gap_soft": paired_difference_seeds(teacher["soft_win_rate"], outcomes["SFT"]["soft_win_rate"], **opts),
        "soft_scale": scored.soft_scale, "head_to_head_matrix": matrix,
        "teacher_gap_validation": scored.gap_validation, "base_rows": base_rows, "rows": rows, "costs": costs,
        "val_reference": scored.val_reference, "detection_limit": detection_by_statistic(rows),
        "orderings": _orderings(rows, outcomes, opts), "sft": _sft(scored.sft_logs, scored.sft_choices), **_sweeps(scored, bench, refs, opts),
        "phases_wall_s": timed, "calibration": calibration,
        "judge_check": judge_check(scored.row_outputs(bench.methods), ev["reference"], refs, scored.prompts, seed=cfg.seed),
        "wall_s": {"jobs": round(sum(r.cost.train_wall_s + scored.tests[k].eval_wall_s for k, r in scored.runs.items())
                                 + sum(r.cost.train_wall_s for k, r in scored.grid.items() if k not in scored.runs), 1)},
    }


def _outcomes(scored: Scored, generations: list[list[str]], judge_scores: list[list[float]]) -> dict[str, np.ndarray]:
    scale = (scored.soft_scale or {}).get("scale", 1.0)
    return seed_outcomes(generations, judge_scores, scored.eval_scores["reference"], scored.references, scale=scale)


def seed_outcomes(generations: list[list[str]], judge_scores: list[list[float]], ref_scores: list[float],
                  refs: list[str], *, scale: float = 1.0) -> dict[str, np.ndarray]:
    """(seeds, prompts) arrays from each seed's test generations and their judge scores: win against the
    reference (1 / ½ / 0) by the grader, the soft win σ((s − s_ref) / scale), the grader's scores, and ROUGE-L (×1)."""
    return {"win_rate": wins_per_seed(judge_scores, ref_scores),
            "soft_win_rate": soft_wins_per_seed(judge_scores, ref_scores, scale=scale),
            "scores": np.asarray(judge_scores, dtype=np.float64),
            "rougeL": np.array([rouge_per_example(g, refs, "rougeL") for g in generations])}


def _method_row(cfg, entry, runs: list[tuple[JobResult, TestResult]], scored: Scored, opts: dict) -> dict:
    refs, ev, chosen = scored.references, scored.eval_scores, scored.chosen[entry.name]
    tests = [t for _, t in runs]
    row = {"name": entry.name, "label": runs[0][0].label, "method": entry.method, "oracle": runs[0][0].oracle, **summarize_seeds(
        [t.generations for t in tests], refs, [t.judge_scores for t in tests], ev["reference"],
        opponent_scores=ev["teacher"], length_edges=cfg.eval.length_buckets, **opts)}
    row["per_seed_win_rate"] = [win_rate(t.judge_scores, ev["reference"]) for t in tests]
    training = scored.training_scores
    if training is not None and all(t.training_judge_scores for t in tests):
        mine = wins_per_seed([t.training_judge_scores for t in tests], training["reference"])
        sft = wins_per_seed([training["student_sft"]], training["reference"])
        row["training_judge_win_rate"] = 100 * float(mine.mean())
        row["vs_sft_training_judge"] = paired_difference_seeds(mine, sft, **opts)
    row["selected"] = {"setting": chosen.setting, "step": chosen.step, "val": chosen.val}
    grid = [r for r in scored.grid.values() if r.job.entry == entry.name]
    row["grid"] = [{"setting": r.job.grid_point, "val": r.val_json()} for r in grid]
    row["curves"] = {str(r.job.seed): r.val_json() for r, _ in runs}
    floor = scored.val_reference["student_init"]
    row["collapse"] = [{"seed": r.job.seed, "setting": r.job.grid_point, **c}
                       for r in _unique(grid + [r for r, _ in runs]) for c in collapse(r.val, floor)]
    row["cost"] = _cost(runs)
    return row


def _unique(results: list[JobResult]) -> list[JobResult]:
    seen, out = set(), []
    for r in results:
        key = (r.job.seed, r.job.setting, r.job.data_share, r.job.relabel_share)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _compare(row: dict, outcomes: dict, seqkd: str | None, opts: dict) -> None:
    """The row's paired differences against SFT and SeqKD, on win rate and ROUGE-L (None against itself)."""
    mine = outcomes[row["name"]]
    for other, suffix in (("SFT", "sft"), (seqkd, "seqkd")):
        usable = other is not None and other != row["name"] and other in outcomes
        row[f"vs_{suffix}"] = paired_difference_seeds(mine["win_rate"], outcomes[other]["win_rate"], **opts) if usable else None
        row[f"rougeL_vs_{suffix}"] = paired_difference_seeds(mine["rougeL"], outcomes[other]["rougeL"], **opts) if usable else None


def _orderings(rows: list[dict], outcomes: dict, opts: dict) -> list[dict]:
    """Each of the papers' orderings (the methods' declared claims) whose two sides ran here: held (CI above 0),
    reversed (below) or not separable."""
    by_method = {r["method"]: r["name"] for r in rows}  # the first entry of a method stands for it
    by_method[SFT_ROW] = "SFT"
    labels = {r["name"]: r["label"] for r in rows} | {"SFT": "SFT"}
    out = []
    for paper, better, worse, metric in ((c.paper, c.better, c.worse, c.metric) for c in paper_orderings()):
        if better not in by_method or worse not in by_method:
            continue
        a, b = by_method[better], by_method[worse]
        d = paired_difference_seeds(outcomes[a][metric], outcomes[b][metric], **opts)
        verdict = "held" if d["ci"][0] > 0 else "reversed" if d["ci"][1] < 0 else "not separable"
        out.append({"paper": paper, "claim": f"{labels[a]} > {labels[b]}", "metric": metric, "diff": d["diff"], "ci": d["ci"],
                    "verdict": verdict})
    return out


def _cost(runs: list[tuple[JobResult, TestResult]]) -> dict:
    """Each cost's mean over the seeds (a counter a seed lacks counts 0), with the label and what memory measured."""
    numbers = [r.cost.numbers() for r, _ in runs]
    first = runs[0][0]
    return {"label": first.label, "memory_kind": first.cost.memory_kind,
            "eval_wall_s": statistics.fmean(t.eval_wall_s for _, t in runs),
            **{k: statistics.fmean(n.get(k, 0) for n in numbers) for k in sorted({k for n in numbers for k in n})}}


def mean_phases(runs: list[tuple[JobResult, TestResult | None]]) -> dict[str, float | None]:
    """Each phase's wall seconds and their totals (`records.phases`), averaged over the jobs; None where a job lacks one."""
    each = [phases(r, t) for r, t in runs]
    return {p: None if any(e[p] is None for e in each) else round(statistics.fmean(e[p] for e in each), 1)
            for p in PHASE_TOTALS + PHASES}


def _sft(logs: dict[str, list[dict]], choices: dict[str, dict]) -> dict:
    """Each SFT's budget (steps), validation-loss curve and the step it kept, chosen how, with every evaluation's scores."""
    return {role: sft_summary(log, choices.get(role)) for role, log in logs.items()}


def _sweeps(scored: Scored, bench, refs: list[str], opts: dict) -> dict:
    """Figures 2 and 4: win rate against the relabelled share and the data share (first seed, chosen setting)."""
    ref_scores = scored.eval_scores["reference"]

    def point(job, share):
        test = scored.tests[job.key]
        s = summarize_generations(test.generations, refs, test.judge_scores, ref_scores, **opts)
        return {"share": share, "win_rate": s["win_rate"], "win_rate_ci": s["win_rate_ci"], "word_count": s["word_count"]}

    first = {m.name: (m.seeds or bench.seeds)[0] for m in bench.methods}
    jobs = [j for j in scored.jobs if j.seed == first[j.entry]]
    data: dict[str, list[dict]] = {}
    for j in jobs:
        if j.relabel_share == 0.0 and any(k.data_share < 1.0 and k.entry == j.entry for k in jobs):
            data.setdefault(j.entry, []).append(point(j, j.data_share))
    relabel = [point(j, j.relabel_share) for j in jobs if bench.relabel_shares and j.entry == bench.relabel_method and j.data_share == 1.0]
    return {"data_sweep": {k: sorted(v, key=lambda p: p["share"]) for k, v in data.items()},
            "relabel_sweep": {"entry": bench.relabel_method, "points": sorted(relabel, key=lambda p: p["share"])}}
