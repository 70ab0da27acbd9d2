# python benchmarks/bench_phases.py runs/bench [--jobs] [--out benchmarks/results/bench_phases.json]
#     [--before benchmarks/results/bench_bench.json --control seqkd]
"""A bench run folder's wall time by phase: training, in-loop sampling, validation, test generation, grading.

Reads every job's result.json and test_stepN.json under RUN/bench/runs/ (nothing is run or
loaded) and prints, per method, the means over its tested jobs (one per seed) of
`prefdistill.bench.records.phases`; `--jobs` adds a row per job, grid jobs included. Folders
written before the phase timers existed still give the totals (train wall, test wall); the
phases they did not time print as a dash. So the same command reads a bench from before a
change and one from after it.

`--before RESULTS` compares with an older bench's results.json (its per-method `costs`: train
and eval wall means over seeds) and projects this folder's whole job time from what it has
finished (a bench stopped early): per method, its grid jobs as run, plus each seed's train and
test wall of the chosen setting at the mean of the runs of it that finished. Two runs on
different machines or under different loads are made comparable by `--control ENTRY`, a
method whose code did not change: the ratio of its train wall after to before is the machine
factor, and every before number is scaled by it.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from prefdistill.bench.numbers import mean_phases  # noqa: E402
from prefdistill.bench.records import JobResult, TestResult, phases  # noqa: E402
from prefdistill.io import read_json  # noqa: E402
from prefdistill.reporting.phases import NOTE, phase_table  # noqa: E402


def read_jobs(runs: Path) -> list[tuple[str, JobResult, TestResult | None]]:
    """(key, result, its latest test or None) of every job under `runs` that finished training, in key order."""
    out = []
    for path in sorted(runs.glob("*/result.json")):
        tests = sorted(path.parent.glob("test_step*.json"), key=lambda p: int(p.stem.removeprefix("test_step")))
        test = TestResult.from_json(read_json(tests[-1])) if tests else None
        out.append((path.parent.name, JobResult.from_json(read_json(path)), test))
    return out


def by_method(jobs) -> dict[str, dict]:
    """Entry -> mean phases over its tested jobs (all its jobs where none was tested)."""
    groups = defaultdict(list)
    for _, result, test in jobs:
        groups[result.job.entry].append((result, test))
    return {entry: mean_phases([rt for rt in runs if rt[1] is not None] or runs) for entry, runs in groups.items()}


def projected_jobs_s(jobs, seeds: int) -> dict[str, float]:
    """Entry -> its jobs' wall seconds had every seed trained and tested: grid jobs as run, the chosen setting's
    other seeds at the mean train wall of its runs, every seed's test at the mean test wall measured."""
    out = {}
    for entry in sorted({r.job.entry for _, r, _ in jobs}):
        mine = [(r, t) for _, r, t in jobs if r.job.entry == entry]
        tested = [(r, t) for r, t in mine if t is not None]
        grid = sum(r.cost.train_wall_s for r, _ in mine if r.job.seed == mine[0][0].job.seed)
        if not tested:
            out[entry] = None
            continue
        chosen = [r for r, _ in mine if r.job.setting == tested[0][0].job.setting]
        train = sum(r.cost.train_wall_s for r in chosen) / len(chosen)
        test = sum(t.eval_wall_s for _, t in tested) / len(tested)
        out[entry] = round(grid + (seeds - 1) * train + seeds * test, 1)
    return out


def compare(before: dict, methods: dict, jobs, control: str | None) -> dict:
    """Per method: before (scaled by the control's machine factor) and after, train and test wall; the projected total."""
    costs, seeds = before.get("costs") or {}, len(before.get("seeds") or [0])
    factor = 1.0
    if control:
        factor = methods[control]["train_wall"] / costs[control]["train_wall_s"]
    rows = {}
    for entry, after in methods.items():
        b = costs.get(entry)
        if b is None:
            continue
        rows[entry] = {"before_train_wall_s": round(factor * b["train_wall_s"], 1), "after_train_wall_s": after["train_wall"],
                       "train_ratio": round(after["train_wall"] / (factor * b["train_wall_s"]), 3),
                       "before_test_wall_s": round(factor * b["eval_wall_s"], 1), "after_test_wall_s": after["test_wall"],
                       "test_ratio": None if after["test_wall"] is None else round(after["test_wall"] / (factor * b["eval_wall_s"]), 3)}
    projected = projected_jobs_s(jobs, seeds)
    total_before = factor * before["wall_s"]["jobs"]
    complete = all(v is not None for v in projected.values()) and set(projected) >= set(costs)
    total_after = sum(v for v in projected.values() if v is not None)
    return {"control": control, "machine_factor": round(factor, 3), "before_jobs_s_scaled": round(total_before, 1),
            "projected_after_jobs_s": round(total_after, 1) if complete else None,
            "jobs_ratio": round(total_after / total_before, 3) if complete else None,
            "projected_by_method": projected, "methods": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a run folder (RUN) or its bench folder (RUN/bench)")
    p.add_argument("--jobs", action="store_true", help="also a row per job")
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    p.add_argument("--before", type=Path, help="an older bench's results.json to compare with")
    p.add_argument("--control", help="with --before: an entry whose code did not change; its train-wall ratio scales the before")
    args = p.parse_args(argv)
    root = args.folder if (args.folder / "runs").is_dir() else args.folder / "bench"
    jobs = read_jobs(root / "runs")
    if not jobs:
        raise SystemExit(f"no finished bench jobs under {root / 'runs'}")
    methods = by_method(jobs)
    labels = {r.job.entry: r.label for _, r, _ in jobs}
    print(f"# {root}: {len(jobs)} jobs\n\n" + phase_table(methods, labels) + "\n\n" + NOTE)
    per_job = {key: phases(result, test) for key, result, test in jobs}
    if args.jobs:
        print("\n" + phase_table(per_job))
    result = {"folder": str(root), "phases_wall_s": methods, "jobs_phases_wall_s": per_job}
    if args.before:
        result["before"] = {"file": str(args.before), **compare(json.loads(args.before.read_text()), methods, jobs, args.control)}
        print("\n" + json.dumps(result["before"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
