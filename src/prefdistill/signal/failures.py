"""Rows whose teacher top-k could not be had, recorded with their id and reason: left out, counted, and limited.

    failures = SignalFailures(path, max_fraction=0.05, total=200)     # total: the rows the share is taken of
    failures.reason(key)                     # why a row failed before (None: ask the teacher), unless forgotten
    failures.record(key, "3#0", prompt, why) # one JSONL line
    failures.check()                         # SignalFailuresExceeded, naming the rows, once over the share

A served teacher's tokens of a row may not line up with the student's (`api_topk.Misaligned`:
a character split into byte tokens, a split the server's tokenizer does not make). Such a row
is not a reason to stop a run: the pipeline records it here (beside the cache,
RUN/teacher_signal/topk_k{K}.failures.jsonl, or beside the checkpoint a served teacher trains,
CHECKPOINT.signal_failures.jsonl), leaves it out of the distillation term, and counts it in the
training log (`count_signal_failed_rows`). Rows recorded once are not asked again on a rerun:
set `distill.signal_retry_failed: true`, or delete the file, to ask again. Above
`distill.signal_max_failed_fraction` of `total` the run stops with an error naming the rows.
Key: `row_key(prompt, completion ids)`, so a served row is known by the very sample that failed.
Under several processes each keeps its own file (`.rankN`) and applies the share to its own rows.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefdistill.io import n_processes, process_rank, read_jsonl, write_jsonl

SHARE_KEY, RETRY_KEY = "distill.signal_max_failed_fraction", "distill.signal_retry_failed"


class SignalFailuresExceeded(ValueError):
    """More rows failed than the stated share allows."""


def row_key(prompt: str, completion_ids: list[int]) -> str:
    """A failed row's identity: its prompt and completion token ids."""
    return hashlib.sha256(json.dumps([prompt, list(completion_ids)]).encode("utf-8")).hexdigest()[:32]


def process_path(path: Path) -> Path:
    """`path`, or its own `.rankN` copy under several processes (each records the rows it scores)."""
    path = Path(path)
    return path if n_processes() == 1 else path.with_name(f"{path.stem}.rank{process_rank()}{path.suffix}")


class SignalFailures:
    """The failure record of one cache or one training run (a JSONL file, one line per failed row)."""

    def __init__(self, path: Path, *, max_fraction: float, total: int):
        self.path, self.max_fraction, self.total = Path(path), max_fraction, max(1, total)
        self.records = {r["key"]: r for r in read_jsonl(self.path)} if self.path.is_file() else {}

    def reason(self, key: str) -> str | None:
        """Why the row of `key` failed before, or None when it has no record."""
        return self.records[key]["reason"] if key in self.records else None

    def forget(self, keys) -> None:
        """Drop the records of `keys` (they will be asked again)."""
        keys = set(keys) & set(self.records)
        if keys:
            self.records = {k: r for k, r in self.records.items() if k not in keys}
            write_jsonl(self.path, self.records.values())

    def record(self, key: str, row_id: str, prompt: str, reason: str) -> None:
        """Add a failed row (once); `check` says whether the failures now exceed the share."""
        if key not in self.records:
            self.records[key] = {"key": key, "id": row_id, "prompt": prompt, "reason": reason}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(self.records[key], ensure_ascii=False) + "\n")

    def check(self, keys=None) -> None:
        """Raise SignalFailuresExceeded when the failed rows (of `keys`; None: all recorded) exceed max_fraction · total."""
        failed = [r for k, r in self.records.items() if keys is None or k in keys]
        if len(failed) > self.max_fraction * self.total:
            ids = ", ".join(str(r["id"]) for r in failed[:8]) + (", ..." if len(failed) > 8 else "")
            raise SignalFailuresExceeded(
                f"the teacher's top-k could not be had for {len(failed)} of {self.total} rows, more than "
                f"{SHARE_KEY}={self.max_fraction:g}: {ids} (each with its reason in {self.path}; first: {failed[0]['reason']}). "
                f"Raise the share, fix the rows, or set {RETRY_KEY}=true (or delete the file) to ask the teacher again")
