"""Bad dataset rows end in an error naming the culprit or in a logged repair:
OMP_NUM_THREADS=1 python -m pytest -q tests/data/test_bad_input_data.py

Property-based (hypothesis); the cases and their outcomes are tabulated in docs/bad_input.md.
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdistill.config.schema import ColumnMap, DataConfig, SplitNames
from prefdistill.data.pairs import load_pairs
from prefdistill.data.splits import deduplicate, load_raw, prepare_splits, to_examples, truncate_prompt
from prefdistill.io import Example, read_jsonl, write_jsonl

FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
WORDS = st.sampled_from("alpha beta gamma delta epsilon zeta eta theta".split())
TEXT = st.lists(WORDS, min_size=1, max_size=6).map(" ".join)
BLANK = st.text(alphabet=" \t\n\r\u00a0\u2003\u3000", max_size=5)  # "" and whitespace-only, Unicode spaces too
NOT_TEXT = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(TEXT, max_size=2),
                     st.dictionaries(TEXT, TEXT, max_size=2))
MISSING = object()  # the cell's key is absent from the row


def spoil(rows: list[dict], i: int, column: str, bad) -> list[dict]:
    """`rows` with row i's `column` set to `bad`, or removed when `bad` is MISSING."""
    if bad is MISSING:
        del rows[i][column]
    else:
        rows[i][column] = bad
    return rows


def rows_of(n: int) -> list[dict]:
    return [{"question": f"question {i} about alpha", "answer": f"answer {i}", "key": f"q{i}"} for i in range(n)]


def jsonl_cfg(path, **kw) -> DataConfig:
    return DataConfig(source=str(path), columns=ColumnMap(prompt="question", target="answer", **kw))


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "prefdistill.data.splits"]


# ----------------------------------------------------------------------------- cells and columns


@FEW
@given(n=st.integers(2, 8), data=st.data(), column=st.sampled_from(["question", "answer"]),
       bad=st.one_of(BLANK, NOT_TEXT, st.just(MISSING)), with_id=st.booleans())
def test_bad_cell_names_row_id_and_column(n, data, column, bad, with_id):
    """None, "", whitespace-only, a number, a list or a missing key in a prompt / target cell, read
    from a JSONL file (mixed types across rows must not fail inside Arrow)."""
    i = data.draw(st.integers(0, n - 1), label="row")
    rows = spoil(rows_of(n), i, column, bad)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        write_jsonl(path, rows)
        cfg = jsonl_cfg(path, id="key" if with_id else None)
        row_id = f"q{i}" if with_id else f"train-{i}"
        with pytest.raises(ValueError, match=rf"row {i} \(id '{row_id}'\) .*column '{column}' must be non-empty text"):
            to_examples(load_raw(cfg)["train"], cfg, "train")


@FEW
@given(columns=st.lists(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True), min_size=1, max_size=5, unique=True),
       role=st.sampled_from(["prompt", "target", "id"]))
def test_missing_column_lists_the_available_ones(columns, role):
    wanted = "not_a_column"
    rows = [{c: f"value {i}" for c in columns} for i in range(3)]
    mapping = {"prompt": columns[0], "target": columns[0], "id": None} | {role: wanted}
    if role != "prompt":  # keep the other columns valid so the missing one is the first culprit
        mapping["prompt"] = columns[0]
    cfg = DataConfig(source="my.jsonl", columns=ColumnMap(**mapping))
    with pytest.raises(ValueError, match=rf"column '{wanted}' is missing from the 'train' split of 'my.jsonl'.*"
                                         rf"{re.escape(str(columns))}.*data\.columns\.{role}"):
        to_examples(rows, cfg, "train")


@FEW
@given(n=st.integers(2, 6), data=st.data(), template_column=st.sampled_from(["context", "title"]),
       bad=st.one_of(st.none(), st.just(MISSING)))
def test_template_column_empty_in_one_row(n, data, template_column, bad):
    """A template column absent or None in one row (absent in every row is an unknown column, tested in test_data)."""
    i = data.draw(st.integers(0, n - 1), label="row")
    rows = [dict(r, context="ctx", title="t") for r in rows_of(n)]
    if bad is MISSING:
        del rows[i][template_column]
    else:
        rows[i][template_column] = bad
    cfg = DataConfig(columns=ColumnMap(prompt="question", target="answer"), template="{" + template_column + "}: {prompt}")
    with pytest.raises(ValueError, match=rf"row {i} .*\['{template_column}'\] read by data\.template are empty"):
        to_examples(rows, cfg, "train")


@FEW
@given(n=st.integers(2, 6), data=st.data(), dup=st.sampled_from([None, "", "   "]))
def test_id_column_empty_or_repeated(n, data, dup):
    i = data.draw(st.integers(1, n - 1), label="row")
    rows = rows_of(n)
    rows[i]["key"] = rows[0]["key"] if dup is None else dup
    cfg = jsonl_cfg("x", id="key")
    with pytest.raises(ValueError, match=rf"row {i} .*empty or duplicate id in column 'key' \(data\.columns\.id\)"):
        to_examples(rows, cfg, "train")


# ----------------------------------------------------------------------------- files


BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc", b"\xf8\x88\x80\x80\x80"])


def _lines_with(rows: list[dict], blank_after: list[bool]) -> list[bytes]:
    lines = []
    for row, blank in zip(rows, blank_after):
        lines.append(json.dumps(row).encode() + b"\n")
        if blank:
            lines.append(b"\n")  # blank lines are skipped but still counted
    return lines


@FEW
@given(n=st.integers(1, 8), data=st.data(), bad=BAD_UTF8)
def test_invalid_utf8_names_file_and_line(n, data, bad):
    lines = _lines_with(rows_of(n), data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="blanks"))
    k = data.draw(st.sampled_from([j for j, line in enumerate(lines) if line.strip()]), label="line")
    lines[k] = lines[k].replace(b"alpha", b"al" + bad + b"pha")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_bytes(b"".join(lines))
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:{k + 1}: not valid UTF-8"):
            prepare_splits(jsonl_cfg(path), seed=0)


@FEW
@given(n=st.integers(1, 8), data=st.data(),
       bad=st.sampled_from([b'{"question": "cut', b'{"question": "x"} trailing', b"[1, 2]", b"42", b'"text"', b"null", b"{'a': 1}"]))
def test_bad_jsonl_line_names_file_and_line(n, data, bad):
    lines = _lines_with(rows_of(n), [False] * n)
    k = data.draw(st.integers(0, n), label="line")
    lines.insert(k, bad + b"\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_bytes(b"".join(lines))
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:{k + 1}: (not valid JSON|expected a JSON object)"):
            load_raw(jsonl_cfg(path))


def test_utf8_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(_lines_with(rows_of(2), [False, False])))
    assert read_jsonl(path) == rows_of(2)


# ----------------------------------------------------------------------------- duplicates


def _examples(cells: list[tuple[int, int, int]]) -> list[Example]:
    """(prompt, target, group) numbers -> Examples; small pools make repeats likely."""
    return [Example(id=f"r{i}", prompt=f"prompt {p}" + " " * (i % 2), target=f"target {t}", meta={"group": f"g{g}"})
            for i, (p, t, g) in enumerate(cells)]


CELLS = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=25)


@FEW
@given(cells=CELLS)
def test_duplicates_dropped_or_tied_and_logged(cells, caplog):
    examples = _examples(cells)
    with caplog.at_level(logging.WARNING, logger="prefdistill.data.splits"):
        caplog.clear()
        kept = deduplicate(examples, "train", "src")
    pair = lambda e: (" ".join(e.prompt.split()), e.target)  # noqa: E731
    assert len({pair(e) for e in kept}) == len(kept)  # no exact repeat survives
    assert {pair(e) for e in kept} == {pair(e) for e in examples}  # ...and nothing else is lost
    groups_of_prompt: dict[str, set] = {}
    for e in kept:
        groups_of_prompt.setdefault(pair(e)[0], set()).add(e.meta["group"])
    assert all(len(g) == 1 for g in groups_of_prompt.values())  # one prompt, one group
    logged = " ".join(warnings_of(caplog))
    n_dropped = len(examples) - len(kept)
    assert (f"dropped {n_dropped} row(s)" in logged) == (n_dropped > 0)
    assert ("their groups are merged" in logged) == any(e.meta != o.meta for e in kept for o in examples if o.id == e.id)


@FEW
@given(cells=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 2), st.integers(0, 9)), min_size=4, max_size=40))
def test_no_prompt_on_both_sides_of_any_cut(cells, caplog):
    """End to end over a JSONL file: a run's four parts never share a prompt; or a clear error."""
    rows = [{"prompt": e.prompt, "target": e.target, "group": e.meta["group"]} for e in _examples(cells)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        write_jsonl(path, rows)
        try:
            s = prepare_splits(DataConfig(source=str(path), val_fraction=0.2, test_fraction=0.2), seed=0)
        except ValueError as e:  # too few groups left: said so, naming the split or the key
            assert re.search(r"needs at least two groups|the (train|test|validation) split .* is empty", str(e)), e
            return
    parts = [{" ".join(e.prompt.split()) for e in part} for part in (s.sft, s.distill, s.validation, s.test)]
    assert sum(map(len, parts)) == len(set().union(*parts))


@FEW
@given(n_train=st.integers(4, 12), shared=st.sets(st.integers(0, 11), max_size=6))
def test_train_rows_repeating_a_held_out_prompt_are_dropped(n_train, shared, caplog):
    shared = {i for i in shared if i < n_train}
    train = [{"prompt": f"doc {i}", "target": f"t{i}"} for i in range(n_train)]
    test = [{"prompt": f"doc {i}", "target": "other"} for i in sorted(shared)] + [{"prompt": "held out only", "target": "t"}]
    with tempfile.TemporaryDirectory() as tmp:
        write_jsonl(Path(tmp) / "train.jsonl", train)
        write_jsonl(Path(tmp) / "test.jsonl", test)
        with caplog.at_level(logging.WARNING, logger="prefdistill.data.splits"):
            caplog.clear()
            try:
                s = prepare_splits(DataConfig(source=tmp, splits=SplitNames(validation=None)), seed=0)
            except ValueError as e:
                assert re.search(r"needs at least two groups|the train split .* is empty", str(e)), e
                return
    used = {e.prompt for e in s.sft + s.distill + s.validation}
    assert not used & {r["prompt"] for r in test}
    assert (f"dropped {len(shared)} train row(s) whose prompt or group is also in the 'test' split" in " ".join(warnings_of(caplog))) \
        == bool(shared)


# ----------------------------------------------------------------------------- huge rows


@pytest.fixture(scope="module")
def student_tokenizer(tiny_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_assets["student"])


@FEW
@given(n_words=st.integers(1, 3000), limit=st.integers(1, 64), side=st.sampled_from(["right", "left", "error"]))
def test_huge_prompt_follows_the_truncation_rule(student_tokenizer, n_words, limit, side):
    text = " ".join(["the", "model", "learns"] * n_words)
    n_tokens = 3 * n_words
    if side == "error" and n_tokens > limit:
        with pytest.raises(ValueError, match=rf"row 'train-9' has {n_tokens} tokens, over the limit of {limit}"):
            truncate_prompt(text, student_tokenizer, limit, side, "train-9")
        return
    out = truncate_prompt(text, student_tokenizer, limit, side, "train-9")
    ids = student_tokenizer.encode(out, add_special_tokens=False)
    assert len(ids) == min(limit, n_tokens)
    assert text.startswith(out) if side == "right" else text.endswith(out)


# ----------------------------------------------------------------------------- pairs files


@FEW
@given(n=st.integers(1, 6), data=st.data(), column=st.sampled_from(["prompt", "chosen", "rejected"]),
       bad=st.one_of(BLANK, NOT_TEXT, st.just(MISSING)))
def test_pairs_file_bad_cell_names_file_row_and_column(n, data, column, bad):
    i = data.draw(st.integers(0, n - 1), label="row")
    pairs = spoil([{"id": f"p{j}", "prompt": "x", "chosen": "good", "rejected": "bad"} for j in range(n)], i, column, bad)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        write_jsonl(path, pairs)
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: row {i} \(id 'p{i}'\) has an empty or missing '{column}'"):
            load_pairs(path)
