"""Aligning one completion's two tokenizations (prefdistill.models.alignment) and the tokens two vocabularies share
(prefdistill.models.vocab_map): hand-worked examples, then real byte-level and SentencePiece-style BPE tokenizers."""
import pytest

from prefdistill.models.alignment import TokenizerBridge, pair_positions, prefix_ends, spans_of, token_starts
from prefdistill.models.vocab_map import byte_level_alphabet, marking_style, shared_tokens, token_bytes
from prefdistill.testing.tokenizers import byte_level_bpe, metaspace_bpe

TEXTS = ["the model learns a short summary of each paper about data training results",
         "we propose to show improvements in accuracy, caf\u00e9 na\u00efve", "teacher and student models"] * 20


@pytest.fixture(scope="module")
def byte_bpe():
    return byte_level_bpe(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def sp_bpe():
    return metaspace_bpe(TEXTS, vocab_size=300)


# ------------------------------------------------------------------ by hand: ends -> starts, pairs, spans

def test_hand_worked_pairs_and_spans():
    # student "hel|lo| wor|ld" (ends 3 5 9 11), teacher "hello| world" (ends 5 11), both + EOS
    s_ends, t_ends = [3, 5, 9, 11], [5, 11]
    s_starts, t_starts = token_starts(s_ends, True), token_starts(t_ends, True)
    assert s_starts == [0, 3, 5, 9, 11] and t_starts == [0, 5, 11]
    # "hel" and "hello" after "", " wor" and " world" after "hello", the EOS after "hello world"
    assert pair_positions(s_starts, t_starts) == ((0, 0), (2, 1), (4, 2))
    assert spans_of(s_ends, t_ends) == ((0, 2, 0, 1), (2, 4, 1, 2))


def test_a_token_ending_inside_a_character_is_no_boundary():
    # student bytes "caf|\xc3|\xa9" with the middle byte ending inside "é" (end None); teacher "café"
    s_ends, t_ends = [3, None, 4], [4]
    assert token_starts(s_ends, False) == [0, 3, None]
    assert pair_positions(token_starts(s_ends, False), token_starts(t_ends, False)) == ((0, 0),)
    assert spans_of(s_ends, t_ends) == ((0, 3, 0, 1),)


def test_a_token_that_decodes_to_nothing_pairs_once():
    # ends 2, 2, 5: token 1 adds no text, so tokens 1 and 2 both start at 2; only the first reads that prefix alone
    assert pair_positions(token_starts([2, 2, 5], False), token_starts([2, 5], False)) == ((0, 0), (1, 1))


def test_unaligned_tails_pair_nothing():
    # the teacher's decode stops reproducing the text after 4 characters
    assert pair_positions(token_starts([4, 8], True), token_starts([4, None], True)) == ((0, 0), (1, 1))
    assert spans_of([4, 8], [4, None]) == ((0, 1, 0, 1),)


# ------------------------------------------------------------------ real tokenizers

def test_prefix_ends_of_a_byte_split_character(byte_bpe):
    text = "\u65e5"  # one character of three UTF-8 bytes, which this vocabulary has only as bytes
    ids = byte_bpe(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and prefix_ends(byte_bpe, ids, text) == [None, None, 1]


def test_byte_level_against_sentencepiece(byte_bpe, sp_bpe):
    bridge = TokenizerBridge(byte_bpe, sp_bpe)
    text = "we propose a caf\u00e9 model,  na\u00efve \u65e5\u672c"  # a double space, split characters, bytes only
    ids = byte_bpe(text, add_special_tokens=False)["input_ids"] + [byte_bpe.eos_token_id]
    row = bridge.align(ids)
    assert row.text == text and row.teacher_ids[-1] == sp_bpe.eos_token_id
    assert sp_bpe.decode(row.teacher_ids[:-1]) == text
    s_text, t_text = ids[:-1], row.teacher_ids[:-1]
    s_starts = token_starts(prefix_ends(byte_bpe, s_text, text), True)
    t_starts = token_starts(prefix_ends(sp_bpe, t_text, text), True)
    for j, i in row.pairs:  # a pair reads one prefix, which is text on both sides
        assert s_starts[j] == t_starts[i] is not None
        assert byte_bpe.decode(ids[:j]) == sp_bpe.decode(row.teacher_ids[:i]) == text[:s_starts[j]]
    assert row.pairs[0] == (0, 0) and row.pairs[-1] == (len(ids) - 1, len(row.teacher_ids) - 1)  # the EOS pair
    for s0, s1, t0, t1 in row.spans:  # spans tile both sides and cover the same characters
        assert byte_bpe.decode(ids[s0:s1]) == sp_bpe.decode(row.teacher_ids[t0:t1]) or s1 == len(ids)
    assert [s[0] for s in row.spans[1:]] == [s[1] for s in row.spans[:-1]] and row.spans[-1][1] == len(ids)
    assert [s[2] for s in row.spans[1:]] == [s[3] for s in row.spans[:-1]] and row.spans[-1][3] == len(row.teacher_ids)
    # inside a character no pair: the teacher writes the CJK characters as bytes, so no position inside them pairs
    cjk = text.index("\u65e5")
    assert all(not (cjk < s_starts[j] < len(text)) or s_starts[j] == cjk + 1 for j, _ in row.pairs)
    assert bridge.align(ids) is row  # cached by ids


def test_one_tokenizer_pairs_every_position_with_itself(byte_bpe):
    bridge = TokenizerBridge(byte_bpe, byte_bpe)
    text = "caf\u00e9 \u65e5 model"
    ids = byte_bpe(text, add_special_tokens=False)["input_ids"] + [byte_bpe.eos_token_id]
    row = bridge.align(ids)
    assert row.teacher_ids == ids and bridge.identical
    ends = prefix_ends(byte_bpe, ids[:-1], text)
    expected = [(j, j) for j, start in enumerate(token_starts(ends, True)) if start is not None]
    assert list(row.pairs) == expected and len(expected) < len(ids)  # the byte pieces of the split characters excepted


def test_chat_templates_stay_out_of_the_alignment(byte_bpe, sp_bpe):
    """Only the completion is aligned: each model renders its own prompt and template around it."""
    bridge = TokenizerBridge(byte_bpe, sp_bpe)
    ids = byte_bpe("the model", add_special_tokens=False)["input_ids"] + [byte_bpe.eos_token_id]
    row = bridge.align(ids)
    assert sp_bpe.convert_ids_to_tokens(row.teacher_ids) == ["the", "\u2581model", "</s>"]
    assert byte_bpe.bos_token_id not in row.teacher_ids and sp_bpe.bos_token_id not in row.teacher_ids


def test_a_completion_without_eos_and_an_empty_one(byte_bpe, sp_bpe):
    bridge = TokenizerBridge(byte_bpe, sp_bpe)
    ids = byte_bpe("the model", add_special_tokens=False)["input_ids"]
    row = bridge.align(ids)  # cut by max_new_tokens: no EOS on either side
    assert sp_bpe.eos_token_id not in row.teacher_ids and row.pairs[-1][0] < len(ids)
    empty = bridge.align([byte_bpe.eos_token_id])
    assert empty.teacher_ids == [sp_bpe.eos_token_id] and empty.pairs == ((0, 0),) and empty.spans == ((0, 1, 0, 1),)


# ------------------------------------------------------------------ shared tokens

def test_byte_level_alphabet_is_a_bijection_of_the_bytes():
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["\u0120"] == ord(" ") and alphabet["\u010a"] == ord("\n") and alphabet["a"] == ord("a")


def test_token_bytes_undo_each_marking():
    assert token_bytes("\u0120the", "byte_level") == b" the"
    assert token_bytes("\u2581the", "metaspace") == b" the"
    assert token_bytes("<0xE6>", "metaspace") == b"\xe6"
    assert token_bytes("\u00c3\u00a9", "byte_level") == "\u00e9".encode()  # é as its two bytes


def test_shared_tokens_across_marking_styles(byte_bpe, sp_bpe):
    assert marking_style(byte_bpe) == "byte_level" and marking_style(sp_bpe) == "metaspace"
    s_ids, t_ids = shared_tokens(byte_bpe, sp_bpe)
    assert len(set(s_ids)) == len(s_ids) == len(t_ids) == len(set(t_ids))
    pairs = dict(zip(s_ids, t_ids))
    s_tok, t_tok = byte_bpe.convert_ids_to_tokens, sp_bpe.convert_ids_to_tokens
    assert pairs[byte_bpe.eos_token_id] == sp_bpe.eos_token_id
    assert byte_bpe.pad_token_id not in pairs  # special tokens other than EOS are not text
    space_s = byte_bpe.convert_tokens_to_ids("\u0120")
    assert t_tok(pairs[space_s]) == "\u2581"
    model_s = byte_bpe.convert_tokens_to_ids("\u0120model")
    assert t_tok(pairs[model_s]) == "\u2581model"
    for s, t in pairs.items():  # every pair stands for the same bytes
        if s != byte_bpe.eos_token_id:
            assert token_bytes(s_tok(s), "byte_level") == token_bytes(t_tok(t), "metaspace")
    # "a" exists in the SentencePiece vocabulary as a token and as the byte <0x61>: the regular token is kept
    assert t_tok(pairs[byte_bpe.convert_tokens_to_ids("a")]) == "a"


def test_one_vocabulary_shares_every_id(byte_bpe):
    s_ids, t_ids = shared_tokens(byte_bpe, byte_bpe)
    assert s_ids == t_ids == list(range(len(byte_bpe)))
