"""A training job as data: what to train, on what, into where; and what it gave back.

    method = resolve_method(cfg)                           # prefdistill.methods: spec, typed params, needs, once
    data = artifacts.training_data(method)                 # typed rows and the teacher signal they need
    job = TrainJob(method, data, cfg.distill.train, out=folder.checkpoint("student_distill"), seed=0)
    result = train_job(job, artifacts)                      # prefdistill.run.train_job -> TrainResult

The distill stage and every bench job build one `TrainJob` and call `train_job`; the bench
reads its `TrainResult` (log, steps, wall time) into the job's result (`prefdistill.bench.records.JobResult`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prefdistill.config.schema import OracleConfig, TrainConfig
from prefdistill.methods import MethodSpec, ResolvedMethod
from prefdistill.signal.topk_cache import TopkSignal


@dataclass(frozen=True)
class TrainingData:
    """A method's training rows (what it consumes: targets, prompts or pairs) and the cached teacher signal they need.

    `teacher_topk` is the `TopkSignal` of the rows when the method reads a cached top-k (the
    `teacher_topk` need), else None; its records are keyed by content, so any subset of the
    rows reads it unchanged.
    """
    rows: list[dict]
    teacher_topk: TopkSignal | None = None


@dataclass(frozen=True)
class TrainJob:
    """One training run of a method from the SFT student: the resolved method, its data, the schedule, where it goes.

    `on_step(step, lm, snapshot)`: called after each applied step (`prefdistill.training.loop.train`).
    `oracle`: the preference oracle of a win-rate method (a bench entry's own); None: the run's `oracle`.
    """
    method: ResolvedMethod
    data: TrainingData
    train: TrainConfig
    out: Path
    seed: int
    desc: str = ""
    oracle: OracleConfig | None = None
    on_step: Callable | None = field(default=None, compare=False)

    @property
    def spec(self) -> MethodSpec:
        return self.method.spec

    @property
    def params(self) -> Any:
        return self.method.params

    @property
    def label(self) -> str:
        return self.desc or f"distill {self.method.name}"


@dataclass(frozen=True)
class TrainResult:
    """What a finished job gave: its checkpoint folder, the per-step log, and its training wall time (0 when it was
    found finished)."""
    checkpoint: Path
    log: list[dict]
    wall_s: float

    @property
    def steps(self) -> int:
        return len(self.log)
