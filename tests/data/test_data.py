"""Data loading, mapping, truncation and splitting: python -m pytest -q tests/data/test_data.py"""
from __future__ import annotations

import csv

import pytest

from prefdistill.config.schema import ColumnMap, DataConfig, SplitNames
from prefdistill.data.splits import load_raw, prepare_splits, to_examples, truncate_prompt
from prefdistill.io import write_jsonl


def qa_rows(n=4):
    return [{"question": f"what is {i}?", "answer": f"it is {i}", "context": f"ctx {i}"} for i in range(n)]


def qa_cfg(source, **kw):
    return DataConfig(source=str(source), columns=ColumnMap(prompt="question", target="answer"), **kw)


def grouped_rows(n_groups=20, per_group=3, doc="doc"):
    """Rows where `group` ties `per_group` rows together (e.g. aspects of one paper)."""
    return [{"prompt": f"{doc} {g} part {j}", "target": f"summary {g}.{j}", "group": f"{doc}{g}"}
            for g in range(n_groups) for j in range(per_group)]


def group_of(examples):
    return {e.meta["group"] for e in examples}


# ----------------------------------------------------------------------------- loading and mapping


def test_csv_column_mapping(tmp_path):
    path = tmp_path / "qa.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer", "context"])
        writer.writeheader()
        writer.writerows(qa_rows())
    raw = load_raw(qa_cfg(path))
    assert list(raw) == ["train"]
    examples = to_examples(raw["train"], qa_cfg(path), "train")
    assert [e.id for e in examples] == ["train-0", "train-1", "train-2", "train-3"]
    assert examples[2].prompt == "what is 2?" and examples[2].target == "it is 2"
    assert examples[2].meta == {"context": "ctx 2"}  # other columns ride along


def test_jsonl_column_mapping_with_id_column(tmp_path):
    path = tmp_path / "qa.jsonl"
    write_jsonl(path, [dict(r, key=f"q{i}") for i, r in enumerate(qa_rows())])
    cfg = DataConfig(source=str(path), columns=ColumnMap(prompt="question", target="answer", id="key"))
    examples = to_examples(load_raw(cfg)["train"], cfg, "train")
    assert [e.id for e in examples] == ["q0", "q1", "q2", "q3"]
    assert "key" not in examples[0].meta and examples[3].target == "it is 3"


def test_parquet_column_mapping(tmp_path):
    import datasets

    path = tmp_path / "qa.parquet"
    datasets.Dataset.from_list(qa_rows()).to_parquet(str(path))
    cfg = qa_cfg(path)
    examples = to_examples(load_raw(cfg)["train"], cfg, "train")
    assert [(e.prompt, e.target) for e in examples][1] == ("what is 1?", "it is 1")


def test_folder_split_names(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", qa_rows(6))
    write_jsonl(tmp_path / "val.jsonl", qa_rows(2))
    write_jsonl(tmp_path / "test.jsonl", qa_rows(3))
    (tmp_path / "README.md").write_text("ignored")
    raw = load_raw(qa_cfg(tmp_path))
    assert {k: len(v) for k, v in raw.items()} == {"train": 6, "validation": 2, "test": 3}


def test_template_formatting():
    cfg = DataConfig(columns=ColumnMap(prompt="question", target="answer"),
                     template="Context: {context}\nQ: {prompt}\nA ({target!r})")
    (example,) = to_examples(qa_rows(1), cfg, "test")
    assert example.prompt == "Context: ctx 0\nQ: what is 0?\nA ('it is 0')"
    assert example.id == "test-0" and example.meta == {}  # template columns are not repeated in meta


def test_template_without_prompt_column_needs_none():
    rows = [{"q": "hi", "c": "there", "target": "x"}]
    (example,) = to_examples(rows, DataConfig(template="{q} {c}"), "train")
    assert example.prompt == "hi there"


# ----------------------------------------------------------------------------- errors


def test_missing_prompt_column_names_column_split_source_and_key():
    cfg = DataConfig(source="my.jsonl")
    with pytest.raises(ValueError, match=r"'prompt' is missing from the 'train' split of 'my.jsonl'.*"
                                         r"\['question', 'answer', 'context'\].*data\.columns\.prompt"):
        to_examples(qa_rows(), cfg, "train")


def test_missing_target_column():
    cfg = DataConfig(columns=ColumnMap(prompt="question"))
    with pytest.raises(ValueError, match=r"'target' is missing from the 'validation' split.*data\.columns\.target"):
        to_examples(qa_rows(), cfg, "validation")


def test_empty_prompt_names_row_and_column():
    rows = qa_rows()
    rows[2]["question"] = "  "
    with pytest.raises(ValueError, match=r"row 2 \(id 'train-2'\).*'question' must be non-empty text"):
        to_examples(rows, qa_cfg("x"), "train")


def test_non_string_prompt():
    rows = qa_rows()
    rows[1]["question"] = 42
    with pytest.raises(ValueError, match=r"row 1 .*'question' must be non-empty text, got 42"):
        to_examples(rows, qa_cfg("x"), "train")


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_target(split):
    rows = qa_rows()
    rows[3]["answer"] = None
    with pytest.raises(ValueError, match=rf"row 3 \(id '{split}-3'\).*'answer' must be non-empty text"):
        to_examples(rows, qa_cfg("x"), split)


def test_template_unknown_column():
    cfg = DataConfig(columns=ColumnMap(prompt="question", target="answer"), template="{prompt} {passage}")
    with pytest.raises(ValueError, match=r"data.template .*unknown column\(s\) \['passage'\]"):
        to_examples(qa_rows(), cfg, "train")


def test_template_positional_field():
    with pytest.raises(ValueError, match="positional field"):
        to_examples(qa_rows(), DataConfig(template="Q: {}"), "train")


def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match=r"unsupported file type.*\.jsonl.*\.parquet.*\.csv"):
        load_raw(DataConfig(source=str(path)))


@pytest.mark.parametrize("source", ["./nope.jsonl", "nope.csv", "/no/such/folder"])
def test_missing_local_path_is_not_a_hub_lookup(source):
    with pytest.raises(ValueError, match="not found"):
        load_raw(DataConfig(source=source))


def test_unknown_builtin():
    with pytest.raises(ValueError, match="builtin:aclsum"):
        load_raw(DataConfig(source="builtin:nope"))


def test_empty_split_after_caps_names_the_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", grouped_rows())
    write_jsonl(tmp_path / "test.jsonl", grouped_rows(2))
    with pytest.raises(ValueError, match="the test split .* is empty"):
        prepare_splits(DataConfig(source=str(tmp_path), max_test=0), seed=0)


def test_empty_source_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match="the train split .* is empty"):
        prepare_splits(DataConfig(source=str(path)), seed=0)


def test_single_group_cannot_be_halved(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, grouped_rows(n_groups=3))
    with pytest.raises(ValueError, match="needs at least two groups"):
        prepare_splits(DataConfig(source=str(path), val_fraction=0.3, test_fraction=0.3), seed=0)


# ----------------------------------------------------------------------------- truncation


@pytest.fixture(scope="module")
def tokenizer():
    """A real fast tokenizer built offline: one token per whitespace-separated word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "zero one two three four five six seven eight nine".split()
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_truncate_right_and_left(tokenizer):
    text = "zero one two three four five"
    assert truncate_prompt(text, tokenizer, 3, "right", "r") == "zero one two"
    assert truncate_prompt(text, tokenizer, 3, "left", "r") == "three four five"


def test_text_within_limit_is_unchanged(tokenizer):
    text = "zero   one\ntwo"  # decode would normalise the spacing; within the limit it is untouched
    for side in ("right", "left", "error"):
        assert truncate_prompt(text, tokenizer, 3, side, "r") is text


def test_truncate_error_names_row_count_limit_and_options(tokenizer):
    with pytest.raises(ValueError, match=r"'train-7' has 6 tokens, over the limit of 4.*"
                                         r"data\.max_prompt_tokens.*'right'.*'left'"):
        truncate_prompt("zero one two three four five", tokenizer, 4, "error", "train-7")


def test_truncate_rejects_unknown_side(tokenizer):
    with pytest.raises(ValueError, match="data.truncation"):
        truncate_prompt("zero", tokenizer, 4, "middle", "r")


def test_prepare_splits_truncates_every_split(tmp_path, tokenizer):
    words = "zero one two three four five six seven eight nine".split()
    rows = [{"prompt": f"{words[i // 10]} {words[i % 10]} three four five six", "target": "t", "group": f"g{i}"}
            for i in range(20)]  # distinct prompts (repeats would be dropped), all ending "five six"
    write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(tmp_path / "d.jsonl"), max_prompt_tokens=2, truncation="left")
    splits = prepare_splits(cfg, seed=0, tokenizer=tokenizer)
    for part in (splits.sft, splits.distill, splits.validation, splits.test):
        assert part and {e.prompt for e in part} == {"five six"}
    cfg.truncation = "error"
    with pytest.raises(ValueError, match="has 6 tokens"):
        prepare_splits(cfg, seed=0, tokenizer=tokenizer)


# ----------------------------------------------------------------------------- splitting


@pytest.fixture
def grouped_source(tmp_path):
    path = tmp_path / "grouped.jsonl"
    write_jsonl(path, grouped_rows())
    return str(path)


def ids(examples):
    return [e.id for e in examples]


def test_halves_are_disjoint_and_keep_groups_whole(grouped_source):
    s = prepare_splits(DataConfig(source=grouped_source), seed=0)
    # 20 groups of 3: 2 carved for test, 2 for validation, 16 halved 8 / 8.
    assert (len(s.sft), len(s.distill), len(s.validation), len(s.test)) == (24, 24, 6, 6)
    parts = [group_of(p) for p in (s.sft, s.distill, s.validation, s.test)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 20  # no group in two places
    assert all(e.target for e in s.distill)  # kept for optional ROUGE scoring


def test_splits_are_deterministic_per_seed_and_differ_across_seeds(grouped_source):
    cfg = DataConfig(source=grouped_source)
    a, b, c = (prepare_splits(cfg, seed) for seed in (0, 0, 1))
    assert a == b
    assert ids(a.sft) != ids(c.sft)
    # Carved held-out rows do not depend on the seed: every seed is evaluated on the same rows.
    assert ids(a.test) == ids(c.test) and ids(a.validation) == ids(c.validation)


def test_official_splits_are_used_and_capped_in_source_order(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", grouped_rows(10))
    write_jsonl(tmp_path / "dev.jsonl", grouped_rows(4, doc="dev"))  # a prompt also in train would be dropped from it
    write_jsonl(tmp_path / "test.jsonl", grouped_rows(5, doc="test"))
    s = prepare_splits(DataConfig(source=str(tmp_path), max_val=5), seed=3)
    assert ids(s.validation) == [f"validation-{i}" for i in range(5)]
    assert len(s.test) == 15 and len(s.sft) + len(s.distill) == 30


def test_split_none_carves_even_when_the_source_has_it(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", grouped_rows(10))
    write_jsonl(tmp_path / "test.jsonl", grouped_rows(5))
    cfg = DataConfig(source=str(tmp_path), splits=SplitNames(test=None), test_fraction=0.2,
                     val_fraction=0.0)
    s = prepare_splits(cfg, seed=0)
    assert len(s.test) == 6 and all(e.id.startswith("train-") for e in s.test)
    assert s.validation == []  # val_fraction 0 asks for no validation rows


def test_max_train_caps_rows_and_keeps_halves_group_disjoint(grouped_source):
    s = prepare_splits(DataConfig(source=grouped_source, max_train=10), seed=0)
    assert len(s.sft) + len(s.distill) == 10
    assert not group_of(s.sft) & group_of(s.distill)


def test_ungrouped_rows_split_by_row(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "target": f"t{i}"} for i in range(10)])
    s = prepare_splits(DataConfig(source=str(tmp_path / "d.jsonl")), seed=0)
    assert (len(s.sft), len(s.distill), len(s.validation), len(s.test)) == (4, 4, 1, 1)
    assert not set(ids(s.sft)) & set(ids(s.distill))


@pytest.mark.parametrize("fraction, expected", [(1.0, 24), (0.5, 12), (0.25, 6), (0.01, 1)])
def test_distill_fraction_keeps_the_first_share(grouped_source, fraction, expected):
    full = prepare_splits(DataConfig(source=grouped_source), seed=0)
    part = prepare_splits(DataConfig(source=grouped_source, distill_fraction=fraction), seed=0)
    assert ids(part.distill) == ids(full.distill)[:expected]
    assert part.sft == full.sft


# ----------------------------------------------------------------------------- builtins


def test_builtin_aclsum():
    raw = load_raw(DataConfig(source="builtin:aclsum"))
    assert {k: len(v) for k, v in raw.items()} == {"train": 300, "validation": 150, "test": 300}
    s = prepare_splits(DataConfig(source="builtin:aclsum"), seed=0)
    assert (len(s.sft), len(s.distill), len(s.validation), len(s.test)) == (150, 150, 150, 300)
    assert not group_of(s.sft) & group_of(s.distill)
    for e in s.sft + s.test:
        assert e.prompt.startswith(f"Summarize the {e.meta['aspect']} this paper ")
        assert "in one sentence.\n\n" in e.prompt
        assert not any(bad in e.prompt for bad in (" .", " ,", " )", "( ", " %"))
        assert e.target and e.meta["title"]
    assert {e.meta["aspect"] for e in s.test} == {"challenge", "approach", "outcome"}


@pytest.fixture(scope="module")
def chitchat():
    return load_raw(DataConfig(source="builtin:chitchat"))


def test_builtin_chitchat_rows(chitchat):
    assert all(chitchat[split] for split in ("train", "validation", "test"))
    n = sum(map(len, chitchat.values()))
    assert 0.05 < len(chitchat["test"]) / n < 0.15  # ~10% of conversations
    for rows in chitchat.values():
        for row in rows:
            assert 3 <= len(row["target"].split()) <= 40
            lines = row["prompt"].split("\n")
            assert 2 <= len(lines) - 1 <= 4 and lines[-1].startswith("Write the next reply from ")
            assert all(line[:3] in ("A: ", "B: ") for line in lines[:-1])
    groups = [{r["group"] for r in rows} for rows in chitchat.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_builtin_chitchat_splits_are_deterministic(chitchat):
    again = load_raw(DataConfig(source="builtin:chitchat"))
    assert {k: [r["id"] for r in v] for k, v in again.items()} == \
           {k: [r["id"] for r in v] for k, v in chitchat.items()}


def test_builtin_chitchat_prepare_splits():
    s = prepare_splits(DataConfig(source="builtin:chitchat", max_train=200, max_val=20, max_test=20), seed=0)
    assert len(s.sft) + len(s.distill) == 200 and len(s.validation) == len(s.test) == 20
    assert not group_of(s.sft) & group_of(s.distill)
