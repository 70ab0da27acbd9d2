"""Task data: load a source, map its columns, and cut it into the splits a run uses.

    from prefdistill.config.schema import DataConfig
    from prefdistill.data.splits import prepare_splits

    splits = prepare_splits(DataConfig(source="builtin:aclsum"), seed=0, tokenizer=tok)
    splits.sft, splits.distill, splits.validation, splits.test  # lists of io.Example

Sources (`data.source`, read by prefdistill.data.sources):
  builtin:aclsum    ACLSum (PyPI `aclsum`): one example per (paper, aspect).
  builtin:chitchat  Chit Chat Challenge (PyPI `chitchat-dataset`): next-reply examples.
  a path            a .jsonl / .json / .parquet / .csv file (the train split), or a folder
                    of train.* / validation.* (val.*, dev.*) / test.* files.
  anything else     a `datasets` hub name: `datasets.load_dataset(source, subset)`.

`prepare_splits` runs: raw rows -> Examples (column map + template) -> train rows that
share a prompt or group with an official validation / test split dropped -> the held-out
splits the source lacks carved out of what is left of train -> validation and test
checked disjoint -> train shuffled with `seed` -> caps -> train halved into `sft` /
`distill` (the PLaD paper's supervised and distillation halves) -> first
`distill_fraction` of distill kept -> prompts truncated.

Groups. A group column (`data.columns.group`; by default a column named `group`, kept
as meta["group"]: a paper, a conversation) ties rows together; a row without one is its
own group. The key is `io.group_of`, the same for the splits, the judges' halves and
every bootstrap. Carving, shuffling and halving move whole groups, so no source document
is on both sides of the sft / distill cut or of a carved train / held-out cut. Caps
count rows and take them in (shuffled) group order, so at most the last group kept is
cut short; its dropped rows are simply not used.

Leakage. Settings are chosen on validation and reported on test, so the two never share
a prompt or a group: carved splits are disjoint by construction, and two official ones
that overlap stop loading with the count and some ids (or, with
`data.held_out_overlap: drop_from_validation`, lose the shared rows from validation).

Bad rows. Every row needs its prompt (or template columns) and target as non-empty
text: a missing column lists the available ones, and a missing, None, non-text or
blank value stops loading with the row's index, id and column; nothing is dropped
silently. A JSONL line that is not UTF-8, JSON or an object is refused with its file
and line. Duplicates (prompts compared with whitespace collapsed) are repaired, with a
logged warning: a row repeating an earlier row's prompt and target is dropped; rows
sharing a prompt with different targets are kept and their groups merged. Long prompts are
cut by `data.truncation`; targets are not cut here (a model refuses, naming itself, a
prompt and completion longer than its context).
"""
from __future__ import annotations

import itertools
import logging
import random
import re
import string
from dataclasses import dataclass, replace
from typing import Any

from prefdistill.config.schema import DataConfig
from prefdistill.data.sources import load_raw, stable_hash
from prefdistill.io import SELF_GROUP_PREFIX, Example, group_of, text_key

log = logging.getLogger(__name__)

TRUNCATION_SIDES = ("right", "left", "error")


@dataclass
class Splits:
    sft: list[Example]  # first half of train, with targets: SFT of teacher and student
    distill: list[Example]  # second half: prompts for pairs; .target only for optional ROUGE
    validation: list[Example]
    test: list[Example]


# ----------------------------------------------------------------------------- loading


def to_examples(rows: list[dict], cfg: DataConfig, split: str) -> list[Example]:
    """Apply the column map and `cfg.template` to raw rows of one split.

    In the template "{prompt}" / "{target}" mean the mapped columns; other fields name
    columns as they are. Ids are "{split}-{index}" unless `cfg.columns.id` is set.
    `meta` keeps the row's other scalar columns (always `group`, which drives halving).
    """
    if not rows:
        return []
    cols = cfg.columns
    fields = _template_fields(cfg.template)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"row {i} of the {split!r} split of {cfg.source!r} is a {type(row).__name__}, not a mapping "
                             "of column names to values")
    available = list(dict.fromkeys(k for row in rows for k in row))  # every row's columns, in first-seen order
    _check_columns(cfg, split, available, fields)
    skip = ({cols.prompt, cols.target, cols.id, cols.group} | fields) - {"group"}  # already in prompt/target/id/group
    examples, seen = [], set()
    for i, row in enumerate(rows):
        row_id = f"{split}-{i}" if cols.id is None else str(row.get(cols.id))
        where = f"row {i} (id {row_id!r}) of the {split!r} split of {cfg.source!r}"
        if cols.id is not None and (row.get(cols.id) is None or not row_id.strip() or row_id in seen):
            raise ValueError(f"{where}: empty or duplicate id in column {cols.id!r} (data.columns.id)")
        seen.add(row_id)
        values = {f: row.get(f) for f in fields}
        if "prompt" in fields:
            values["prompt"] = _text(row, cols.prompt, where, "data.columns.prompt")
        if "target" in fields:
            values["target"] = row.get(cols.target)
        prompt = _render(cfg.template, values, where)
        target = _text(row, cols.target, where, "data.columns.target")  # SFT and eval need it
        meta = {k: v for k, v in row.items() if k not in skip and isinstance(v, (str, int, float, bool))}
        if cols.group is not None:
            meta["group"] = _group_value(row, cols.group, where)
        examples.append(Example(id=row_id, prompt=prompt, target=target, meta=meta))
    return examples


def _template_fields(template: str) -> set[str]:
    """Column names a format string reads ("{context[0]}" reads "context")."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"data.template {template!r} is not a valid format string ({e}); "
                         "write literal braces as '{{' and '}}'") from e
    fields = set()
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not name or name.isdigit():
            raise ValueError(f"data.template {template!r}: positional field {{{field}}}; "
                             "name a column instead, e.g. {prompt}")
        fields.add(name)
    return fields


def _check_columns(cfg: DataConfig, split: str, available: list[str], fields: set[str]) -> None:
    cols = cfg.columns
    needed = [(cols.prompt, "data.columns.prompt")] if "prompt" in fields else []  # else: template
    needed.append((cols.target, "data.columns.target"))
    for column, key in ((cols.id, "data.columns.id"), (cols.group, "data.columns.group")):
        if column is not None:
            needed.append((column, key))
    for column, key in needed:
        if column not in available:
            alternative = " (or write data.template over the columns)" if key.endswith("prompt") else ""
            raise ValueError(f"column {column!r} is missing from the {split!r} split of {cfg.source!r}; "
                             f"available columns: {available}. Set {key} to one of them{alternative}")
    unknown = sorted(fields - {"prompt", "target"} - set(available))
    if unknown:
        raise ValueError(f"data.template {cfg.template!r} reads unknown column(s) {unknown}; "
                         f"the {split!r} split of {cfg.source!r} has {available}")


def _group_value(row: dict, column: str, where: str) -> str:
    value = row.get(column)
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
        raise ValueError(f"{where}: column {column!r} (data.columns.group) must be a non-empty text or integer group id, "
                         f"got {value!r:.80}; give the row a group, or unset data.columns.group to make each row its own")
    return str(value)


def _text(row: dict, column: str, where: str, key: str) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: column {column!r} must be non-empty text, got {value!r:.80} "
                         f"(fix the row or point {key} at another column)")
    return value


def _render(template: str, values: dict[str, Any], where: str) -> str:
    empty = sorted(f for f, v in values.items() if v is None)
    if empty:
        raise ValueError(f"{where}: column(s) {empty} read by data.template are empty")
    try:
        prompt = template.format(**values)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: data.template {template!r} failed: {e!r}") from e
    if not prompt.strip():
        raise ValueError(f"{where}: data.template {template!r} gives an empty prompt")
    return prompt


def truncate_prompt(text: str, tokenizer, max_tokens: int, side: str, row_id: str) -> str:
    """Fit `text` into `max_tokens` tokens; text within the limit comes back unchanged.

    side: "right" keeps the first tokens, "left" the last ones, "error" refuses the row.
    `tokenizer` needs encode(text, add_special_tokens=False) and decode(ids, skip_special_tokens=True).
    """
    if side not in TRUNCATION_SIDES:
        raise ValueError(f"data.truncation: must be one of {list(TRUNCATION_SIDES)}, got {side!r}")
    if max_tokens < 1:
        raise ValueError(f"data.max_prompt_tokens: must be positive, got {max_tokens}")
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text
    if side == "error":
        raise ValueError(f"prompt of row {row_id!r} has {len(ids)} tokens, over the limit of {max_tokens} "
                         "(data.max_prompt_tokens); raise data.max_prompt_tokens or set data.truncation "
                         "to 'right' (keep the first tokens) or 'left' (keep the last ones)")
    kept = ids[:max_tokens] if side == "right" else ids[-max_tokens:]
    return tokenizer.decode(kept, skip_special_tokens=True)


# ----------------------------------------------------------------------------- splitting


def prepare_splits(cfg: DataConfig, seed: int, tokenizer=None) -> Splits:
    """Load, map, carve, shuffle, cap, halve and truncate; the same seed gives the same splits."""
    raw = load_raw(cfg)
    names = cfg.splits
    if names.train not in raw:
        raise ValueError(f"data.splits.train: {cfg.source!r} has no split {names.train!r}; "
                         f"it has {sorted(raw)}")
    train = deduplicate(to_examples(raw[names.train], cfg, names.train), names.train, cfg.source)
    n_source = len(train)
    held_out = _official_held_out(raw, cfg)
    for role, examples in held_out.items():  # before any carving: no official held-out prompt is ever carved
        train = _without_overlap(train, examples, getattr(names, role), cfg.source)
    for role, fraction in (("test", cfg.test_fraction), ("validation", cfg.val_fraction)):
        if role in held_out:
            continue
        if getattr(names, role) is not None:
            log.info("%s has no split %r: carving %.0f%% of train", cfg.source, getattr(names, role), 100 * fraction)
        n_rows = max(1, round(fraction * n_source)) if fraction > 0 else 0
        train, held_out[role] = _carve(train, n_rows, salt=role)
    held_out["validation"] = _disjoint_validation(held_out["validation"], held_out["test"], cfg)

    train = _shuffle_groups(train, seed)[: cfg.max_train]
    validation = held_out["validation"][: cfg.max_val]  # source order: the same for every seed
    test = held_out["test"][: cfg.max_test]
    _require(train, "train", cfg, "data.max_train")
    _require(test, "test", cfg, "data.max_test / data.test_fraction")
    if cfg.max_val != 0 and cfg.val_fraction != 0:  # otherwise an empty validation was asked for
        _require(validation, "validation", cfg, "data.max_val / data.val_fraction")

    sft, distill = _halve(train)
    distill = distill[: max(1, round(cfg.distill_fraction * len(distill)))]
    parts = [sft, distill, validation, test]
    if tokenizer is not None:  # after the caps: rows never used are never tokenised
        parts = [[_truncated(e, tokenizer, cfg) for e in part] for part in parts]
    return Splits(*parts)


def deduplicate(examples: list[Example], split: str, source: str) -> list[Example]:
    """Drop exact repeats and tie rows that share a prompt into one group; both are logged.

    A row whose prompt and target (whitespace-normalised) repeat an earlier row's is
    dropped. Rows with one prompt and different targets (several references) are kept,
    and their groups merged (meta["group"] becomes the first one's), so no prompt lands
    on both sides of the sft / distill cut or of a carved held-out cut.
    """
    parent: dict[str, str] = {}  # union-find over group keys

    def root(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    seen, first_group, kept, dropped = set(), {}, [], []
    for e in examples:
        prompt = text_key(e.prompt)
        if (prompt, text_key(e.target)) in seen:
            dropped.append(e.id)
            continue
        seen.add((prompt, text_key(e.target)))
        kept.append(e)
        a, b = root(first_group.setdefault(prompt, group_of(e))), root(group_of(e))
        if a != b:
            parent[b] = a
    if dropped:
        log.warning("%s split of %s: dropped %d row(s) repeating an earlier row's prompt and target (ids %s)",
                    split, source, len(dropped), _some(dropped))
    moved = {e.id for e in kept if root(group_of(e)) != group_of(e)}
    if moved:
        log.warning("%s split of %s: %d row(s) share a prompt with a row of another group; their groups are merged so "
                    "the prompt stays on one side of every cut (ids %s)", split, source, len(moved), _some(sorted(moved)))
        kept = [replace(e, meta={**e.meta, "group": root(group_of(e))}) if e.id in moved else e for e in kept]
    return kept


def _official_held_out(raw: dict[str, list[dict]], cfg: DataConfig) -> dict[str, list[Example]]:
    """{role: examples} of the held-out splits the source has ("test", "validation")."""
    out = {}
    for role in ("test", "validation"):
        name = getattr(cfg.splits, role)
        if name is not None and name in raw:
            out[role] = deduplicate(to_examples(raw[name], cfg, name), name, cfg.source)
    return out


def _source_groups(examples: list[Example]) -> set[str]:
    """Groups named by the source's group column. A row's own group ("id:<id>") is left out: ids may repeat
    across split files, and rows merged for sharing a prompt are caught by their prompt."""
    return {g for g in map(group_of, examples) if not g.startswith(SELF_GROUP_PREFIX)}


def _shared(examples: list[Example], other: list[Example]) -> list[Example]:
    """The rows of `examples` whose prompt or source group is also in `other`."""
    prompts, groups = {text_key(e.prompt) for e in other}, _source_groups(other)
    return [e for e in examples if text_key(e.prompt) in prompts or group_of(e) in groups]


def _without_overlap(train: list[Example], held_out: list[Example], name: str, source: str) -> list[Example]:
    """Train rows sharing a prompt or group with a held-out split are dropped: evaluating on them would flatter the model."""
    leaked = {e.id for e in _shared(train, held_out)}
    if leaked:
        log.warning("%s: dropped %d train row(s) whose prompt or group is also in the %r split (ids %s)",
                    source, len(leaked), name, _some(sorted(leaked)))
    return [e for e in train if e.id not in leaked]


def _disjoint_validation(validation: list[Example], test: list[Example], cfg: DataConfig) -> list[Example]:
    """Validation chooses settings, test reports them: a prompt or group in both would choose on test."""
    shared = _shared(validation, test)
    if not shared:
        return validation
    names = cfg.splits
    ids = [e.id for e in shared]
    what = (f"the validation split ({names.validation!r}) and the test split ({names.test!r}) of {cfg.source!r} share "
            f"{len(shared)} validation row(s) by prompt or group (ids {_some(ids)})")
    if cfg.held_out_overlap == "error":
        raise ValueError(f"{what}: settings chosen on validation would be chosen on test. Fix the data, or set "
                         "data.held_out_overlap=drop_from_validation to drop those rows from validation")
    log.warning("%s: dropped them from validation (data.held_out_overlap=drop_from_validation)", what)
    dropped = set(ids)
    return [e for e in validation if e.id not in dropped]


def _some(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _groups(examples: list[Example]) -> list[list[Example]]:
    """Examples grouped by meta["group"], groups in order of first appearance."""
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(group_of(e), []).append(e)
    return list(groups.values())


def _carve(examples: list[Example], n_rows: int, salt: str) -> tuple[list[Example], list[Example]]:
    """Move whole groups, picked by hash (not by seed), out of `examples` until `n_rows`."""
    # Independent of the seed, so runs with different seeds are evaluated on the same rows.
    order = sorted(_groups(examples), key=lambda g: stable_hash(f"{salt}:{group_of(g[0])}"))
    carved_ids: set[str] = set()
    for group in order:
        if len(carved_ids) >= n_rows:
            break
        carved_ids.update(e.id for e in group)
    rest = [e for e in examples if e.id not in carved_ids]
    return rest, [e for e in examples if e.id in carved_ids]


def _shuffle_groups(examples: list[Example], seed: int) -> list[Example]:
    groups = _groups(examples)
    random.Random(seed).shuffle(groups)
    return [e for group in groups for e in group]


def _halve(train: list[Example]) -> tuple[list[Example], list[Example]]:
    """Cut at the group boundary closest to half the rows: (sft, distill)."""
    groups = _groups(train)
    if len(groups) < 2:
        raise ValueError(f"the train split has {len(train)} row(s) in {len(groups)} group(s); halving "
                         "it into sft and distill needs at least two groups (raise data.max_train)")
    before = list(itertools.accumulate(len(g) for g in groups))  # rows up to each group
    cut = 1 + min(range(len(groups) - 1), key=lambda c: abs(before[c] - len(train) / 2))
    first = [e for g in groups[:cut] for e in g]
    second = [e for g in groups[cut:] for e in g]
    return first, second


def _require(examples: list[Example], split: str, cfg: DataConfig, keys: str) -> None:
    if not examples:
        raise ValueError(f"the {split} split of {cfg.source!r} is empty after loading, carving and "
                         f"caps; check the data and {keys}")


def _truncated(example: Example, tokenizer, cfg: DataConfig) -> Example:
    prompt = truncate_prompt(example.prompt, tokenizer, cfg.max_prompt_tokens, cfg.truncation, example.id)
    return example if prompt is example.prompt else replace(example, prompt=prompt)
