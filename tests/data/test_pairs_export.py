"""The pair-row contract (`prefdistill.data.pairs.PairRow`) and `prefdistill export-pairs`: each format keeps the column types.

    pytest tests/data/test_pairs_export.py
"""
import json
import math
from dataclasses import asdict

import datasets
import pytest

from prefdistill.cli import main
from prefdistill.config.schema import SamplingConfig
from prefdistill.data.pairs import PairRow, attach_scores, build_pairs, load_pairs, pair_features, relabel, swap_sides
from prefdistill.io import Example, write_jsonl
from prefdistill.methods.common import attach_teacher_logps, student_side, teacher_side

FORMATS = ("parquet", "csv", "jsonl", "hf")
# Column -> Arrow type every export must keep; a struct's fields are dotted (CSV has them as columns of these names).
TYPES = {
    "prompt": "string", "chosen_source": "string", "relabelled": "bool", "swapped": "bool",
    "judge_chosen": "float64", "judge_rejected": "float64", "chosen_score": "float64", "rejected_score": "float64",
    "score_kind": "string", "teacher_chosen_logp": "float64", "teacher_rejected_logp": "float64",
    **{f"{role}_sampling.{k}": t for role in ("teacher", "student")
       for k, t in {"max_new_tokens": "int64", "do_sample": "bool", "temperature": "float64", "top_p": "float64",
                    "num_samples": "int64", "batch_size": "int64"}.items()},
}


class LengthJudge:  # prefers the longer text: every student sample below is longer, so each relabelled pair swaps
    def score(self, prompts, responses):
        return [float(len(r.split())) for r in responses]


def realistic_pairs() -> list[dict]:
    """Rows as the pairs stage writes them, then scored and given teacher log-probs as DPKD's loader does."""
    examples = [Example(f"doc{i}", f"Summarize : the model learns data {i}", f"the model learns {i}") for i in range(4)]
    teacher = {e.id: [f"the model learns {i}"] for i, e in enumerate(examples)}
    student = {e.id: [f"data results data results {i}"] for i, e in enumerate(examples)}
    # temperature=1 is an int here, as a YAML `temperature: 1` gives it: the export must still say float64.
    meta = {"teacher_model": "tiny-teacher", "student_model": "tiny-student", "teacher_sampling": asdict(SamplingConfig()),
            "student_sampling": asdict(SamplingConfig(temperature=1, num_samples=2))}
    pairs, skipped = build_pairs(examples, teacher, student, meta)
    assert len(pairs) == 4 and skipped == {"empty": 0, "identical": 0}
    assert relabel(pairs, LengthJudge(), 0.5, seed=0) == 2
    attach_scores(pairs, "rouge")
    attach_teacher_logps(pairs, {p["id"]: {"teacher_sample": -1.5 - i, "student_sample": -7.25 - i} for i, p in enumerate(pairs)}, "test")
    return pairs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    rows = realistic_pairs()
    # The first row must be one the judge did not see: then its judge columns are absent, and the
    # export must still have them (Dataset.from_list would take its columns from this row only).
    rows.sort(key=lambda r: r["relabelled"])
    write_jsonl(folder / "pairs" / "pairs.jsonl", rows)
    return folder


def _flat(row: dict) -> dict:
    """A nested row with its struct fields as dotted keys, as CSV has them."""
    out = {}
    for k, v in row.items():
        out.update({f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v})
    return out


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))  # CSV reads an empty cell as NaN


def _load(fmt: str, out, cache):
    if fmt == "parquet":
        return datasets.Dataset.from_parquet(str(out), cache_dir=str(cache))
    if fmt == "csv":
        return datasets.Dataset.from_csv(str(out), cache_dir=str(cache))
    if fmt == "jsonl":
        return datasets.Dataset.from_json(str(out), cache_dir=str(cache))
    return datasets.load_from_disk(str(out))


def test_realistic_rows_cover_the_contract(run):
    rows = load_pairs(run / "pairs" / "pairs.jsonl")
    assert {f for r in rows for f in r} == set(PairRow.__dataclass_fields__)  # every field appears in some row
    swapped = [r for r in rows if r["swapped"]]
    assert swapped and all(r["relabelled"] and r["chosen_source"] == "student" for r in swapped)
    assert any(not r["relabelled"] and "judge_chosen" not in r for r in rows)
    for r in swapped:  # the teacher's log-prob follows the teacher's text to the rejected side
        assert teacher_side(r) == r["rejected"] and student_side(r) == r["chosen"]
        assert r["teacher_rejected_logp"] > -7 > r["teacher_chosen_logp"] and r["judge_chosen"] > r["judge_rejected"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_keeps_column_types_and_values(fmt, run, tmp_path):
    out = tmp_path / f"pairs.{fmt}"
    assert main(["export-pairs", str(run), "--format", fmt, "--out", str(out)]) == 0
    ds = _load(fmt, out, tmp_path / "cache")
    string = {"large_string": "string"}  # pandas' CSV reader gives Arrow's large strings: the same type of value
    types = {name: string.get(feature.dtype, feature.dtype) for name, feature in ds.features.flatten().items()}
    assert {k: types.get(k) for k in TYPES} == TYPES
    if fmt != "csv":  # CSV has no nesting: its settings are the dotted columns checked above
        assert all(isinstance(ds.features[f"{role}_sampling"], dict) for role in ("teacher", "student"))
        assert isinstance(ds[0]["teacher_sampling"], dict)
    rows = load_pairs(run / "pairs" / "pairs.jsonl")
    got = [_flat(r) for r in ds.to_list()]
    assert len(got) == len(rows)
    for want, have in zip(map(_flat, rows), got):
        for key, value in want.items():
            if TYPES.get(key) == "float64":  # an int where the contract has a float (temperature=1) exports as a float
                value = float(value)
            if isinstance(value, float):
                assert isinstance(have[key], float) and have[key] == pytest.approx(value), (fmt, key)
            else:
                assert have[key] == value and type(have[key]) is type(value), (fmt, key, have[key])
        assert all(_missing(have[k]) for k in set(have) - set(want)), fmt  # absent fields export as nulls
    assert [r["student_sampling.temperature"] for r in got] == [1.0] * len(rows)


def test_csv_reads_back_exactly_with_the_contract_features(run, tmp_path):
    out = tmp_path / "pairs.csv"
    assert main(["export-pairs", str(run), "--format", "csv", "--out", str(out)]) == 0
    rows = load_pairs(run / "pairs" / "pairs.jsonl")
    ds = datasets.Dataset.from_csv(str(out), features=pair_features(rows).flatten(), cache_dir=str(tmp_path / "cache"))
    assert ds.features == pair_features(rows).flatten()
    assert ds["swapped"] == [r["swapped"] for r in rows]


def test_old_files_still_load_and_export(tmp_path):
    """A minimal file (what users or older versions wrote): defaults filled, no column invented beyond them."""
    path = tmp_path / "run" / "pairs" / "pairs.jsonl"
    write_jsonl(path, [{"id": "a#0", "prompt": "x", "chosen": "good", "rejected": "bad"},
                       {"id": "b#0", "prompt": "y", "chosen": "fine", "rejected": "poor", "chosen_score": 1, "rejected_score": 0}])
    rows = load_pairs(path)
    assert rows[0] == {"id": "a#0", "prompt": "x", "chosen": "good", "rejected": "bad", "chosen_source": "teacher",
                       "rejected_source": "student", "reference": "", "relabelled": False, "swapped": False}
    assert rows[1]["chosen_score"] == 1.0 and isinstance(rows[1]["chosen_score"], float)
    out = tmp_path / "pairs.parquet"
    assert main(["export-pairs", str(tmp_path / "run"), "--format", "parquet", "--out", str(out)]) == 0
    ds = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "cache"))
    assert ds.features["chosen_score"].dtype == "float64" and ds["chosen_score"] == [None, 1.0]
    assert "teacher_sampling" not in ds.column_names


@pytest.mark.parametrize("cell, message", [
    ({"relabelled": "False"}, r"relabelled: expected true/false, got 'False'"),
    ({"chosen_source": "judge"}, r"chosen_source: must be one of \['teacher', 'student'\]"),
    ({"teacher_sampling": {"temperature": "hot"}}, r"teacher_sampling: expected .*'hot'"),
    ({"chosen_scroe": 0.5}, r"unknown key 'chosen_scroe' \(did you mean 'chosen_score'\?\)"),
])
def test_a_bad_field_names_file_row_and_key(cell, message, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"id": "p0", "prompt": "x", "chosen": "a", "rejected": "b"}) + "\n"
                    + json.dumps({"id": "p1", "prompt": "x", "chosen": "a", "rejected": "b", **cell}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}: row 1 \(id 'p1'\): {message}"):
        load_pairs(path)


def test_swap_sides_moves_every_per_side_field():
    row = PairRow(id="p", prompt="x", chosen="t", rejected="s", judge_chosen=0.9, judge_rejected=0.1, chosen_score=0.8,
                  rejected_score=0.2, teacher_chosen_logp=-1.0, teacher_rejected_logp=-5.0)
    back = swap_sides(row)
    assert (back.chosen, back.rejected, back.chosen_source, back.rejected_source) == ("s", "t", "student", "teacher")
    assert (back.judge_chosen, back.chosen_score, back.teacher_chosen_logp) == (0.1, 0.2, -5.0)
    assert swap_sides(back) == row
