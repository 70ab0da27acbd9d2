"""The judge check on hand-made scores: python -m pytest -q tests/evaluation/test_judge_check.py"""
from __future__ import annotations

import itertools
import math

import pytest

from prefdistill.evaluation.judge_check import (ACCURACY_FLOOR, RowOutputs, degenerate_kind, judge_check, kendall, ranks,
                                                row_check, spearman)

REFS = [f"the parser{i} reads tokens and builds trees for sentences of language {i}" for i in range(10)]
GOOD = [f"a neural parser{i} builds syntax trees from tokens of language {i}" for i in range(10)]
LOOP = "the parser of the parser of the parser of the parser of the parser"
TEMPLATE = "Describe the parser of the parser."


def test_degenerate_kinds_by_hand():
    assert degenerate_kind("") == "empty" and degenerate_kind("   ") == "empty"
    assert degenerate_kind(LOOP) == "loop"
    assert degenerate_kind(TEMPLATE) == "template"  # content words: describe, parser
    assert degenerate_kind("This paper presents the method.") == "template"  # presents, method
    assert degenerate_kind(GOOD[0]) is None and degenerate_kind(REFS[3]) is None
    assert degenerate_kind("BERT improves parsing accuracy.") is None  # short, but four content words
    assert degenerate_kind("the cat sat the cat sat") != "loop"  # under 8 words: not judged a loop


def test_row_accuracy_against_the_reference_by_hand():
    ref_scores = [1.0] * 4
    row = RowOutputs("SFT", [[GOOD[0], LOOP, TEMPLATE, GOOD[1]]], [[0.0, 2.0, 1.0, 3.0]])
    r = row_check(row, ref_scores)
    # reference above on prompt 0, below on 1 and 3, tied on 2: (1 + 0 + ½ + 0) / 4
    assert r["accuracy"] == pytest.approx(1.5 / 4) and r["win_rate"] == pytest.approx(62.5)
    d = r["degenerate"]
    assert d["n"] == 2 and d["share"] == 0.5 and d["kinds"] == {"loop": 1, "template": 1}
    assert d["accuracy"] == pytest.approx(0.25)  # the loop won, the template tied
    assert d["win_points"] == pytest.approx(100 * 1.5 / 4)  # 1.5 of the row's 2.5 wins, over 4 prompts


def rows_with(loop_score: float, n: int = 10) -> dict[str, RowOutputs]:
    """An initial student that loops on every prompt (its loops scored `loop_score`), an SFT student that answers well."""
    return {"student_init": RowOutputs("Initial student", [[LOOP] * n], [[loop_score] * n], [[0.1] * n]),
            "student_sft": RowOutputs("SFT student", [GOOD[:n]], [[0.5] * n], [[0.8] * n]),
            "teacher": RowOutputs("Teacher", [GOOD[:n]], [[0.9] * n], [[0.9] * n])}


def test_a_judge_that_ranks_loops_above_the_reference_is_flagged():
    check = judge_check(rows_with(loop_score=2.0), [1.0] * 10, REFS[:10])
    v = check["verdict"]
    assert v["cannot_tell_degenerate"] and v["status"] == "cannot tell degenerate outputs from the reference"
    assert check["degenerate"] == {"n": 10, "accuracy": 0.0, "by_kind": {"loop": {"n": 10, "accuracy": 0.0}}}
    assert any("0% of 10 degenerate outputs" in r for r in v["reasons"])
    assert any(r.startswith("Initial student owes 100.0 points") for r in v["reasons"])
    assert check["rows"]["student_sft"]["accuracy"] == 1.0  # the honest rows are not blamed
    # The sample shows three fooled loops first (largest margin first), then the students' outputs on random prompts
    assert [s["row"] for s in check["sample"]] == ["student_init"] * 3 + ["student_init", "student_sft"]
    assert all(s["judge_prefers"] == "output" and s["degenerate"] == "loop" for s in check["sample"][:3])
    assert check["sample"][4]["judge_prefers"] == "reference" and check["sample"][4]["degenerate"] is None


def test_a_judge_that_ranks_loops_below_the_reference_passes():
    check = judge_check(rows_with(loop_score=0.0), [1.0] * 10, REFS[:10], prompts=[f"Summarize {r}" for r in REFS[:10]])
    assert not check["verdict"]["cannot_tell_degenerate"] and check["verdict"]["reasons"] == []
    assert check["verdict"]["status"] == "tells degenerate outputs from the reference"
    assert len(check["sample"]) == 5 and {s["row"] for s in check["sample"]} == {"student_init", "student_sft"}
    s = check["sample"][0]
    assert s["prompt_head"] == f"Summarize {REFS[s['prompt_index']]}" and s["reference"] == REFS[s["prompt_index"]]
    assert judge_check(rows_with(0.0), [1.0] * 10, REFS[:10], seed=0)["sample"] == judge_check(
        rows_with(0.0), [1.0] * 10, REFS[:10], seed=0)["sample"]  # the same draw every time


def test_a_few_degenerate_wins_below_the_floor_and_the_row_ceiling():
    """One loop in ten wins: pooled accuracy 90% (not below the floor), 10 points earned... by the row of loops."""
    scores = [2.0] + [0.0] * 9
    check = judge_check({"student_init": RowOutputs("Init", [[LOOP] * 10], [scores])}, [1.0] * 10, REFS[:10])
    assert check["degenerate"]["accuracy"] == pytest.approx(ACCURACY_FLOOR)
    assert check["verdict"]["reasons"] == ["Init owes 10.0 points of its 10.0% win rate to 10 degenerate outputs (ceiling 5)"]
    few = judge_check({"student_init": RowOutputs("Init", [[LOOP] * 3 + GOOD[3:10]], [[0.0] * 10])}, [1.0] * 10, REFS[:10])
    assert few["verdict"]["status"].startswith("untested: fewer than 5")


def naive_spearman(a, b):
    """Pearson's r of mean ranks, every sum written out."""
    def mean_ranks(x):
        return [sum(1 for y in x if y < v) + (sum(1 for y in x if y == v) + 1) / 2 for v in x]
    ra, rb = mean_ranks(a), mean_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def naive_kendall(a, b):
    """tau-b from every pair of rows counted by hand."""
    conc = disc = tie_a = tie_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        tie_a += da == 0
        tie_b += db == 0
        conc += da * db > 0
        disc += da * db < 0
    n0 = len(a) * (len(a) - 1) / 2
    return (conc - disc) / math.sqrt((n0 - tie_a) * (n0 - tie_b))


@pytest.mark.parametrize("a, b", [
    ([10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]),  # the same order: 1
    ([10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0]),  # reversed: -1
    ([26.0, 12.0, 40.0, 33.0, 5.0], [0.30, 0.21, 0.28, 0.35, 0.10]),
    ([1.0, 2.0, 2.0, 3.0, 5.0, 5.0], [2.0, 1.0, 4.0, 4.0, 3.0, 6.0]),  # ties on both sides
])
def test_rank_correlations_agree_with_the_naive_count(a, b):
    assert spearman(a, b) == pytest.approx(naive_spearman(a, b))
    assert kendall(a, b) == pytest.approx(naive_kendall(a, b))


def test_rank_correlations_by_hand_and_their_limits():
    assert list(ranks([3.0, 1.0, 3.0, 2.0])) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0) and kendall([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # one swap among 4 rows: 5 concordant pairs, 1 discordant -> tau 4/6; rho 1 - 6*2/(4*15) = 0.8
    assert kendall([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6) and spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert spearman([1, 2], [1, 2]) is None and kendall([1, 2], [2, 1]) is None  # two rows rank nothing
    assert spearman([1, 2, 3], [5, 5, 5]) is None and kendall([1, 2, 3], [5, 5, 5]) is None  # a constant side
    with pytest.raises(ValueError, match="length mismatch"):
        spearman([1, 2, 3], [1, 2])


def test_rank_agreement_of_the_rows():
    check = judge_check(rows_with(loop_score=0.0), [1.0] * 10, REFS[:10])
    ra = check["rank_agreement"]
    assert [t["row"] for t in ra["rows"]] == ["student_init", "student_sft", "teacher"] and ra["n_rows"] == 3
    assert [t["win_rate"] for t in ra["rows"]] == [0.0, 0.0, 0.0]  # no row beats the references: a constant side
    assert ra["similarity"] == {"spearman": None, "kendall": None}
    rows = rows_with(loop_score=0.0)
    rows["teacher"] = RowOutputs("Teacher", [GOOD[:10]], [[2.0] * 10], [[0.9] * 10])  # beats every reference
    rows["student_sft"] = RowOutputs("SFT", [GOOD[:10]], [[1.0] * 5 + [2.0] * 5], [[0.8] * 10])  # ties 5, wins 5
    ra = judge_check(rows, [1.0] * 10, REFS[:10])["rank_agreement"]
    assert [t["win_rate"] for t in ra["rows"]] == [0.0, 75.0, 100.0]
    assert [t["similarity"] for t in ra["rows"]] == pytest.approx([0.1, 0.8, 0.9])
    assert ra["similarity"] == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0)}
    assert ra["rows"][0]["rougeL"] < ra["rows"][1]["rougeL"] == ra["rows"][2]["rougeL"]
    no_sim = {k: RowOutputs(r.label, r.generations, r.scores) for k, r in rows.items()}
    assert judge_check(no_sim, [1.0] * 10, REFS[:10])["rank_agreement"]["similarity"] == {"spearman": None, "kendall": None}


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="no rows"):
        judge_check({}, [1.0], ["r"])
    with pytest.raises(ValueError, match="needs 2 outputs and scores per seed"):
        judge_check({"x": RowOutputs("X", [["a"]], [[0.0]])}, [1.0, 1.0], ["r", "s"])
