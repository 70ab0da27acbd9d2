"""Local worker processes: each key to exactly one of N processes, one device each, failures named by key.

    failed = run_workers(target, payload, keys, workers=2, devices=["cuda:0", "cuda:1"])   # [Failure(key, error)]

`target(payload, tasks, report)` runs in each process (spawned, so CUDA and threads start
clean): it takes keys from `tasks` until None and calls report("start" | "done" | "failed",
key, error). A process that dies mid-key is reported as that key's failure.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass

from prefdistill.errors import ConfigError


@dataclass(frozen=True)
class Failure:
    key: str
    error: str


def worker_devices(workers: int, devices: list[str] | None) -> list[str | None]:
    """The device of each worker: one of `devices` each (None: the machine's default, CPU threads shared)."""
    if workers < 1:
        raise ConfigError(f"--workers: give at least 1 worker process, got {workers}")
    if not devices:
        return [None] * workers
    if workers > len(devices):
        raise ConfigError(f"--workers {workers} with {len(devices)} --devices ({','.join(devices)}): one job per device at a "
                          "time needs a device for each worker")
    for d in devices:
        if d != "cpu" and not (d.startswith("cuda:") and d[5:].isdigit()):
            raise ConfigError(f"--devices: {d!r} is not cpu or cuda:N")
    return list(devices[:workers])


def _env(device: str | None) -> dict[str, str]:
    """The worker's environment: its one GPU as the only visible one (so models on "auto" land there)."""
    if device is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": "" if device == "cpu" else device.split(":")[1]}


def _start(target, payload, tasks, events, threads: int, device: str | None):
    previous = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({**_env(device), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    try:  # a spawned child reads its environment at start
        process = multiprocessing.get_context("spawn").Process(target=_entry, args=(target, payload, tasks, events, threads),
                                                               daemon=False)
        process.start()
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return process


class _Report:
    """What a worker tells the parent: (kind, key, error, its pid)."""

    def __init__(self, events):
        self.events = events

    def __call__(self, kind: str, key: str, error: str = "") -> None:
        self.events.put((kind, key, error, os.getpid()))


def _entry(target, payload, tasks, events, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    target(payload, tasks, _Report(events))


def run_workers(target, payload, keys: list[str], workers: int, devices: list[str] | None = None) -> list[Failure]:
    """Run every key once across `workers` processes; the keys that failed, in the order given."""
    assigned = worker_devices(workers, devices)
    ctx = multiprocessing.get_context("spawn")
    tasks, events = ctx.Queue(), ctx.SimpleQueue()  # events written at once: a worker killed after "start" is still seen
    for key in [*keys, *[None] * workers]:
        tasks.put(key)
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [_start(target, payload, tasks, events, threads, d) for d in assigned]
    running: dict[int, str] = {}  # process index -> the key it works on (from its pid, seen in the events)
    pids = {p.pid: i for i, p in enumerate(procs)}
    failed: dict[str, str] = {}

    def drain() -> None:
        while not events.empty():
            kind, key, error, pid = events.get()
            if kind == "start":
                running[pids[pid]] = key
            else:
                running.pop(pids[pid], None)
            if kind == "failed":
                failed[key] = error

    while any(p.is_alive() for p in procs):
        drain()
        time.sleep(0.2)
    drain()
    lost = []
    for i, p in enumerate(procs):
        p.join()
        if p.exitcode != 0:
            if i in running:
                failed[running[i]] = f"its worker process exited with code {p.exitcode}"
            else:
                lost.append(Failure(f"(worker {i})", f"exited with code {p.exitcode} between jobs"))
    return [Failure(k, failed[k]) for k in keys if k in failed] + lost
