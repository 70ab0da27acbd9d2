"""No prompt or group crosses a split, a judge half or a negative: python -m pytest -q tests/data/test_data_leakage.py

Data unlike ACLSum: official and carved splits in all four combinations, multi-reference
rows (one prompt, several targets) with and without a group column, duplicates, and a
group column under another name.
"""
from __future__ import annotations

import itertools
import logging

import pytest

from prefdistill.config.schema import ColumnMap, DataConfig, SplitNames
from prefdistill.data.splits import prepare_splits
from prefdistill.io import Example, group_of, text_key, write_jsonl
from prefdistill.judges.heldout import split_by_document
from prefdistill.judges.negatives import make_preference_pairs


def multi_reference_rows(n_prompts: int, refs: int, start: int = 0, group: str | None = None) -> list[dict]:
    """`refs` rows per prompt, each with its own reference; with `group`, prompts pair up under one group id."""
    rows = []
    for p in range(start, start + n_prompts):
        for r in range(refs):
            row = {"prompt": f"Summarise document {p} in one line.", "target": f"document {p} says thing {r}"}
            if group:
                row[group] = f"doc{p // 2}"
            rows.append(row)
    return rows


def write_source(folder, splits: dict[str, list[dict]]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_jsonl(folder / f"{name}.jsonl", rows)
    return folder


def prompts(examples: list[Example]) -> set[str]:
    return {text_key(e.prompt) for e in examples}


def groups(examples: list[Example]) -> set[str]:
    return {group_of(e) for e in examples}


def assert_disjoint(splits):
    train = splits.sft + splits.distill
    for a, b in itertools.combinations([("train", train), ("validation", splits.validation), ("test", splits.test)], 2):
        assert not prompts(a[1]) & prompts(b[1]), f"{a[0]} and {b[0]} share prompts"
        assert not groups(a[1]) & groups(b[1]), f"{a[0]} and {b[0]} share groups"


# ----------------------------------------------------------------------------- item 1: split leakage


@pytest.mark.parametrize("official_validation, official_test", itertools.product([True, False], repeat=2))
def test_no_prompt_or_group_on_two_sides_in_every_combination(tmp_path, official_validation, official_test):
    """Official held-out prompts are also in train (a common scrape): each one is removed from train before any carving."""
    train = multi_reference_rows(60, 2)
    files = {"train": train}
    if official_validation:
        files["validation"] = multi_reference_rows(10, 1, start=0)  # prompts 0-9: also in train
    if official_test:
        files["test"] = multi_reference_rows(10, 1, start=30)  # prompts 30-39: also in train
    cfg = DataConfig(source=str(write_source(tmp_path / "src", files)), val_fraction=0.15, test_fraction=0.15)
    splits = prepare_splits(cfg, seed=0)
    assert_disjoint(splits)
    assert splits.validation and splits.test


def test_carved_test_holds_no_official_validation_prompt(tmp_path):
    """The review's case: official train + validation, no test. Before: the carved test held validation prompts."""
    files = {"train": multi_reference_rows(40, 1), "validation": multi_reference_rows(20, 1, start=0)}
    splits = prepare_splits(DataConfig(source=str(write_source(tmp_path / "src", files)), test_fraction=0.25), seed=0)
    assert not prompts(splits.validation) & prompts(splits.test)


@pytest.mark.parametrize("column", ["group", "paper_id"])
def test_official_validation_and_test_that_overlap_are_refused(tmp_path, column):
    """Two official held-out splits that share prompts (or groups) stop loading, naming the splits, the count and ids."""
    validation = multi_reference_rows(10, 1, start=100, group="group")
    test = multi_reference_rows(10, 1, start=105, group="group")  # prompts 105-109 in both; groups doc52-doc54 too
    rows = {"train": multi_reference_rows(20, 1, group="group"), "validation": validation, "test": test}
    if column != "group":
        rows = {k: [{column if c == "group" else c: v for c, v in r.items()} for r in v] for k, v in rows.items()}
    cfg = DataConfig(source=str(write_source(tmp_path / "src", rows)), columns=ColumnMap(group=column))
    with pytest.raises(ValueError) as err:
        prepare_splits(cfg, seed=0)
    message = str(err.value)
    assert "validation split ('validation') and the test split ('test')" in message
    assert "share 6 validation row(s) by prompt or group" in message  # 5 prompts, and prompt 104 shares group doc52
    assert "validation-4" in message and "data.held_out_overlap=drop_from_validation" in message


def test_overlap_can_be_dropped_from_validation_with_a_warning(tmp_path, caplog):
    rows = {"train": multi_reference_rows(20, 1), "validation": multi_reference_rows(10, 1, start=100),
            "test": multi_reference_rows(10, 1, start=105)}
    cfg = DataConfig(source=str(write_source(tmp_path / "src", rows)), held_out_overlap="drop_from_validation")
    with caplog.at_level(logging.WARNING, logger="prefdistill.data.splits"):
        splits = prepare_splits(cfg, seed=0)
    assert len(splits.validation) == 5 and len(splits.test) == 10
    assert_disjoint(splits)
    assert "dropped them from validation" in caplog.text


def test_train_rows_of_a_held_out_group_are_dropped(tmp_path):
    """A train row about a test document (same group, another prompt) would flatter the model on that document."""
    train = [{"prompt": f"aspect {a} of paper {p}", "target": f"t{p}{a}", "group": f"paper{p}"} for p in range(12) for a in range(2)]
    test = [{"prompt": f"aspect 9 of paper {p}", "target": "x", "group": f"paper{p}"} for p in range(3)]
    splits = prepare_splits(DataConfig(source=str(write_source(tmp_path / "src", {"train": train, "test": test}))), seed=0)
    assert_disjoint(splits)
    assert groups(splits.test) == {"paper0", "paper1", "paper2"}


# ----------------------------------------------------------------------------- item 2: one group key for the judges


@pytest.mark.parametrize("group", [None, "group"])
@pytest.mark.parametrize("duplicates", [False, True])
def test_no_prompt_or_group_reaches_both_judges(tmp_path, group, duplicates):
    """Multi-reference rows: before, rows sharing a prompt could go to both judges (76 of 160 prompts in the review)."""
    train = multi_reference_rows(80, 2, group=group)
    if duplicates:
        train += train[:20]  # exact repeats: dropped, logged
    splits = prepare_splits(DataConfig(source=str(write_source(tmp_path / "src", {"train": train}))), seed=0)
    reward_data = splits.sft + splits.distill  # what the `reward` stage trains both judges on
    first, second = split_by_document(reward_data, seed=0)
    assert first and second
    assert not prompts(first) & prompts(second)
    assert not groups(first) & groups(second)


def test_a_valid_reference_is_never_a_negative():
    """On multi-reference data the "sibling" of a row used to be another reference of the same prompt (6 of 6)."""
    examples = [Example(id=f"r{i}", prompt="Summarise the paper.", target=f"reference {i}", meta={"group": "g"})
                for i in range(3)]
    examples.append(Example(id="other", prompt="Summarise its outcome.", target="the outcome", meta={"group": "g"}))
    pairs = make_preference_pairs(examples, ["sibling", "mismatched", "truncated"], seed=0)
    references = {e.prompt: {x.target for x in examples if x.prompt == e.prompt} for e in examples}
    assert pairs and not [p for p in pairs if p["rejected"] in references[p["prompt"]]]
    siblings = [p for p in pairs if p["kind"] == "sibling"]
    assert {p["rejected"] for p in siblings if p["prompt"] == "Summarise the paper."} == {"the outcome"}


# ----------------------------------------------------------------------------- item 3: the group column under any name


def test_group_column_can_be_mapped(tmp_path):
    rows = [{"text": f"module {m} function {f}", "doc": f"doc {m}.{f}", "module": f"mod{m}"} for m in range(10) for f in range(3)]
    cfg = DataConfig(source=str(write_source(tmp_path / "src", {"train": rows})),
                     columns=ColumnMap(prompt="text", target="doc", group="module"))
    splits = prepare_splits(cfg, seed=0)
    parts = [splits.sft, splits.distill, splits.validation, splits.test]
    assert all(group_of(e).startswith("mod") for part in parts for e in part)
    for a, b in itertools.combinations(parts, 2):
        assert not groups(a) & groups(b)


def test_mapped_group_column_missing_or_empty_names_the_key(tmp_path):
    rows = [{"prompt": f"p{i}", "target": "t", "paper_id": f"x{i}"} for i in range(10)]
    source = str(write_source(tmp_path / "src", {"train": rows}))
    with pytest.raises(ValueError, match=r"column 'paper' is missing .* Set data.columns.group"):
        prepare_splits(DataConfig(source=source, columns=ColumnMap(group="paper")), seed=0)
    rows[3]["paper_id"] = ""
    write_jsonl(tmp_path / "src" / "train.jsonl", rows)
    with pytest.raises(ValueError, match=r"row 3 .*column 'paper_id' \(data.columns.group\) must be a non-empty"):
        prepare_splits(DataConfig(source=source, columns=ColumnMap(group="paper_id")), seed=0)


def test_group_column_through_the_config_loader(tmp_path):
    """`data.columns.group` is a key of the config (before: unknown key 'data.columns.group')."""
    from prefdistill import load_config

    path = tmp_path / "c.yaml"
    path.write_text("teacher: {name_or_path: t}\nstudent: {name_or_path: s}\n"
                    "data: {source: x.jsonl, columns: {group: paper_id}}\n")
    assert load_config(path).data.columns.group == "paper_id"


# ----------------------------------------------------------------------------- templates over any column


def test_template_reads_any_column_beside_the_prompt(tmp_path):
    rows = [{"prompt": f"text {i}", "target": "t", "title": f"Title {i}", "aspect": "outcome", "group": f"g{i}"} for i in range(10)]
    cfg = DataConfig(source=str(write_source(tmp_path / "src", {"train": rows})),
                     template="Summarise the {aspect} of \"{title}\".\n\n{prompt}")
    splits = prepare_splits(cfg, seed=0)
    e = splits.sft[0]
    i = e.prompt.split("text ")[1]
    assert e.prompt == f"Summarise the outcome of \"Title {i}\".\n\ntext {i}"
