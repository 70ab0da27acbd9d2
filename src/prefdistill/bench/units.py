"""The bench as standalone units: list them, run one, or run them all in local worker processes.

    prefdistill bench CONFIG --plan                  # every unit in order: stage, key, setting, seed, what it waits for
    prefdistill bench CONFIG --job KEY               # one unit, in this process (what a Slurm array task runs)
    prefdistill bench CONFIG --workers 2 --devices cuda:0,cuda:1

    items = bench_plan(runner)                       # [PlanItem], pending seed jobs until selection.json exists
    run_key(runner, key)                             # one unit; ConfigError for an unknown key or one whose needs are not done
    run_parallel(runner, workers=2)                  # shared stages, grid in workers, selection, seed jobs in workers, report

The run folder is the meeting point: each job claims RUN/bench/claims/KEY.claim while it
runs and writes RUN/bench/runs/KEY/; whoever writes the report finds every job done, so a
plain run, one with workers and one after `--job` calls give the same results file.
"""
from __future__ import annotations

import dataclasses
import traceback

from prefdistill.bench.plan import SELECTION, SHARED, PlanItem, as_setting, judged_jobs, plan
from prefdistill.bench.runner import Bench
from prefdistill.bench.workers import run_workers
from prefdistill.errors import ConfigError
from prefdistill.io import read_json


class JobsFailed(RuntimeError):
    """Some bench jobs failed in worker processes; the message names each with its error."""


def chosen_points(runner: Bench) -> dict[str, tuple] | None:
    """Each entry's chosen setting, once selection.json holds them all; else None."""
    path = runner.paths.report_file("selection.json")
    known = read_json(path) if path.is_file() else {}
    if not all(k in known for k in runner.entries):
        return None
    return {k: as_setting(known[k]["setting"]) for k in runner.entries}


def bench_plan(runner: Bench) -> list[PlanItem]:
    """`--plan`: every unit in order (`prefdistill.bench.plan.plan`), seed and figure jobs keyed once chosen."""
    return plan(runner.bench, chosen_points(runner))


def item_done(runner: Bench, item: PlanItem) -> bool:
    if item.stage == SHARED:
        return runner.paths.report_file("shared.json").is_file()
    if item.stage == SELECTION:
        return chosen_points(runner) is not None
    if item.stage == "grid":
        return runner.done(item.job)
    step = read_json(runner.paths.report_file("selection.json"))[item.job.entry]["step"]
    return runner.paths.test(item.key, step).is_file()


def run_key(runner: Bench, key: str, *, wait: bool = True) -> bool:
    """`--job KEY`: one unit, its outputs in the run folder. A job trains and scores validation; a chosen one (a seed
    or figure job, or the chosen grid point once the selection is made) is also tested. False when `wait` is off and
    another runner holds the job's claim."""
    items = bench_plan(runner)
    by_key = {i.key: i for i in items if not i.pending}  # a chosen grid point's later (seeds) item: trained and tested
    if key not in by_key:
        later = " (seed and figure jobs get their keys once the selection is made)" if any(i.pending for i in items) else ""
        raise ConfigError(f"--job {key}: not a job of this bench{later}; `prefdistill bench CONFIG --plan` lists them")
    item = by_key[key]
    missing = [n for n in item.needs if not item_done(runner, by_key[n])]
    if missing:
        raise ConfigError(f"--job {key} needs {len(missing)} unit(s) done first: {', '.join(missing)} "
                          "(run them with --job, or run the whole bench)")
    if item.stage == SHARED:
        runner.prepare()
        return True
    if item.stage == SELECTION:
        runner.select()
        return True
    chosen = chosen_points(runner)
    step = None
    if chosen is not None and item.job in judged_jobs(runner.bench, chosen):
        step = read_json(runner.paths.report_file("selection.json"))[item.job.entry]["step"]
    with runner.claimed(key, wait=wait) as mine:
        if not mine:
            return False
        runner.train(item.job)
        if step is not None:
            runner.test(item.job, step)
    return True


def work_on(payload: tuple, tasks, report) -> None:
    """One worker process (`prefdistill.bench.workers`): the bench built again, each key handed out run unless another
    runner holds it (the final pass waits for those)."""
    cfg, bench, options = payload
    runner = Bench(cfg, bench, **dataclasses.asdict(options))
    for key in iter(tasks.get, None):
        report("start", key)
        try:
            run_key(runner, key, wait=False)
        except Exception as e:  # reported with its key; the other jobs go on
            traceback.print_exc()
            report("failed", key, f"{type(e).__name__}: {e}")
        else:
            report("done", key)


def run_parallel(runner: Bench, workers: int, devices: list[str] | None = None) -> dict:
    """The bench with its jobs in `workers` processes (one per device of `devices`): the shared stages here, the grid in
    the workers, the selection here, the seed and figure jobs in the workers, then `Bench.run` (which finds them done)
    writes the report. A stage with failed jobs finishes its other jobs, then JobsFailed names them."""
    payload = (runner.cfg, runner.bench, runner.options)
    runner.prepare()
    in_workers(payload, [i.key for i in bench_plan(runner) if i.stage == "grid"], workers, devices)
    chosen = runner.select()
    tested = judged_jobs(runner.bench, {name: as_setting(c["setting"]) for name, c in chosen.items()})
    in_workers(payload, list(dict.fromkeys(j.key for j in tested)), workers, devices)
    return runner.run()


def in_workers(payload: tuple, keys: list[str], workers: int, devices: list[str] | None) -> None:
    print(f"[prefdistill] bench: {len(keys)} jobs in {workers} worker processes", flush=True)
    failed = run_workers(work_on, payload, keys, workers, devices)
    if failed:
        raise JobsFailed(f"{len(failed)} of {len(keys)} bench jobs failed (the others finished; rerun to retry them): "
                         + "; ".join(f"{f.key}: {f.error}" for f in failed))
