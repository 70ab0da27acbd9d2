"""A served teacher of another tokenizer (signal: served): its top-k read onto the student's positions by character offset.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/signal/test_served_across_tokenizers.py

What each test pins:
- one tokenizer: reading by offset (vocabulary: aligned) gives what the strict reading gives (ids, log-probs, the
  tokens' own log-probs, EOS included), and KD, GKD and MiniLLM train on it to the same loss and gradients;
- a hand-worked reply of a server that splits the text otherwise: which student positions pair, which entries map
  (and which stay in the rest), span log-probs summed over the server's tokens, a server token straddling the
  prompt, the EOS read from the generated token's top-k;
- the pairs are the ones `TokenizerBridge` makes for two local tokenizers;
- KD, GKD and MiniLLM distil from a served byte-level BPE teacher of a word-level student: finite, non-zero
  gradients, the unpaired positions counted; vocabulary: shared fails those rows, auto reads them by offset.
"""
import math

import numpy as np
import pytest
import torch

from prefdistill.config.schema import ModelConfig, from_dict
from prefdistill.methods import get_method
from prefdistill.models.alignment import TokenizerBridge
from prefdistill.models.api_aligned import aligned_completion, aligned_echoed_topk
from prefdistill.models.api_topk import piece_ids
from prefdistill.models.common import TopkFailure
from prefdistill.models.hf import LocalLM
from prefdistill.models.tiny import tiny_rows
from prefdistill.testing.tokenizers import byte_level_bpe, tiny_causal_lm
from servers import LogitServer, api_lm


def _rows(n: int = 3, method: str = "gkd") -> list[dict]:
    if method == "kd":  # trains on targets, the others on pairs
        return [{"prompt": f"Summarize : {r['document']}", "target": r["summary"]} for r in tiny_rows(n, seed=5)]
    return [{"id": f"{i}#0", "prompt": f"Summarize : {r['document']}", "chosen": r["summary"],
             "rejected": " ".join(r["document"].split()[:3])} for i, r in enumerate(tiny_rows(n, seed=5))]


def _ids(tok, texts: list[str], eos: list[bool]) -> list[list[int]]:
    return [tok(t, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else []) for t, e in zip(texts, eos)]


# ----------------------------------------------------------------------------- one tokenizer: exact
def test_one_tokenizer_read_by_offset_is_the_strict_reading(counting):
    tok, vocab = counting.tokenizer, len(counting.tokenizer)
    rows = _rows(3)
    ids = _ids(tok, [r["chosen"] for r in rows], [True, False, True])
    with LogitServer(counting) as server:
        teacher = api_lm(server.url)
        strict = teacher.completion_topk([r["prompt"] for r in rows], ids, vocab, tokenizer=tok, token_logps=True)
        offset = teacher.completion_topk([r["prompt"] for r in rows], ids, vocab, tokenizer=tok, token_logps=True, aligned=True)
    for (s_ids, s_lp, s_own), (a_ids, a_lp, a_span, spans), row in zip(strict, offset, ids):
        assert spans == tuple((j, j + 1) for j in range(len(row)))  # every token its own span, the EOS too
        np.testing.assert_array_equal(a_ids, s_ids)
        np.testing.assert_allclose(a_lp, s_lp, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a_span, s_own, rtol=0, atol=1e-5)


CASES = {"kd": {"temperature": 1.0, "ce_weight": 0.5},
         "gkd": {"beta": 0.3, "on_policy_fraction": 1.0, "max_new_tokens": 5},
         "minillm": {"mix_weight": 0.0, "max_new_tokens": 5}}


def _loss_and_grads(method, lm, rows, raw, teacher):
    spec = get_method(method)
    params = from_dict(spec.params_cls, raw)
    lm.model.zero_grad()
    torch.manual_seed(0)  # the same coin and the same samples on both readings
    loss, stats = spec.loss(lm, rows, params, served_teacher=teacher)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}, stats


@pytest.mark.parametrize("method", sorted(CASES))
def test_one_tokenizer_trains_alike_read_by_offset(method, counting, student):
    rows, vocab = _rows(3, method), len(student.tokenizer)
    base = {**CASES[method], "signal": "served", "k": vocab}
    with LogitServer(counting) as server:
        teacher = api_lm(server.url, max_concurrency=2)
        want = _loss_and_grads(method, student, rows, {**base, "vocabulary": "shared"}, teacher)
        got = _loss_and_grads(method, student, rows, {**base, "vocabulary": "aligned"}, teacher)
    assert want[1] and any(g.abs().sum() > 0 for g in want[1].values())
    assert got[2]["tokens_aligned"] == got[2]["tokens_completion"] > 0  # every position pairs with itself
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    for n, g in want[1].items():
        torch.testing.assert_close(got[1][n], g, atol=1e-6, rtol=1e-4, msg=lambda m: f"{method}, {n}: {m}")
    if method == "minillm":
        assert got[2]["mean_reward"] == pytest.approx(want[2]["mean_reward"], rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- a hand-worked reply
@pytest.fixture(scope="module")
def bpe():
    texts = [r["document"] for r in tiny_rows(60)] + ["Summarize :"] + [" the cat sat", " the cat", " sat", " cat"] * 30
    return byte_level_bpe(texts, vocab_size=400)


def _reply(head: str, pieces: list[tuple[str, float, dict]], generated: tuple[str, dict]) -> dict:
    """An echo reply: the head as one token, then (text, own log-prob, top-k) per server token, then a generated token."""
    tokens, offsets, own, tops, at = [head], [0], [None], [None], len(head)
    for text, lp, top in pieces:
        tokens.append(text), offsets.append(at), own.append(lp), tops.append(top)
        at += len(text)
    tokens.append(generated[0]), offsets.append(at), own.append(-0.1), tops.append(generated[1])
    return {"choices": [{"text": head + "".join(p for p, _, _ in pieces) + generated[0],
                         "logprobs": {"tokens": tokens, "text_offset": offsets, "token_logprobs": own, "top_logprobs": tops}}]}


def test_a_server_that_splits_otherwise_pairs_by_offset(bpe):
    """The student (byte-level BPE) writes ' the cat sat' + EOS; the server splits ' the cat' as ' the c' + 'at', so
    the student's ' cat' starts where no server token does; ' sat' starts where 'at' ends: paired again."""
    ids = bpe(" the cat sat", add_special_tokens=False)["input_ids"]
    assert bpe.batch_decode([[i] for i in ids]) == [" the", " cat", " sat"], "the tokenizer's split this test assumes"
    completion = aligned_completion(bpe, ids + [bpe.eos_token_id])
    assert completion.text == " the cat sat" and completion.starts == [0, 4, 8, 12] and completion.eos == "</s>"
    head = "Summarize :\n"
    reply = _reply(head, [(" the c", -1.0, {" the": -0.5, " the c": -1.0, "ZZ": -2.0}),
                          ("at", -0.25, {"at": -0.25, " cat": -3.0}),
                          (" sat", -0.5, {" sat": -0.5, " cat": -1.5})],
                   ("\n", {"</s>": -0.2, "\n": -2.0}))
    pieces, vocab = piece_ids(bpe), len(bpe)
    t_ids, t_lp, span_lp, spans = aligned_echoed_topk(reply, len(head), completion, pieces, 3, vocab, row="r", token_logps=True)
    # Position 0 reads ' the c''s distribution: ' the' maps, ' the c' and 'ZZ' are no student token (rest).
    assert t_ids[0, 0] == pieces[" the"] and t_lp[0, 0] == -0.5 and np.isneginf(t_lp[0, 1:]).all()
    assert np.isneginf(t_lp[1]).all()  # ' cat' starts inside ' the c': no teacher distribution there
    assert t_ids[2, 0] == pieces[" sat"] and t_ids[2, 1] == pieces[" cat"] and list(t_lp[2, :2]) == [-0.5, -1.5]
    assert t_ids[3, 0] == bpe.eos_token_id and t_lp[3, 0] == pytest.approx(-0.2)  # the EOS reads the generated token's
    assert spans == ((0, 2), (2, 3), (3, 4))  # ' the cat' = ' the c' + 'at'; ' sat'; the EOS
    np.testing.assert_allclose(span_lp, [0.0, -1.25, -0.5, -0.2])


def test_a_token_straddling_the_prompt_gives_no_span_and_no_pair(bpe):
    ids = bpe(" the cat sat", add_special_tokens=False)["input_ids"]
    completion = aligned_completion(bpe, ids)
    head = "Summarize :"
    # The server's second token holds the prompt's last character and the completion's first word.
    reply = {"choices": [{"text": head + " the cat sat?", "logprobs": {
        "tokens": ["Summarize", ": the", " cat", " sat", "?"], "text_offset": [0, 10, 15, 19, 23],
        "token_logprobs": [None, -1.0, -0.5, -0.25, -0.1],
        "top_logprobs": [None, {": the": -1.0}, {" cat": -0.5}, {" sat": -0.25}, {"?": -0.1}]}}]}
    t_ids, t_lp, span_lp, spans = aligned_echoed_topk(reply, len(head), completion, piece_ids(bpe), 1, len(bpe), row="r",
                                                      token_logps=True)
    assert np.isneginf(t_lp[0]).all() and t_ids[1, 0] == piece_ids(bpe)[" cat"] and t_ids[2, 0] == piece_ids(bpe)[" sat"]
    assert spans == ((2, 3),) and span_lp.tolist() == [0.0, 0.0, -0.25]  # ' the cat' shares ': the' with the prompt


class _Spelled(dict):
    """Every text a student id (which one does not matter here): what the server's distributions map to is not tested."""
    def __contains__(self, text):
        return True

    def __getitem__(self, text):
        return 4 + sum(text.encode()) % 100


def test_offset_pairs_are_the_bridges_pairs(bpe, tmp_path):
    """A LogitServer of a byte-level BPE teacher and a SentencePiece-style student: the student positions given a teacher
    distribution are exactly those `TokenizerBridge` pairs for the two local tokenizers (a multi-byte character too)."""
    from prefdistill.testing.tokenizers import metaspace_bpe

    student_tok = metaspace_bpe([r["document"] for r in tiny_rows(60)] + ["Summarize :"], vocab_size=200)
    teacher = LocalLM.load(ModelConfig(name_or_path=str(tiny_causal_lm(tmp_path / "t", bpe))))
    rows = _rows(4)
    prompts = [r["prompt"] for r in rows] + [rows[0]["prompt"]]
    ids = _ids(student_tok, [r["chosen"] for r in rows] + [rows[3]["rejected"] + " café"], [True, True, False, True, True])
    bridge = TokenizerBridge(student_tok, bpe)
    with LogitServer(teacher) as server:
        lm = api_lm(server.url)
        unpaired = 0
        for prompt, row in zip(prompts, ids):
            completion = aligned_completion(student_tok, row)
            reply, start, _ = lm._echo(prompt, completion.text, 3)
            _, t_lp = aligned_echoed_topk(reply, start, completion, _Spelled(), 3, 200, row="r")
            paired = {j for j, _ in bridge.align(row).pairs}
            assert paired and {j for j in range(len(row)) if np.isfinite(t_lp[j]).any()} == paired
            unpaired += len(row) - len(paired)
    assert unpaired > 0  # the two tokenizers do split some text otherwise


# ----------------------------------------------------------------------------- training across tokenizers
@pytest.fixture(scope="module")
def bpe_teacher(bpe, tmp_path_factory):
    return LocalLM.load(ModelConfig(name_or_path=str(tiny_causal_lm(tmp_path_factory.mktemp("bpe_served"), bpe))))


@pytest.mark.parametrize("method", sorted(CASES))
def test_token_level_methods_distil_from_a_served_teacher_of_another_tokenizer(method, bpe_teacher, student):
    rows = _rows(3, method)
    raw = {**CASES[method], "signal": "served", "k": 10}
    with LogitServer(bpe_teacher) as server:
        teacher = api_lm(server.url, max_concurrency=2)
        teacher._can_score = True  # an untrained teacher: the probe would refuse it
        loss, grads, stats = _loss_and_grads(method, student, rows, raw, teacher)  # vocabulary: auto
        strict = _loss_and_grads(method, student, rows, {**raw, "vocabulary": "shared"}, teacher)[2]
    assert math.isfinite(float(loss)) and grads and any(g.abs().sum() > 0 for g in grads.values())
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert 0 < stats["tokens_aligned"] < stats["tokens_completion"] and stats["count_signal_failed_rows"] == 0
    assert strict["count_signal_failed_rows"] == 3  # shared: the rows whose tokens differ fail (the run records them)


def test_a_failed_strict_row_names_the_choice(bpe_teacher, student):
    rows = _rows(1)
    ids = _ids(student.tokenizer, [rows[0]["chosen"]], [True])
    with LogitServer(bpe_teacher) as server:
        teacher = api_lm(server.url)
        teacher._can_score = True
        (row,) = teacher.completion_topk([rows[0]["prompt"]], ids, 5, tokenizer=student.tokenizer)
    assert isinstance(row, TopkFailure) and "vocabulary: auto" in row.reason
