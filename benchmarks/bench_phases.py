# python benchmarks/bench_phases.py runs/bench [--jobs] [--out benchmarks/results/bench_phases.json]
"""A bench run folder's wall time by phase: training, in-loop sampling, validation, test generation, grading.

Reads every job's result.json and test_stepN.json under RUN/bench/runs/ (nothing is run or
loaded) and prints, per method, the means over its tested jobs (one per seed) of
`prefdistill.bench.records.phases`; `--jobs` adds a row per job, grid jobs included. Folders
written before the phase timers existed still give the totals (train wall, test wall); the
phases they did not time print as a dash. So the same command reads a bench from before a
change and one from after it.
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a run folder (RUN) or its bench folder (RUN/bench)")
    p.add_argument("--jobs", action="store_true", help="also a row per job")
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
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
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
