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

from prefdistill.bench.plan import collapse
from prefdistill.evaluation.metrics import (detection_limit, paired_difference, paired_difference_seeds, resampled, rouge_per_example,
                                 summarize_generations, summarize_seeds, win_rate, wins_per_seed)
from prefdistill.methods.registry import SFT_ROW, paper_orderings
from prefdistill.reporting.sft_report import sft_summary



def summarize(cfg, bench, scored: dict) -> dict:
    refs, scores, base = scored["references"], scored["scores"], scored["base"]
    opts = dict(n_boot=cfg.eval.n_bootstrap, seed=cfg.seed, groups=scored["groups"])  # every interval: whole groups
    base_rows = {row: {"label": scored["labels"][row], **summarize_generations(
        gens, refs, scores["eval"][row], scores["eval"]["reference"], opponent_scores=None if row == "teacher" else scores["eval"]["teacher"],
        length_edges=cfg.eval.length_buckets, **opts)} for row, gens in base.items()}
    if "training" in scores:
        for row in base:
            base_rows[row]["training_judge_win_rate"] = win_rate(scores["training"][row], scores["training"]["reference"])
    outcomes = {"SFT": _outcomes(scored, [{"judge_scores": scores["eval"]["student_sft"], "generations": base["student_sft"]}])}
    rows, costs = [], {}
    for entry in bench.methods:
        runs = [scored["runs"][j.key] for j in scored["jobs"] if j.entry == entry.name and j.is_main]
        outcomes[entry.name] = _outcomes(scored, [r["test"] for r in runs])
        rows.append(_method_row(cfg, bench, entry, runs, scored, opts))
        costs[entry.name] = _cost(runs)
    for row in rows:
        _compare(row, outcomes, bench.seqkd_entry, opts)
    teacher = _outcomes(scored, [{"judge_scores": scores["eval"]["teacher"], "generations": base["teacher"]}])
    gap = paired_difference(teacher["win_rate"][0], outcomes["SFT"]["win_rate"][0], **opts)
    return {
        "config": cfg.name, "task": cfg.data.source, "teacher": cfg.teacher.name_or_path, "student": cfg.student.name_or_path,
        "n_test": len(refs), "n_val": scored["n_val"], "resampled": resampled(len(refs), scored["groups"], len(bench.seeds)),
        "seeds": list(bench.seeds), "steps": cfg.distill.train.steps,
        "batch_size": cfg.distill.train.batch_size, "lora": {k: getattr(cfg.student.lora, k) for k in ("enabled", "r", "alpha", "dropout")},
        "select_metric": bench.select_metric, "teacher_gap": {k: gap[k] for k in ("diff", "ci", "n", "groups")},
        "teacher_gap_validation": scored["gap_validation"], "base_rows": base_rows, "rows": rows, "costs": costs,
        "val_reference": scored["val_reference"], "detection_limit": _detection(rows),
        "orderings": _orderings(rows, outcomes, opts), "sft": _sft(scored["sft_logs"], scored["sft_choices"]), **_sweeps(scored, bench, refs, opts),
        "wall_s": {"jobs": round(sum(r["cost"]["train_wall_s"] + r["test"]["eval_wall_s"] for r in scored["runs"].values())
                                 + sum(r["cost"]["train_wall_s"] for k, r in scored["grid"].items() if k not in scored["runs"]), 1)},
    }


def _outcomes(scored: dict, tests: list[dict]) -> dict[str, np.ndarray]:
    return seed_outcomes(tests, scored["scores"]["eval"]["reference"], scored["references"])


def seed_outcomes(tests: list[dict], ref_scores: list[float], refs: list[str]) -> dict[str, np.ndarray]:
    """(seeds, prompts) arrays from each seed's test result ({"judge_scores", "generations"}): win against the
    reference (1 / ½ / 0) by the grader, and ROUGE-L (×1)."""
    return {"win_rate": wins_per_seed([t["judge_scores"] for t in tests], ref_scores),
            "rougeL": np.array([rouge_per_example(t["generations"], refs, "rougeL") for t in tests])}


def _method_row(cfg, bench, entry, runs: list[dict], scored: dict, opts: dict) -> dict:
    refs, scores, chosen = scored["references"], scored["scores"], scored["chosen"][entry.name]
    row = {"name": entry.name, "label": runs[0]["label"], "method": entry.method, **summarize_seeds(
        [r["test"]["generations"] for r in runs], refs, [r["test"]["judge_scores"] for r in runs], scores["eval"]["reference"],
        opponent_scores=scores["eval"]["teacher"], length_edges=cfg.eval.length_buckets, **opts)}
    row["per_seed_win_rate"] = [win_rate(r["test"]["judge_scores"], scores["eval"]["reference"]) for r in runs]
    if "training" in scores and all(r["test"].get("training_judge_scores") for r in runs):
        training = wins_per_seed([r["test"]["training_judge_scores"] for r in runs], scores["training"]["reference"])
        sft = wins_per_seed([scores["training"]["student_sft"]], scores["training"]["reference"])
        row["training_judge_win_rate"] = 100 * float(training.mean())
        row["vs_sft_training_judge"] = paired_difference_seeds(training, sft, **opts)
    row["selected"] = {"setting": chosen["setting"], "step": chosen["step"], "val": chosen["val"]}
    grid = [r for r in scored["grid"].values() if r["job"]["entry"] == entry.name]
    row["grid"] = [{"setting": r["job"]["setting"], "val": r["val"]} for r in grid]
    row["curves"] = {str(r["job"]["seed"]): r["val"] for r in runs}
    floor = scored["val_reference"]["student_init"]
    row["collapse"] = [{"seed": r["job"]["seed"], "setting": r["job"]["setting"], **c}
                       for r in _unique(grid + runs) for c in collapse({int(s): v for s, v in r["val"].items()}, floor)]
    row["cost"] = _cost(runs)
    return row


def _unique(results: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in results:
        key = (r["job"]["seed"], tuple(sorted(r["job"]["setting"].items())), r["job"]["data_share"], r["job"]["relabel_share"])
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


def _detection(rows: list[dict]) -> dict:
    out = {}
    for key in ("vs_sft", "vs_seqkd"):
        widths = [r[key]["half_width"] for r in rows if r.get(key)]
        out[key] = detection_limit(widths) if widths else None
    return out


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


def _cost(runs: list[dict]) -> dict:
    numeric = {k for r in runs for k, v in r["cost"].items() if isinstance(v, (int, float))}
    return {"label": runs[0]["label"], "memory_kind": runs[0]["cost"]["memory_kind"],
            "eval_wall_s": statistics.fmean(r["test"]["eval_wall_s"] for r in runs),
            **{k: statistics.fmean(r["cost"].get(k, 0) for r in runs) for k in sorted(numeric)}}


def _sft(logs: dict[str, list[dict]], choices: dict[str, dict]) -> dict:
    """Each SFT's budget (steps), validation-loss curve and the step it kept, chosen how, with every evaluation's scores."""
    return {role: sft_summary(log, choices.get(role)) for role, log in logs.items()}


def _sweeps(scored: dict, bench, refs: list[str], opts: dict) -> dict:
    """Figures 2 and 4: win rate against the relabelled share and the data share (first seed, chosen setting)."""
    ref_scores = scored["scores"]["eval"]["reference"]

    def point(job, share):
        test = scored["runs"][job.key]["test"]
        s = summarize_generations(test["generations"], refs, test["judge_scores"], ref_scores, **opts)
        return {"share": share, "win_rate": s["win_rate"], "win_rate_ci": s["win_rate_ci"], "word_count": s["word_count"]}

    first = {m.name: (m.seeds or bench.seeds)[0] for m in bench.methods}
    jobs = [j for j in scored["jobs"] if j.seed == first[j.entry]]
    data: dict[str, list[dict]] = {}
    for j in jobs:
        if j.relabel_share == 0.0 and any(k.data_share < 1.0 and k.entry == j.entry for k in jobs):
            data.setdefault(j.entry, []).append(point(j, j.data_share))
    relabel = [point(j, j.relabel_share) for j in jobs if bench.relabel_shares and j.entry == bench.relabel_method and j.data_share == 1.0]
    return {"data_sweep": {k: sorted(v, key=lambda p: p["share"]) for k, v in data.items()},
            "relabel_sweep": {"entry": bench.relabel_method, "points": sorted(relabel, key=lambda p: p["share"])}}
