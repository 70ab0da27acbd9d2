"""The bench's numbers and report: PLaD's Table 1, Figures 2–4 and a cost table, as analogues.

    results = summarize(cfg, bench, Bench(...).scored(base, jobs))   # JSON-ready; every score already computed
    write_bench_report(run_dir / "bench", results)         # -> report.md + PNG figures

Rows of the table pool every training seed; their intervals resample seeds and test
examples. Each method is also compared with the SFT student on the same prompts (paired
difference of win rates), which is what says whether it beat SFT. Sweep points (data
share, relabelled share) use the first seed only.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from prefdistill.io import atomic_write_text
from prefdistill.metrics import paired_difference, pairwise_outcomes, summarize_generations, summarize_seeds
from prefdistill.report import (
    _fmt, _fmt_rate, _md_table, _new_figure, _save, console_table, length_table, plot_length_buckets, plot_win_rates,
    render_table,
)


# ----------------------------------------------------------------------------- numbers


def summarize(cfg, bench, scored: dict) -> dict:
    """The bench's numbers from what `Bench.scored` judged: no model or judge runs here."""
    refs, jobs, done, base, scores = (scored[k] for k in ("references", "jobs", "done", "base", "scores"))
    opts = dict(n_boot=cfg.eval.n_bootstrap, seed=cfg.seed, length_edges=cfg.eval.length_buckets)
    rows = {row: {"label": scored["labels"][row], **summarize_generations(
        gens, refs, scores["eval"][row], scores["eval"]["reference"],
        opponent_scores=None if row == "teacher" else scores["eval"]["teacher"], **opts)} for row, gens in base.items()}
    if "training" in scores:
        for row in base:
            rows[row]["training_judge_win_rate"] = _win_rate(scores["training"][row], scores["training"]["reference"])
    costs = {}
    for entry in bench.methods:
        runs = [done[j.key] for j in jobs if j.entry == entry.name and j.is_main]
        rows[entry.name] = {"label": runs[0]["label"], "method": entry.method, **_method_row(runs, refs, scores, opts, cfg)}
        numeric = {k for r in runs for k, v in r["cost"].items() if isinstance(v, (int, float))}
        costs[entry.name] = {"label": runs[0]["label"], "memory_kind": runs[0]["cost"]["memory_kind"],
                             **{k: statistics.fmean(r["cost"].get(k, 0) for r in runs) for k in sorted(numeric)}}
    ref_scores = scores["eval"]["reference"]

    def point(job, share):
        r = done[job.key]
        s = summarize_generations(r["generations"], refs, r["judge_scores"], ref_scores, **opts)
        return {"share": share, "win_rate": s["win_rate"], "win_rate_ci": s["win_rate_ci"], "word_count": s["word_count"]}

    first = {m.name: (m.seeds or bench.seeds)[0] for m in bench.methods}  # sweeps run on an entry's first seed
    data_sweep: dict[str, list[dict]] = {}
    for j in jobs:
        swept = any(k.data_share < 1.0 and k.entry == j.entry for k in jobs)
        if j.seed == first[j.entry] and j.relabel_share == 0.0 and swept:
            data_sweep.setdefault(j.entry, []).append(point(j, j.data_share))
    relabel_sweep = [point(j, j.relabel_share) for j in jobs if bench.relabel_shares and j.entry == bench.relabel_method
                     and j.seed == first[j.entry] and j.data_share == 1.0]
    return {
        "task": cfg.data.source, "teacher": cfg.teacher.name_or_path, "student": cfg.student.name_or_path,
        "n_test": len(refs), "seeds": bench.seeds, "steps": cfg.distill.train.steps, "batch_size": cfg.distill.train.batch_size,
        "rows": rows, "costs": costs,
        "data_sweep": {k: sorted(v, key=lambda p: p["share"]) for k, v in data_sweep.items()},
        "relabel_sweep": {"entry": bench.relabel_method, "points": sorted(relabel_sweep, key=lambda p: p["share"])},
        "wall_s": {"jobs": round(sum(r["cost"]["train_wall_s"] + r["cost"]["eval_wall_s"] for r in done.values()), 1)},
    }


def _win_rate(scores: list[float], reference: list[float]) -> float:
    return 100 * statistics.fmean(pairwise_outcomes(scores, reference))


def _method_row(runs: list[dict], refs: list[str], scores: dict, opts: dict, cfg) -> dict:
    """A method's row pooled over its seeds, and its paired difference to the SFT student by each judge."""
    row = summarize_seeds([r["generations"] for r in runs], refs, [r["judge_scores"] for r in runs], scores["eval"]["reference"],
                          opponent_scores=scores["eval"]["teacher"], **opts)
    for role, by_row in scores.items():
        key = "judge_scores" if role == "eval" else "training_judge_scores"
        wins = [pairwise_outcomes(r[key], by_row["reference"]) for r in runs]  # per seed, per prompt
        per_example = [statistics.fmean(v) for v in zip(*wins)]
        sft_wins = pairwise_outcomes(by_row["student_sft"], by_row["reference"])
        diff = paired_difference(per_example, sft_wins, n_boot=cfg.eval.n_bootstrap, seed=cfg.seed)
        if role == "eval":
            row["vs_sft"], row["per_seed_win_rate"] = diff, [100 * statistics.fmean(w) for w in wins]
        else:
            row["vs_sft_training_judge"], row["training_judge_win_rate"] = diff, 100 * statistics.fmean(per_example)
    return row


def orderings(results: dict, focus: str = "plad") -> list[str]:
    """Which of the paper's orderings held: focus > each baseline, each baseline > SFT (paired, same prompts)."""
    rows = results["rows"]
    methods = [k for k, r in rows.items() if "vs_sft" in r]
    lines = []
    for k in methods:
        d = rows[k]["vs_sft"]
        verdict = "above" if d["ci"][0] > 0 else "below" if d["ci"][1] < 0 else "not separable from"
        lines.append(f"{rows[k]['label']} is {verdict} SFT: {d['diff']:+.1f} points [{d['ci'][0]:.1f}, {d['ci'][1]:.1f}] (paired)")
    focus_keys = [k for k in methods if rows[k].get("method") == focus]
    for f in focus_keys:
        for k in methods:
            if k == f:
                continue
            gap = rows[f]["win_rate"] - rows[k]["win_rate"]
            lines.append(f"{rows[f]['label']} {'>' if gap > 0 else '<' if gap < 0 else '='} {rows[k]['label']}: {gap:+.1f} points of win rate")
    return lines


# ----------------------------------------------------------------------------- figures


def plot_sweep(series: dict[str, list[dict]], labels: dict[str, str], path, *, xlabel: str, title: str) -> Path | None:
    """Win rate (with 95% interval) against a share, one line per series. None if no data."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig = _new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for i, (key, points) in enumerate(series.items()):
        xs = [100 * p["share"] for p in points]
        ys = [p["win_rate"] for p in points]
        err = [[y - p["win_rate_ci"][0] for y, p in zip(ys, points)], [p["win_rate_ci"][1] - y for y, p in zip(ys, points)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=labels.get(key, key), color=f"C{i}", alpha=0.9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("win rate vs reference (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_budget(results: dict, path) -> Path | None:
    """Judge win rate against samples drawn and oracle comparisons in training, one point per method."""
    rows, costs = results["rows"], results["costs"]
    keys = [k for k, c in costs.items() if c.get("count_samples")]
    if not keys:
        return None
    fig = _new_figure(10.0, 4.0)
    for i, (field, xlabel) in enumerate((("count_samples", "samples drawn in training"), ("count_oracle_comparisons", "oracle comparisons"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, key in enumerate(keys):
            r = rows[key]
            lo, hi = r["win_rate_ci"]
            ax.errorbar([costs[key].get(field, 0)], [r["win_rate"]], yerr=[[r["win_rate"] - lo], [hi - r["win_rate"]]],
                        marker="o", capsize=3, color=f"C{j}", label=r["label"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("win rate vs reference (%)")
        ax.set_ylim(0, 100)
    fig.axes[0].legend(fontsize=8)
    fig.suptitle("Win-rate methods: what they reach for the samples and oracle calls they use")
    return _save(fig, path)


# ----------------------------------------------------------------------------- report


def _cost_table(results: dict) -> str:
    cols = [("rows", "Rows", 0), ("steps", "Steps", 0), ("count_samples", "Samples drawn (training)", 0),
            ("count_oracle_comparisons", "Oracle comparisons", 0), ("data_teacher_generated", "Teacher tok. generated (data)", 0),
            ("data_student_generated", "Student tok. generated (data)", 0), ("data_teacher_scored", "Teacher tok. scored (data)", 0), ("tokens_student_generated", "Student tok. generated (training)", 0),
            ("tokens_teacher_scored", "Teacher tok. scored (training)", 0), ("train_wall_s", "Train wall (s)", 1),
            ("eval_wall_s", "Eval wall (s)", 1), ("peak_memory_mb", "Peak memory (MB)", 0)]
    body = [[c["label"]] + [_fmt(c.get(k, 0), nd) for k, _, nd in cols] for c in results["costs"].values()]
    kind = next((c["memory_kind"] for c in results["costs"].values()), "")
    return _md_table(["Method"] + [h for _, h, _ in cols], body) + f"\n\nMeans over seeds. Memory: peak {kind} during training."


def build_bench_report(folder: Path, results: dict) -> str:
    rows = results["rows"]
    labels = {k: r["label"] for k, r in rows.items()}
    lines = ["# prefdistill bench", "",
             f"Teacher `{results['teacher']}`, student `{results['student']}`, task `{results['task']}`; "
             f"{results['n_test']} test prompts; seeds {results['seeds']}; every method {results['steps']} steps of "
             f"{results['batch_size']} from the same SFT student.", "",
             "## Table 1 analogue", "", render_table(results), "",
             "Win rates: the evaluation judge's score above the reference's (ties half), 95% bootstrap interval over seeds and "
             "prompts." + (" The last column grades with the training judge (the oracle the win-rate methods optimised)."
                           if any("training_judge_win_rate" in r for r in rows.values()) else ""), ""]
    both = any("vs_sft_training_judge" in r for r in rows.values())
    seed_rows = [[r["label"], ", ".join(f"{x:.1f}" for x in r["per_seed_win_rate"]), _fmt(r["win_rate_seed_sd"], 1),
                  _fmt_rate(r["vs_sft"]["diff"], r["vs_sft"]["ci"])]
                 + ([_fmt_rate(r["vs_sft_training_judge"]["diff"], r["vs_sft_training_judge"]["ci"])] if both else [])
                 for r in rows.values() if "vs_sft" in r]
    header = ["Method", "Win rate per seed", "Seed s.d.", "Δ win rate vs SFT (paired, 95% CI)"]
    header += ["Δ vs SFT by the training judge"] if both else []
    lines += ["### Per seed, and paired against the SFT student", "", _md_table(header, seed_rows), "",
              "## Which orderings held", ""] + [f"- {x}" for x in orderings(results)] + [""]
    figs = {
        "win_rates": plot_win_rates(results, folder / "plots" / "win_rates.png"),
        "relabel": plot_sweep({results["relabel_sweep"]["entry"]: results["relabel_sweep"]["points"]}, labels,
                              folder / "plots" / "relabel_share.png", xlabel="judge-relabelled pairs (%)",
                              title="Figure 2 analogue: win rate vs share of real preference pairs"),
        "length": plot_length_buckets(results, folder / "plots" / "length_buckets.png"),
        "data": plot_sweep(results["data_sweep"], labels, folder / "plots" / "data_share.png",
                           xlabel="share of distillation data (%)", title="Figure 4 analogue: win rate vs data share"),
    }
    if figs["win_rates"]:
        lines += ["![win rates](plots/win_rates.png)", ""]
    if figs["relabel"]:
        pts = results["relabel_sweep"]["points"]
        lines += ["## Figure 2 analogue: share of judge-relabelled pairs", "", "![relabel](plots/relabel_share.png)", "",
                  _md_table(["Relabelled", "Win rate (95% CI)"], [[f"{100 * p['share']:.0f}%", _fmt_rate(p["win_rate"], p["win_rate_ci"])] for p in pts]), ""]
    if figs["length"]:
        lines += ["## Figure 3 analogue: win rate by generation length", "", "![length](plots/length_buckets.png)", "", length_table(results), ""]
    if figs["data"]:
        shares = sorted({p["share"] for v in results["data_sweep"].values() for p in v})
        body = []
        for key, pts in results["data_sweep"].items():
            by = {p["share"]: p for p in pts}
            body.append([labels.get(key, key)] + [_fmt_rate(by[s]["win_rate"], by[s]["win_rate_ci"]) if s in by else "—" for s in shares])
        lines += ["## Figure 4 analogue: share of distillation data", "", "![data](plots/data_share.png)", "",
                  _md_table(["Method"] + [f"{100 * s:g}%" for s in shares], body), ""]
    if plot_budget(results, folder / "plots" / "samples_and_oracle_calls.png"):
        lines += ["## Win-rate methods: samples and oracle calls", "", "![budget](plots/samples_and_oracle_calls.png)", ""]
    lines += ["## Cost", "", _cost_table(results), ""]
    timings = results.get("timings_s") or {}
    if timings or results.get("wall_s"):
        shared = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        wall = results.get("wall_s", {})
        lines += ["## Wall time", "", f"Shared stages: {shared or '—'}. Bench jobs (training + evaluation, summed over "
                  f"all invocations): {wall.get('jobs', 0):.0f} s; this invocation: {wall.get('this_invocation', 0):.0f} s.", ""]
    return "\n".join(lines)


def write_bench_report(folder: Path, results: dict) -> Path:
    path = Path(folder) / "report.md"
    atomic_write_text(path, build_bench_report(Path(folder), results))
    return path


def console_summary(results: dict) -> str:
    return console_table(results) + "\n\n" + "\n".join(orderings(results))
