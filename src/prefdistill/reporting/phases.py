"""A bench's wall time by phase, per method: training, in-loop sampling, validation, test generation, grading, calibration.

    print(phase_table(results["phases_wall_s"], labels))     # markdown; results.json's phases_wall_s
    python benchmarks/bench_phases.py runs/bench             # the same table from a bench run folder, per job and per method

The numbers are `prefdistill.bench.records.phases` (seconds per job, means over seeds here):
training is the job's train wall time less its in-loop sampling and validation; the test
stage is generation plus grading. A dash: a job trained or tested before that timer existed.
"""
from __future__ import annotations

from prefdistill.reporting.common import DASH, fmt, md_table, number

COLUMNS = (("train_wall", "Train wall (s)"), ("training", "Training (s)"), ("sampling", "In-loop sampling (s)"),
           ("validation", "Validation (s)"), ("test_wall", "Test wall (s)"), ("test_generation", "Test generation (s)"),
           ("grading", "Grading (s)"), ("calibration", "Calibration scoring (s)"))
NOTE = ("Seconds per job, means over seeds. Train wall = training + in-loop sampling + validation scoring; training "
        "includes model loading, backward passes, optimizer steps and checkpoint writes. Test wall = test generation + "
        "grading. Calibration scoring: the tested weights loaded again to score the calibration candidates, outside the "
        f"test wall. {DASH}: not timed (written before the phase timers, or calibration off).")


def sampling_share(p: dict) -> str:
    """In-loop sampling as a share of the train wall time, or DASH."""
    sampled, wall = number(p.get("sampling")), number(p.get("train_wall"))
    return DASH if sampled is None or not wall else f"{100 * sampled / wall:.0f}%"


def phase_table(phases: dict[str, dict], labels: dict[str, str] | None = None) -> str:
    """Markdown: one row per key of `phases` ({phase: seconds}), labelled by `labels` where given."""
    labels = labels or {}
    body = [[labels.get(k, k)] + [fmt(p.get(f), 1) for f, _ in COLUMNS] + [sampling_share(p)] for k, p in phases.items()]
    return md_table(["Method"] + [h for _, h in COLUMNS] + ["Sampling share"], body)


def phase_section(results: dict) -> list[str]:
    """The report's "Wall time by phase" section, or nothing when results.json has no phases_wall_s."""
    phases = results.get("phases_wall_s") or {}
    if not phases:
        return []
    labels = {k: c.get("label", k) for k, c in (results.get("costs") or {}).items()}
    return ["## Wall time by phase", "", phase_table(phases, labels), "", NOTE, ""]
