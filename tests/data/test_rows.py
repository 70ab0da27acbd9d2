"""Training rows are typed records: each kind from its dict, a bad row named with its field, losses reading attributes."""
import pytest

from prefdistill.data.pairs import PairRow
from prefdistill.data.rows import PromptRow, TargetRow, field_of, training_row, training_rows


def test_each_kind_of_dict_becomes_its_record():
    target, prompt, pair = training_rows([{"id": "a", "prompt": "p", "target": "t"}, {"prompt": "q"},
                                          {"id": "b#0", "prompt": "p", "chosen": "c", "rejected": "r", "chosen_score": 1}])
    assert target == TargetRow("p", "t", "a") and prompt == PromptRow("q", "")
    assert isinstance(pair, PairRow) and (pair.chosen, pair.rejected, pair.chosen_score) == ("c", "r", 1.0)
    assert pair.chosen_source == "teacher"  # a pair built by hand is unswapped


def test_records_pass_through_unchanged():
    rows = [TargetRow("p", "t"), PromptRow("q")]
    assert training_rows(rows) == rows and training_row(rows[0]) is rows[0]


@pytest.mark.parametrize("row, words", [
    ({"id": "x", "target": "t"}, ["rows[1]", "'x'", "'prompt'"]),
    ({"id": "x", "prompt": "p", "target": 3}, ["rows[1]", "'target'"]),
    ({"id": "x", "prompt": "p", "taget": "t"}, ["rows[1]", "unknown fields", "taget"]),
    ({"id": "x#0", "prompt": "p", "chosen": "c"}, ["rows[1]", "'rejected'"]),
    ("just text", ["rows[1]", "str"]),
])
def test_a_bad_row_is_named_by_position_id_and_field(row, words):
    with pytest.raises((ValueError, TypeError)) as err:
        training_rows([{"prompt": "fine"}, row])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_field_of_reads_dicts_and_records_alike():
    assert field_of({"prompt": "p"}, "prompt") == field_of(PromptRow("p"), "prompt") == "p"
    assert field_of({"prompt": "p"}, "target", "-") == field_of(PromptRow("p"), "target", "-") == "-"


def test_a_loss_reads_records_and_names_a_bad_row_before_any_model_work():
    """The registry hands every loss records: a dict without its text fails with the row's name, not a KeyError inside."""
    from prefdistill.methods import get_method
    from prefdistill.methods.sft import SFTParams

    class NoModel:  # the loss must fail on the rows before touching the policy
        def __getattr__(self, name):
            raise AssertionError(f"the policy was used ({name})")

    with pytest.raises(ValueError, match=r"rows\[0\].*'prompt'"):
        get_method("sft").loss(NoModel(), [{"id": "r", "target": "t"}], SFTParams())
