"""PLaD pseudo-preference pairs (teacher output ≻ student output), relabelling and scores.

    pairs, skipped = build_pairs(examples, teacher_samples, student_samples, meta)

The samples come from `prefdistill.data.sampling` (resumable). A pair row's fields, their types
and meaning are declared once, in `PairRow`; every function here builds or changes rows
through it. The pairs file is plain JSONL with the columns preference trainers expect
(`prompt`, `chosen`, `rejected`) plus that metadata:

    datasets.load_dataset("json", data_files="runs/NAME/pairs/pairs.jsonl")
    pairs_dataset(load_pairs(path))       # the same rows with typed columns (bool, float, struct)
"""
from __future__ import annotations

import dataclasses
import random
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union

from prefdistill.config.schema import SamplingConfig
from prefdistill.config.typed import from_dict, opt
from prefdistill.errors import ConfigError
from prefdistill.io import Example, read_jsonl, write_jsonl

Source = Literal["teacher", "student"]
# A SamplingConfig as `dataclasses.asdict` writes it; a dict, not the class, so that files
# written before a sampling option was added or removed still load.
Settings = dict[str, bool | int | float]
TEXT_COLUMNS = ("prompt", "chosen", "rejected")


def _required(doc: str) -> Any:
    return field(metadata={"doc": doc})


@dataclass
class PairRow:
    """One line of RUN/pairs/pairs.jsonl: the contract between the pairs stage, its files and the methods.

    In memory (pipeline, bench, training loop) a row is the dict `to_dict()` gives, in which
    fields that are None are left out: a pair the judge did not see has no judge scores.
    Every field whose name says `chosen` has a `rejected` twin; `swap_sides` moves them together.
    """

    id: str = _required("'EXAMPLE_ID#SAMPLE_INDEX'; keys RUN/pairs/teacher_logps.jsonl")
    prompt: str = _required("the task prompt, before any chat template")
    chosen: str = _required("the preferred completion")
    rejected: str = _required("the dispreferred completion")
    chosen_source: Source = opt("teacher", "which model wrote `chosen` (relabelling may swap the sides)")
    rejected_source: Source = opt("student", "which model wrote `rejected`")
    reference: str = opt("", "the example's reference output; ROUGE scores (pairs.score=rouge) need it")
    relabelled: bool = opt(False, "the judge ordered this pair (pairs.relabel_fraction, the bench's relabel shares)")
    swapped: bool = opt(False, "the judge preferred the student's sample, so the sides were exchanged")
    judge_chosen: float | None = opt(None, "judge score of `chosen` (relabelled pairs only)")
    judge_rejected: float | None = opt(None, "judge score of `rejected` (relabelled pairs only)")
    chosen_score: float | None = opt(None, "s(y; x) of `chosen` for PLaD's margin calibration (pairs.score)")
    rejected_score: float | None = opt(None, "s(y; x) of `rejected`")
    score_kind: Literal["rouge", "judge"] | None = opt(None, "what the scores are: ROUGE-L F1 against `reference`, or the judge's")
    teacher_model: str | None = opt(None, "the teacher's name_or_path")
    student_model: str | None = opt(None, "the SFT student's name_or_path")
    teacher_sampling: Settings | None = opt(None, "the sampling settings of the teacher's samples (a SamplingConfig)")
    student_sampling: Settings | None = opt(None, "the sampling settings of the student's samples (a SamplingConfig)")
    teacher_chosen_logp: float | None = opt(None, "the teacher's log p(chosen | x), summed; added in memory for DPKD, not stored")
    teacher_rejected_logp: float | None = opt(None, "the teacher's log p(rejected | x), summed; added in memory for DPKD, not stored")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "pair") -> "PairRow":
        """Check a row: non-empty text columns, an id, known fields only, each of its type (ints read as floats where floats are due)."""
        for col in TEXT_COLUMNS:
            if not isinstance(data.get(col), str) or not data[col].strip():
                raise ValueError(f"{where} (id {data.get('id')!r}) has an empty or missing {col!r}, got {data.get(col)!r:.60}")
        if "id" not in data:
            raise ValueError(f"{where} has no 'id' (the key of its teacher log-probabilities)")
        try:
            return from_dict(cls, dict(data))
        except ConfigError as e:
            raise ValueError(f"{where} (id {data.get('id')!r}): {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """The row as written to pairs.jsonl and handed to the methods; None fields left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def chosen_is_teacher(row: "Mapping[str, Any] | PairRow") -> bool:
    """Whether the teacher wrote a row's `chosen` side (a dict row or a `PairRow`); rows built by hand without a source
    are unswapped pairs."""
    source = row.get("chosen_source", PairRow.chosen_source) if isinstance(row, Mapping) else row.chosen_source
    return source == "teacher"


def swap_sides(row: PairRow) -> PairRow:
    """The same pair with its sides exchanged: each per-side field (text, source, scores, log-probs) follows its text."""
    twins = {f.name: f.name.replace("chosen", "rejected") for f in dataclasses.fields(PairRow) if "chosen" in f.name}
    return dataclasses.replace(row, **{c: getattr(row, r) for c, r in twins.items()}, **{r: getattr(row, c) for c, r in twins.items()})


def write_back(target: dict, row: PairRow) -> None:
    """Replace the contents of the dict `target` by `row`: the pipeline, the bench and the training loop hold the dicts."""
    target.clear()
    target.update(row.to_dict())


def build_pairs(examples: list[Example], teacher_samples: dict[str, list[str]], student_samples: dict[str, list[str]],
                meta: dict) -> tuple[list[dict], dict]:
    """One pair per (example, sample index): chosen = teacher sample, rejected = student sample.

    `meta` holds the row-wide fields (`teacher_model`, `teacher_sampling`, ... of `PairRow`).
    Pairs with an empty side or identical sides carry no preference signal and are
    skipped; the counts are returned so the report can say how many.
    """
    pairs, skipped = [], {"empty": 0, "identical": 0}
    for ex in examples:
        for j, (chosen, rejected) in enumerate(zip(teacher_samples[ex.id], student_samples[ex.id])):
            if not chosen.strip() or not rejected.strip():
                skipped["empty"] += 1
                continue
            if chosen.strip() == rejected.strip():
                skipped["identical"] += 1
                continue
            row = {"id": f"{ex.id}#{j}", "prompt": ex.prompt, "chosen": chosen, "rejected": rejected, "reference": ex.target, **meta}
            pairs.append(PairRow.from_dict(row, where=f"pair {ex.id}#{j}").to_dict())
    return pairs, skipped


def relabel(pairs: list[dict], judge, fraction: float, seed: int) -> int:
    """Let the judge order a seeded `fraction` of pairs (PLaD's "real preference pairs"), in place.

    A pair is swapped when the judge scores the student side higher. Returns the number
    of swaps; each relabelled pair records both judge scores.
    """
    if fraction <= 0 or not pairs:
        return 0
    chosen_idx = sorted(random.Random(seed).sample(range(len(pairs)), round(fraction * len(pairs))))
    batch = [pairs[i] for i in chosen_idx]
    prompts = [p["prompt"] for p in batch]
    s_chosen = judge.score(prompts, [p["chosen"] for p in batch])
    s_rejected = judge.score(prompts, [p["rejected"] for p in batch])
    swaps = 0
    for p, a, b in zip(batch, s_chosen, s_rejected):
        row = dataclasses.replace(PairRow.from_dict(p), relabelled=True, judge_chosen=float(a), judge_rejected=float(b))
        if b > a:
            row = dataclasses.replace(swap_sides(row), swapped=True)
            swaps += 1
        write_back(p, row)
    return swaps


def attach_scores(pairs: list[dict], kind: str, judge=None) -> None:
    """Scores s(y; x) of both sides for margin calibration, in place: ROUGE-L F1 against the reference, or the judge."""
    if kind == "none" or not pairs:
        return
    if kind == "rouge":
        from prefdistill.evaluation.metrics import rouge_per_example

        missing = [p["id"] for p in pairs if not p.get("reference")]
        if missing:
            raise ValueError(f"pairs.score=rouge needs references; pair {missing[0]} has none")
        refs = [p["reference"] for p in pairs]
        chosen = rouge_per_example([p["chosen"] for p in pairs], refs)
        rejected = rouge_per_example([p["rejected"] for p in pairs], refs)
    else:
        prompts = [p["prompt"] for p in pairs]
        chosen = judge.score(prompts, [p["chosen"] for p in pairs])
        rejected = judge.score(prompts, [p["rejected"] for p in pairs])
    for p, a, b in zip(pairs, chosen, rejected):
        write_back(p, dataclasses.replace(PairRow.from_dict(p), chosen_score=float(a), rejected_score=float(b), score_kind=kind))


def record_failures(failures: dict[str, dict[str, dict]], n_prompts: int, path: Path, max_fraction: float) -> int:
    """List the prompts each role could not answer in `path`; stop when more than `max_fraction` of the prompts failed.

    `failures` maps a role to {example id: failure}; returns the number of prompts that failed.
    """
    from prefdistill.data.sampling import IncompleteSampling

    rows = [{"role": role, **f} for role, by_id in failures.items() for f in by_id.values()]
    write_jsonl(path, rows)
    failed = len({r["id"] for r in rows})
    if not failed:
        return 0
    print(f"[prefdistill] pairs: {failed} of {n_prompts} prompts could not be answered; listed in {path}", flush=True)
    for r in rows[:5]:
        print(f"  {r['role']} {r['id']} ({r['kind']}, {r['attempts']} attempts): {r['prompt'][:80]!r}", flush=True)
    if failed > max_fraction * n_prompts:
        raise IncompleteSampling(f"pairs: {failed} of {n_prompts} prompts failed, more than pairs.max_failed_fraction="
                                 f"{max_fraction}; see {path}. Run again to retry only those prompts (every answered "
                                 "prompt is kept).")
    return failed


def load_pairs(path: Path) -> list[dict]:
    """The rows of a pairs file, each checked against `PairRow` (defaults filled in), as the dicts the methods read.

    A file written by an older version loads: every field added since has a default.
    """
    return [PairRow.from_dict(r, where=f"{path}: row {i}").to_dict() for i, r in enumerate(read_jsonl(path))]


# ----------------------------------------------------------------------------- typed export

_ARROW = {str: "string", bool: "bool", int: "int64", float: "float64"}


def _feature(hint: Any, rows: list[dict], column: str):
    """The `datasets` feature of a field annotated `hint` (optional allowed): a Value, or a struct for sampling settings."""
    import datasets

    if typing.get_origin(hint) in (Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is dict:
        return _settings_struct(rows, column)
    return datasets.Value("string" if typing.get_origin(hint) is Literal else _ARROW[hint])


def _settings_struct(rows: list[dict], column: str) -> dict:
    """The struct of a sampling-settings column: SamplingConfig's fields with their types.

    A key that SamplingConfig no longer has (a file from another version) keeps its values'
    type: float if any is a float, else int, else bool.
    """
    import datasets

    hints = typing.get_type_hints(SamplingConfig)
    struct = {f.name: _feature(hints[f.name], rows, f.name) for f in dataclasses.fields(SamplingConfig)}
    for key in dict.fromkeys(k for r in rows for k in r.get(column) or {}):
        if key not in struct:
            kinds = {type(r[column][key]) for r in rows if (r.get(column) or {}).get(key) is not None}
            struct[key] = datasets.Value("float64" if float in kinds else "int64" if int in kinds else "bool")
    return struct


def pair_features(rows: list[dict]):
    """`datasets.Features` of pair rows from `PairRow`: the fields some row has, in contract order.

    Booleans stay booleans, scores and log-probs float64, sampling settings structs: taken
    from the contract, not guessed from the values of mixed rows.
    """
    import datasets

    hints = typing.get_type_hints(PairRow)
    return datasets.Features({f.name: _feature(hints[f.name], rows, f.name) for f in dataclasses.fields(PairRow)
                              if any(f.name in r for r in rows)})


def pairs_dataset(rows: list[dict]):
    """A `datasets.Dataset` of pair rows (from `load_pairs`) whose columns keep their types (`pair_features`).

    Built column by column: `Dataset.from_list` takes its columns from the first row only,
    and a first pair the judge did not see would drop the judge-score columns of all.
    """
    import datasets

    features = pair_features(rows)
    return datasets.Dataset.from_dict({c: [r.get(c) for r in rows] for c in features}, features=features)
