"""Where the teacher's top-k comes from: a server's echoed top_logprobs, its generated tokens' top-k, and padding.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/signal/test_topk_sources.py

A stand-in server (`servers.LogitServer`) serves a tiny model's own log-probs; it is the tiny
teacher with the probe's words added to its word-level vocabulary and trained for a moment to
count, as any real language model can, so that right log-probs pass the correctness probe and
shifted ones fail it (conftest's `counting`). The real llama.cpp server (`llama_server`) is tested at the end.
"""
import math
import re

import numpy as np
import pytest
import torch

from prefdistill.config.schema import SamplingConfig
from prefdistill.losses import topk_forward_kl
from prefdistill.models.api import PROBE_COMPLETION, PROBE_GUESS, PROBE_PROMPT, PROBE_TOPK
from prefdistill.models.api_topk import Misaligned, completion_pieces, echoed_topk, piece_ids
from prefdistill.models.common import TopkFailure, topk_arrays
from prefdistill.models.tiny import tiny_rows
from prefdistill.signal.topk_cache import build_topk_cache
from servers import FakeOpenAI, LogitServer, api_lm


def _rows(n: int) -> list[dict]:
    return [{"prompt": f"Summarize : {r['document']}", "target": r["summary"]} for r in tiny_rows(n, seed=5)]


# ----------------------------------------------------------------------------- (a) served = local
def test_a_served_teacher_gives_the_same_cache_as_the_local_model(counting, tmp_path):
    k = 6
    local_rows, served_rows = _rows(5), _rows(5)
    local = build_topk_cache(counting, local_rows, k, tmp_path / "local.bin", tokenizer=counting.tokenizer, teacher_id="t")
    with LogitServer(counting) as server:
        lm = api_lm(server.url, max_concurrency=2)
        served = build_topk_cache(lm, served_rows, k, tmp_path / "served.bin", tokenizer=counting.tokenizer,
                                  teacher_id="t", batch_size=2)
    assert served.stats["computed"] == 5
    counting, guess, *asked = server.payloads  # the probe's two echoes, before any top-k request
    assert counting["prompt"].endswith(PROBE_COMPLETION) and guess["prompt"].endswith(PROBE_GUESS)
    assert counting["logprobs"] == guess["logprobs"] == PROBE_TOPK and counting["temperature"] == 1.0
    assert len(asked) == 5 and all(p["echo"] and p["logprobs"] == k and p["max_tokens"] == 1 for p in asked)
    ids_l, logps_l, mask_l = local.rows()
    ids_s, logps_s, mask_s = served.rows()
    assert torch.equal(mask_l, mask_s)
    on = mask_l.bool()
    assert torch.equal(ids_s[on], ids_l[on])
    assert torch.allclose(logps_s[on], logps_l[on], rtol=2 ** -9, atol=1e-4)  # both float16: equal up to one rounding
    assert torch.isfinite(logps_s[on]).all()  # every id the server named is one of the student's


# ----------------------------------------------------------------------------- (b) the probe
def test_a_shifted_echo_is_refused_by_the_probe_with_its_reason(counting):
    ids = counting.tokenizer("the model learns </s>")["input_ids"]
    with LogitServer(counting, shift_echo=True) as server:
        lm = api_lm(server.url)
        with pytest.raises(ValueError) as err:
            lm.completion_topk(["Summarize : the data"], [ids], 4, tokenizer=counting.tokenizer, temperature=1.0)
        asked = len(server.payloads)
        usable = lm.generated_topk_usable  # the same server's generated top-k is right
    message = str(err.value)
    assert "sanity check" in message and "shifts echoed log-probs" in message  # the probe's reason
    assert "generate_topk" in message and "backend: hf" in message and "vLLM" in message
    assert asked == 1  # the probe only: no top-k request was sent
    assert usable and lm.generated_topk_unavailable is None


def test_echoes_are_scored_at_temperature_1_so_a_server_that_scales_by_it_gives_the_models_distribution(counting):
    """A provider whose log-probs follow the request's temperature returns near one-hot top-k at temperature 0."""
    tok, prompt = counting.tokenizer, "Summarize : the data"
    ids = tok("the model learns </s>")["input_ids"]
    with LogitServer(counting, logprob_temperature="request") as server:
        ((got_ids, got_logps),) = api_lm(server.url).completion_topk([prompt], [ids], 4, tokenizer=tok, temperature=1.0)
    logits, _, _ = counting.completion_logits([prompt], [ids])  # (1, C, V)
    want_logps, want_ids = torch.log_softmax(logits[0].float(), -1).topk(4)
    assert np.allclose(got_logps, want_logps.numpy(), atol=1e-4) and got_ids.tolist() == want_ids.tolist()
    assert {p["temperature"] for p in server.payloads} == {1.0}  # the probe's requests too


def test_a_server_whose_topk_is_one_hot_where_a_model_is_uncertain_is_refused_with_the_reason(counting):
    ids = counting.tokenizer("the model learns </s>")["input_ids"]
    with LogitServer(counting, logprob_temperature=0.0) as server:  # greedy log-probs, whatever the request asks
        lm = api_lm(server.url)
        with pytest.raises(ValueError) as err:
            lm.completion_topk(["Summarize : the data"], [ids], 4, tokenizer=counting.tokenizer, temperature=1.0)
        asked = len(server.payloads)
    assert "near one-hot" in str(err.value) and "Pick a colour at random" in str(err.value)
    assert not lm.can_score and "near one-hot" in lm.score_unavailable  # scoring (DPKD) is refused as well
    assert asked == 2  # the probe's two requests: no top-k request was sent


def _reorder(lp):  # each list least likely first
    lp["top_logprobs"] = [top and dict(sorted(top.items(), key=lambda e: e[1])) for top in lp["top_logprobs"]]


def _double(lp):  # the most likely entry twice, under two texts: the list's probabilities sum to nearly 2
    lp["top_logprobs"] = [top and {**dict([max(top.items(), key=lambda e: e[1])]), "\u2060": max(top.values()), **top}
                          for top in lp["top_logprobs"]]


def _shift_own(lp):  # each token's own log-prob half a nat below its entry in the list
    lp["token_logprobs"] = [v if v is None else v - 0.5 for v in lp["token_logprobs"]]


@pytest.mark.parametrize("tamper, reason", [(_reorder, "not sorted"), (_double, "sum to"), (_shift_own, "its own log-prob")],
                         ids=["unsorted", "over_one", "own_logprob"])
def test_topk_lists_a_server_gets_wrong_are_refused_with_the_reason(counting, tamper, reason):
    ids = counting.tokenizer("the model learns </s>")["input_ids"]
    with LogitServer(counting, tamper=tamper) as server:
        lm = api_lm(server.url)
        with pytest.raises(ValueError, match="echoed top-k lists fail a sanity check") as err:
            lm.completion_topk(["Summarize : the data"], [ids], 4, tokenizer=counting.tokenizer, temperature=1.0)
    assert reason in str(err.value)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_generated_topk_and_its_probe(counting, endpoint):
    sampling = SamplingConfig(max_new_tokens=4, do_sample=False, num_samples=2)
    with LogitServer(counting) as right, LogitServer(counting, shift_generated=True) as shifted:
        lm = api_lm(right.url, endpoint)
        (samples,) = lm.generate_topk([PROBE_PROMPT], sampling, 3, seed=0, desc="")
        assert lm.generated_topk_usable
        bad = api_lm(shifted.url, endpoint)
        assert not bad.generated_topk_usable
    assert len(samples) == 2 and samples[0] == samples[1]  # greedy: the same sample twice
    text, tokens = samples[0]
    assert text.split() == [t for t, _ in tokens] == PROBE_COMPLETION.split()[:4]  # the model counts on
    assert all(len(top) >= 3 and max(top.values()) == top[t] for t, top in tokens)
    body = right.payloads[0]
    asked = (body["logprobs"], body["top_logprobs"]) if endpoint == "chat" else body["logprobs"]
    assert asked == ((True, 3) if endpoint == "chat" else 3)
    assert "not the most likely" in bad.generated_topk_unavailable


# ----------------------------------------------------------------------------- (d) misalignment, (e) temperature
def test_tokens_that_do_not_line_up_fail_their_row_naming_it(counting):
    # FakeOpenAI's tokens carry the whitespace before them: its first completion token is "\nthe", which begins
    # inside the prompt, where the student's begins the completion. The row is a TopkFailure (its caller records it
    # and leaves it out: tests/signal/test_signal_failures.py), not an error that stops the run.
    tok = counting.tokenizer
    completions = [tok("the model </s>")["input_ids"], tok("data </s>")["input_ids"]]
    with FakeOpenAI() as server:
        lm = api_lm(server.url)
        out = lm.completion_topk(["Summarize : first", "Summarize : second"], completions, 2, tokenizer=tok, temperature=1.0)
    assert all(isinstance(row, TopkFailure) for row in out)
    assert re.match(r"row 0 \('Summarize : first'\.\.\.\).*completion token 0: the student has 'the' at character 0, "
                    r"the server '\\nthe' at character -1", out[0].reason)
    # The same check further in: the server splits "model" where the student has one token.
    head, text = "p\n", "the model"
    reply = {"choices": [{"logprobs": {"tokens": ["p", "\n", "the", " mod", "el"], "text_offset": [0, 1, 2, 5, 9],
                                       "top_logprobs": [None, {}, {}, {}, {}]}}]}
    spans = [(0, "the"), (4, "model")]
    with pytest.raises(Misaligned, match=r"row 7: .* at completion token 1: the student has 'model' at character 4, "
                                         r"the server ' mod' at character 3"):
        echoed_topk(reply, len(head), (text, spans), {"the": 0, "model": 1}, 2, 3, row="row 7")


def test_temperature_other_than_one_is_refused_before_any_request():
    with FakeOpenAI() as server:
        lm = api_lm(server.url)
        with pytest.raises(ValueError, match="temperature 2 needs a local"):
            lm.completion_topk(["p"], [[1]], 2, tokenizer=None, temperature=2.0)
        assert server.headers_seen == []


# ----------------------------------------------------------------------------- mapping and (f) padding
def test_pieces_map_unambiguous_text_and_unknown_or_ambiguous_entries_become_padding(counting):
    tok = counting.tokenizer
    pieces = piece_ids(tok)
    assert pieces["model"] == tok.convert_tokens_to_ids("model") and len(pieces) == len(tok)
    ids = tok("the model </s>")["input_ids"]
    text, spans = completion_pieces(tok, ids)
    assert text == "the model </s>" and spans == [(0, "the"), (4, "model"), (10, "</s>")]
    head = "Summarize : x\n"
    tokens = ["Summarize", ":", "x", "the", "model", "</s>", "the"]
    offsets = [0, 10, 12, len(head), len(head) + 4, len(head) + 10, len(head) + 15]  # the last was generated
    tops = [None, {}, {}, {"the": -0.1, "zzz": -2.0, "model": -3.0}, {"model": -0.5}, {"</s>": -0.2, "the": -1.7}, {}]
    reply = {"choices": [{"logprobs": {"tokens": tokens, "text_offset": offsets, "top_logprobs": tops}}]}
    got_ids, got_logps = echoed_topk(reply, len(head), (text, spans), pieces, 3, len(tok), row="row 0")
    the, model, eos = (pieces[p] for p in ("the", "model", "</s>"))
    assert got_ids.tolist() == [[the, model, 0], [model, 0, 0], [eos, the, 0]]  # "zzz" is no token of the student's
    assert np.allclose(got_logps[:, 0], [-0.1, -0.5, -0.2]) and np.isneginf(got_logps[1, 1:]).all()
    ids_k, logps_k = topk_arrays([{5: -0.1, 40: -0.2}, {}], 3, vocab=32)  # 40 lies past the student's vocabulary
    assert ids_k.tolist() == [[5, 0, 0], [0, 0, 0]] and np.isneginf(logps_k[0, 1:]).all() and np.isneginf(logps_k[1]).all()


def test_padded_slots_give_finite_losses_and_gradients_and_change_nothing(counting, tmp_path):
    torch.manual_seed(0)
    s = torch.randn(2, 3, 7, requires_grad=True)
    ids = torch.tensor([[[3, 5]] * 3] * 2)
    logps = torch.log(torch.tensor([[[0.5, 0.2]] * 3] * 2))
    # The same two ids followed by padding (id 0, -inf), and positions where nothing could be mapped at all.
    pad_ids = torch.cat([ids, torch.zeros(2, 3, 2, dtype=torch.long)], -1)
    pad_logps = torch.cat([logps, torch.full((2, 3, 2), float("-inf"))], -1)
    empty_ids, empty_logps = torch.zeros(2, 3, 4, dtype=torch.long), torch.full((2, 3, 4), float("-inf"))
    want = topk_forward_kl(s, ids, logps)
    got = topk_forward_kl(s, pad_ids, pad_logps)
    empty = topk_forward_kl(s, empty_ids, empty_logps)
    (g_want,) = torch.autograd.grad(want.sum(), s)
    (g_got,) = torch.autograd.grad(got.sum(), s)
    (g_empty,) = torch.autograd.grad(empty.sum(), s)
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(g_got, g_want, atol=1e-6)  # padding is no outcome
    assert torch.equal(empty, torch.zeros(2, 3)) and torch.isfinite(g_empty).all()  # one bucket: nothing to learn
    # Through the cache: a served teacher's padded rows round-trip and train with finite values.
    class Served:
        name = "served"

        def completion_topk(self, prompts, completions, k, *, tokenizer, temperature):
            return [topk_arrays([{3: -0.7, 5: -1.6}] * len(c), k, len(tokenizer)) for c in completions]

    rows = [{"prompt": "Summarize : the data", "target": "the model"}, {"prompt": "Summarize : a task", "target": "data"}]
    c_ids, c_logps, mask = build_topk_cache(Served(), rows, 4, tmp_path / "c.bin", tokenizer=counting.tokenizer,
                                            teacher_id="served").rows()
    assert c_ids.shape == (2, 3, 4) and mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert np.isneginf(c_logps[mask.bool()][:, 2:].numpy()).all()
    logits = torch.randn(2, 3, len(counting.tokenizer), requires_grad=True)
    kl = topk_forward_kl(logits, c_ids, c_logps)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(logits.grad).all() and not math.isnan(kl.sum().item())


# ----------------------------------------------------------------------------- (c) the real llama.cpp server
@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_real_llama_server_echo_is_refused_while_its_generated_topk_is_usable(llama_server, endpoint):
    """llama-cpp-python 0.3.36 reports echoed tokens under the next position's distribution (SmolLM2 has no BOS),
    but scores generated tokens at their own positions: the echo is refused, the generated top-k passes."""
    lm = api_lm(llama_server.url, endpoint)
    with pytest.raises(ValueError, match="sanity check.*generate_topk") as err:
        lm.completion_topk([PROBE_PROMPT], [[1, 2, 3]], 4, tokenizer=None, temperature=1.0)  # refused before any decoding
    assert "shifts echoed log-probs" in str(err.value)
    assert lm.generated_topk_usable, lm.generated_topk_unavailable
    (samples,) = lm.generate_topk(["Name three colours."], SamplingConfig(max_new_tokens=6, num_samples=1), 4, seed=0, desc="")
    text, tokens = samples[0]
    assert text.strip() and tokens and all(t in top for t, top in tokens)
    assert max(len(top) for _, top in tokens) >= 4
