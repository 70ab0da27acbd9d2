"""Training rows as typed records: what a method's loss reads, checked once where training starts.

    rows = training_rows([{"id": "a", "prompt": "…", "target": "…"}])   # -> [TargetRow(...)]
    rows[0].prompt, rows[0].target

A method consumes one kind of row (`prefdistill.methods.registry.CONSUMES`):
  targets  `TargetRow`  a prompt and its reference (the supervised half)
  prompts  `PromptRow`  a prompt alone (the method samples for itself)
  pairs    `PairRow`    a prompt, the chosen and the rejected completion, and their metadata
Files, the pipeline and the bench keep rows as plain dicts (JSONL lines); the training loop
and the registry turn them into records with `training_rows`, which names the row and the
field of a bad one, so a loss never reads a missing key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union

from prefdistill.data.pairs import PairRow


@dataclass(frozen=True)
class TargetRow:
    """A prompt and the reference completion a method imitates or scores (SFT, KD, DistiLLM, DPKD's token mode)."""
    prompt: str
    target: str
    id: str = ""


@dataclass(frozen=True)
class PromptRow:
    """A prompt alone: the method draws its own completions (the win-rate methods)."""
    prompt: str
    id: str = ""


TrainingRow = Union[TargetRow, PromptRow, PairRow]
RECORDS = (TargetRow, PromptRow, PairRow)


def training_row(row: Mapping[str, Any] | TrainingRow, where: str = "row") -> TrainingRow:
    """A dict as the record of its kind (a `chosen` side: a pair; a `target`: a target row; else a prompt row)."""
    if isinstance(row, RECORDS):
        return row
    if not isinstance(row, Mapping):
        raise TypeError(f"{where}: a training row is a dict or a TargetRow / PromptRow / PairRow, got {type(row).__name__}")
    if "chosen" in row or "rejected" in row:  # an id keys stored teacher log-probs; a pair built by hand may have none
        return PairRow.from_dict({"id": "", **row}, where=where)
    ident = str(row.get("id", ""))
    for name in ("prompt", *(("target",) if "target" in row else ())):
        if not isinstance(row.get(name), str):
            raise ValueError(f"{where} (id {ident!r}) has no text {name!r}, got {row.get(name)!r:.60}")
    extra = set(row) - {"id", "prompt", "target"}
    if extra:
        raise ValueError(f"{where} (id {ident!r}) has unknown fields {sorted(extra)}: a target row has id, prompt, target; "
                         "a prompt row id, prompt; a pair the fields of prefdistill.data.pairs.PairRow")
    if "target" in row:
        return TargetRow(row["prompt"], row["target"], ident)
    return PromptRow(row["prompt"], ident)


def training_rows(rows: list, where: str = "rows") -> list[TrainingRow]:
    """Every row as its record (records pass through unchanged), each named by its position in an error."""
    if all(isinstance(r, RECORDS) for r in rows):
        return list(rows)
    return [training_row(r, f"{where}[{i}]") for i, r in enumerate(rows)]


def field_of(row: Mapping[str, Any] | TrainingRow, name: str, default: Any = None) -> Any:
    """A row's field whether it is a dict (files, pipeline) or a record (losses): for helpers that serve both."""
    return row.get(name, default) if isinstance(row, Mapping) else getattr(row, name, default)
