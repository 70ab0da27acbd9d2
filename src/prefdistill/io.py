"""Atomic, crash-safe file writes and JSONL records: the one home for run-folder I/O.

A file is written to a temporary sibling and renamed into place, so a crash never
leaves a half-written file where a restart would trust it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable


@dataclass
class Example:
    """One task row: the prompt text (before any chat template) and its reference."""

    id: str
    prompt: str
    target: str = ""  # the reference; the distillation half keeps it only for optional ROUGE scores
    meta: dict[str, Any] = field(default_factory=dict)


def text_key(text: str) -> str:
    """Text with white space collapsed: "a  b\n" and "a b" are the same prompt (or reference) to a reader."""
    return " ".join(text.split())


SELF_GROUP_PREFIX = "id:"  # the group of a row that has none: "id:<its id>"


def group_of(example: Example) -> str:
    """The one group key: rows that share it (a paper, a conversation, one prompt's references) are correlated.

    meta["group"] when the source has a group column (or deduplication merged rows that
    share a prompt), else "id:<id>": the row is its own group. Splits keep groups whole,
    the two judges learn from disjoint groups, and every bootstrap resamples groups.
    """
    group = example.meta.get("group")
    return f"{SELF_GROUP_PREFIX}{example.id}" if group is None else str(group)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Open a temporary sibling of `path` for writing; rename it into place on success.

    On any error (or interrupt) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary sibling folder to fill; it replaces `path` (if any) on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def n_processes() -> int:
    """Processes started by `accelerate launch` / torchrun (1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_rank() -> int:
    """This process's index among those of `accelerate launch` / torchrun (0 when run plainly)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Under many processes only the main one writes the run folder's shared files."""
    return process_rank() == 0


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSONL file, one a line; blank lines are skipped.

    A line that is not UTF-8, not JSON or not an object raises ValueError naming the
    file and the line (1-based). A UTF-8 byte-order mark on the first line is ignored.
    """
    rows = []
    with open(path, "rb") as f:  # bytes: a decoding error can then name its line
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r}); "
                                 "re-save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object ({{...}}), got {type(row).__name__}")
            rows.append(row)
    return rows


def write_examples(path: str | Path, examples: Iterable[Example]) -> None:
    write_jsonl(path, (asdict(e) for e in examples))


def read_examples(path: str | Path) -> list[Example]:
    return [Example(**r) for r in read_jsonl(path)]


def wait_for_everyone() -> None:
    """A barrier across the processes of `accelerate launch`; nothing when run plainly."""
    if n_processes() > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():  # sampling may come before any training set the group up
            from accelerate import PartialState

            PartialState(cpu=not torch.cuda.is_available())  # gloo on CPUs: a plain PartialState() stays single-process
        dist.barrier()
