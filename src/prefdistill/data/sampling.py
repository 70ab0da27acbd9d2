"""Resumable sampling: each answered prompt is on disk the moment its completions exist.

    result = sample_resumable(load_model, examples, sampling, RUN / "samples" / "teacher",
                              chunk_size=16, seed=0, desc="sample teacher", model_name="teacher:...")
    result.samples    # {example id: [completion, ...]} for every answered prompt
    result.failures   # {example id: {"prompt", "kind", "error", "attempts"}} for prompts not answered

The folder holds `meta.json` (model and settings; other settings are refused),
`samples.jsonl` (one line per answered prompt, appended and fsynced as soon as the prompt
is done, so a crash or SIGKILL loses at most the prompts in flight), `failures.jsonl`
(the prompts the last run could not answer, retried by the next run) and, for API models,
`api_stats.json` (requests, retries and faults, summed over runs). A restart generates
only the prompts missing from `samples.jsonl`; none is generated twice.

Under `accelerate launch` (W processes) process r generates the missing prompts whose
index i in `examples` has i % W == r, into its own `samples.rank{r}.jsonl` (and
`failures.rank{r}.jsonl`, `api_stats.rank{r}.json`); after a barrier every process reads
the union of all journals, so the shares merge without duplicates or gaps.
"""
from __future__ import annotations

import json
import os
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from prefdistill.config.schema import SamplingConfig
from prefdistill.io import (Example, is_main_process, n_processes, process_rank, read_json, read_jsonl, wait_for_everyone, write_json,
                            write_jsonl)
from prefdistill.progress import bar


class Journal:
    """An append-only JSONL file whose every line is flushed and fsynced on write.

    A line cut short by a crash (no trailing newline) is dropped when the journal opens.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._drop_partial_line()

    def _drop_partial_line(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def read(self) -> list[dict]:
        return read_jsonl(self.path) if self.path.is_file() else []

    def append(self, row: dict) -> None:
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())


class IncompleteSampling(RuntimeError):
    """Some prompts could not be answered (after the backend's retries); a re-run asks only for those."""


@dataclass
class SampleSet:
    samples: dict[str, list[str]] = field(default_factory=dict)
    failures: dict[str, dict] = field(default_factory=dict)

    def require_all(self, what: str) -> None:
        """Raise when some prompts went unanswered, naming them (a re-run retries only those)."""
        if self.failures:
            first = next(iter(self.failures.items()))
            raise IncompleteSampling(f"{what}: {len(self.failures)} prompt(s) could not be answered, e.g. {first[0]} "
                                     f"({first[1]['kind']}: {first[1]['error'][:200]}). Run again to retry only those.")


def sample_resumable(load_model: Callable[[], object], examples: list[Example], sampling: SamplingConfig, out_dir: Path, *,
                     chunk_size: int, seed: int, desc: str, model_name: str) -> SampleSet:
    """`sampling.num_samples` completions per example, resumable prompt by prompt.

    Local models generate chunk k of `chunk_size` prompts with seed `seed + k`, so an
    uninterrupted run is reproducible; a model with `one_call = True` (an API, which
    seeds each request from its prompt) gets every missing prompt in one call.
    """
    out_dir = Path(out_dir)
    _check_meta(out_dir, {"model": model_name, "sampling": asdict(sampling), "seed": seed, "chunk_size": chunk_size})
    rank, world = process_rank(), n_processes()
    suffix = "" if world == 1 else f".rank{rank}"
    done = _read_samples(out_dir)
    if all(e.id in done for e in examples):
        return _only(SampleSet(done), examples)
    journal = Journal(out_dir / f"samples{suffix}.jsonl")
    position = {e.id: i for i, e in enumerate(examples)}
    mine = [e for e in examples if e.id not in done and position[e.id] % world == rank]
    failures: dict[str, dict] = {}
    if mine:
        model = load_model()
        chunks = [examples[i:i + chunk_size] for i in range(0, len(examples), chunk_size)]
        mine_ids = {e.id for e in mine}
        groups = [(seed + k, [e for e in chunk if e.id in mine_ids]) for k, chunk in enumerate(chunks)]
        if getattr(model, "one_call", False):
            groups = [(seed, mine)]
        stats_before = Counter(getattr(model, "stats", None) or {})
        progress = bar(total=len(mine), desc=desc, unit="prompt")
        for group_seed, todo in (grp for grp in groups if grp[1]):
            def on_result(i: int, out, todo=todo) -> None:
                progress.update()
                ex = todo[i]
                if isinstance(out, list):
                    journal.append({"id": ex.id, "prompt": ex.prompt, "samples": out})
                else:
                    failures[ex.id] = {"id": ex.id, "prompt": ex.prompt, "kind": out.kind, "error": out.error,
                                       "attempts": out.attempts}
            model.generate([e.prompt for e in todo], sampling, seed=group_seed, desc="", on_result=on_result)
        progress.close()
        if getattr(model, "stats", None) is not None:
            _add_stats(out_dir / f"api_stats{suffix}.json", Counter(model.stats) - stats_before)
    write_jsonl(out_dir / f"failures{suffix}.jsonl", list(failures.values()))
    wait_for_everyone()  # every share is on disk before anyone reads the union
    failed = {r["id"]: r for path in sorted(out_dir.glob("failures*.jsonl")) for r in read_jsonl(path)}
    result = SampleSet(_read_samples(out_dir))
    result.failures = {i: f for i, f in failed.items() if i not in result.samples and i in position}
    return _only(result, examples)


def _read_samples(out_dir: Path) -> dict[str, list[str]]:
    """{id: completions} from every journal of the folder (and chunk files of older run folders); first line wins."""
    paths = sorted(out_dir.glob("chunk_*.jsonl")) + [out_dir / "samples.jsonl"] + sorted(out_dir.glob("samples.rank*.jsonl"))
    out: dict[str, list[str]] = {}
    for path in paths:
        if path.is_file():
            for row in Journal(path).read():
                out.setdefault(row["id"], row["samples"])
    return out


def _check_meta(out_dir: Path, meta: dict) -> None:
    path = out_dir / "meta.json"
    if path.is_file() and read_json(path) != meta:
        raise ValueError(f"{out_dir} holds samples made with other settings ({read_json(path)}); "
                         "delete that folder or use a new run name to sample again")
    if is_main_process():
        write_json(path, meta)


def _only(result: SampleSet, examples: list[Example]) -> SampleSet:
    ids = [e.id for e in examples]
    return SampleSet({i: result.samples[i] for i in ids if i in result.samples}, dict(result.failures))


def _add_stats(path: Path, stats: Counter) -> None:
    total = Counter(read_json(path) if path.is_file() else {})
    total.update(dict(stats))
    write_json(path, dict(sorted(total.items())))
