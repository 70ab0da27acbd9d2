"""Top-k log-probs from an OpenAI-compatible server, read into the student's token ids (pure helpers).

    pieces = piece_ids(student_tokenizer)                          # token text -> id, built once per tokenizer
    text, spans = completion_pieces(student_tokenizer, ids)        # what to send, and where each token lies in it
    ids_k, logps_k = echoed_topk(reply, len(head), (text, spans), pieces, k, vocab, row="row 0")   # (n, k) each
    ids_k, logps_k, token_logps = echoed_topk(..., token_logps=True)   # and log p of each of the n tokens itself (n,)
    text, tokens = generated_topk(reply, "completions")            # a sample and its top-k, token by token
    why = echo_probe_fault(reply, start, end, guess=False)        # None when a probe reply is right

A server names tokens by their text, not by id. `echoed_topk` first checks that the server's
echoed tokens over the completion's characters are the student's tokens one for one (same
character offset, same text), then maps each `top_logprobs` entry to the student's id whose
`tokenizer.decode([id])` is that text; tokens that differ raise `Misaligned` (the caller fails
that row: `prefdistill.signal.topk_cache`, `prefdistill.signal.served`). Text that several ids decode to (byte-fallback pieces
of a split character, say) is ambiguous and dropped, like text no id decodes to: the
probability of a dropped entry stays in the 'rest' bucket of the coarsened KL
(`prefdistill.losses.topk_forward_kl`), which then only gets coarser.

Echoes are scored at temperature 1 (`ECHO_TEMPERATURE`): with max_tokens 1 the sampled token
is thrown away, and a provider whose log-probs follow the request's temperature would give
near one-hot top-k at temperature 0. `echo_probe_fault` judges the correctness probe's replies:
an obvious continuation (counting) must score near certainty, every top-k list must be sorted,
hold at most probability 1 and agree with the scored token's own log-prob, and on a text where
any model is unsure (a colour picked at random) the top-k must not be near one-hot.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from prefdistill.models.api_client import MalformedReply
from prefdistill.models.common import topk_arrays

ECHO_TEMPERATURE = 1.0  # every echo request: the model's own distribution, whether or not the server tempers log-probs
PROBE_PROMPT, PROBE_COMPLETION = "Count: 1, 2, 3, 4,", " 5, 6, 7, 8, 9, 10, 11, 12"
PROBE_GUESS_PROMPT, PROBE_GUESS = "Pick a colour at random:", " blue"  # a model is unsure of the colour it is asked for
PROBE_MIN_MEAN_LOGP = -3.0  # nats per token; SmolLM2-135M and Gemma-3-270M score the probe at about −0.4
PROBE_MAX_TOP1 = 0.9  # most likely entry's probability at the guess; SmolLM2-135M gives under 0.5 after "...random:\n"
PROBE_TOPK = 5  # top log-probs asked per probe token (generated_topk_usable: also the tokens it generates, greedily)
PROBE_TOLERANCE = 1e-3  # what rounding a server may do (float32 log-probs, JSON): nats, and probability mass over 1


class Misaligned(ValueError):
    """A row whose tokens the server splits otherwise than the student (a non-canonical split, a character in byte tokens)."""


@functools.lru_cache(maxsize=4)
def piece_ids(tokenizer) -> dict[str, int]:
    """text -> id for every id of the vocabulary whose `decode([id])` no other id shares (and is not empty)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
    seen: dict[str, int] = {}
    for i, text in enumerate(texts):
        seen[text] = -1 if text in seen else i
    return {text: i for text, i in seen.items() if i >= 0 and text}


def completion_pieces(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, str]]]:
    """(the decoded completion, (character offset, text) of each token in it).

    Token t's text is `decode([ids[t]])`, found at the end of token t - 1 or after whitespace
    there (a word-level tokenizer decodes words joined by spaces that no token holds); a
    token not found so gets offset -1, which no server token has.
    """
    text = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    pieces = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    spans, cursor = [], 0
    for piece in pieces:
        at = cursor
        while at < len(text) and text[at].isspace() and not text.startswith(piece, at):
            at += 1
        if text.startswith(piece, at):
            spans.append((at, piece))
            cursor = at + len(piece)
        else:
            spans.append((-1, piece))
    return text, spans


def echo_lists(reply: dict) -> tuple[list[str], list[int], list, list]:
    """(tokens, text_offset, top_logprobs or Nones, token_logprobs or Nones) of a /v1/completions reply with echo and logprobs."""
    try:
        lp = reply["choices"][0]["logprobs"]
        tokens, offsets = lp["tokens"], lp["text_offset"]
        tops = lp.get("top_logprobs") or [None] * len(tokens)
        own = lp.get("token_logprobs") or [None] * len(tokens)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise MalformedReply("reply has no choices[0].logprobs with tokens and text_offset") from None
    if not (len(tokens) == len(offsets) == len(tops) == len(own)):
        raise MalformedReply("logprobs lists differ in length")
    return tokens, offsets, tops, own


def echoed_tokens(reply: dict, start: int, end: int) -> list[tuple[str, float | None, dict | None]]:
    """(text, own log-prob, top-k dict) of the echoed tokens that reach into text[start:end] (the generated one is left out)."""
    tokens, offsets, tops, own = echo_lists(reply)
    return [(t, lp, top) for t, o, top, lp in zip(tokens, offsets, tops, own) if o < end and o + len(t) > start]


def echo_probe_fault(reply: dict, start: int, end: int, *, guess: bool) -> str | None:
    """Why one probe reply shows wrong log-probs of given text, or None; the probe's completion is text[start:end].

    Every top-k list of the echoed text must be sorted, sum to at most 1 and hold the scored
    token's own log-prob where it lists the token. Then the counting completion (guess false)
    must score at least PROBE_MIN_MEAN_LOGP nats per token, and at the guess (guess true) the
    most likely entry must hold less than PROBE_MAX_TOP1 of the probability.
    """
    echoed = echoed_tokens(reply, 0, end)
    lists = [(t, lp, top) for t, lp, top in echoed if isinstance(top, dict) and top]
    if not lists:
        return f"its echo reply has no top_logprobs (asked for logprobs: {PROBE_TOPK})"
    for token, lp, top in lists:
        fault = _list_fault(token, lp, {str(k): float(v) for k, v in top.items() if v is not None})
        if fault:
            return f"its echoed top-k lists fail a sanity check: at echoed token {token!r}, {fault}"
    completion = echoed_tokens(reply, start, end)
    if guess:
        top1 = min((math.exp(max(top.values())) for _, _, top in completion if isinstance(top, dict) and top), default=1.0)
        return None if top1 < PROBE_MAX_TOP1 else (
            f"its echoed top-k is near one-hot where a model is uncertain: at '{PROBE_GUESS}' after '{PROBE_GUESS_PROMPT}' "
            f"its most likely entry holds {top1:.3f} of the probability, where a model at temperature 1 gives less than "
            f"{PROBE_MAX_TOP1:g} (the server's log-probs follow a sampling temperature below 1, or are greedy)")
    logps = [float(lp) for _, lp, _ in completion if lp is not None]
    mean = sum(logps) / len(logps) if logps else -math.inf
    return None if mean >= PROBE_MIN_MEAN_LOGP else (
        f"its echoed log-probs fail a sanity check: counting '{PROBE_COMPLETION}' after '{PROBE_PROMPT}' got {mean:.1f} "
        f"nats per token, where any model gives more than {PROBE_MIN_MEAN_LOGP:g} (llama-cpp-python 0.3.x shifts echoed "
        "log-probs by one token)")


def _list_fault(token: str, own: float | None, top: dict[str, float]) -> str | None:
    """What is wrong with one position's top-k list, or None."""
    values = list(top.values())
    if any(b > a + PROBE_TOLERANCE for a, b in zip(values, values[1:])):
        return f"the list is not sorted, most likely first: {[round(v, 3) for v in values]}"
    mass = sum(math.exp(v) for v in values)
    if mass > 1 + PROBE_TOLERANCE:
        return f"its probabilities sum to {mass:.3f}, more than 1"
    if own is not None and token in top and abs(top[token] - float(own)) > PROBE_TOLERANCE * max(1.0, abs(float(own))):
        return f"its own log-prob {float(own):.4f} is not its entry {top[token]:.4f} in the list"
    return None


def echoed_topk(reply: dict, start: int, completion: tuple[str, list[tuple[int, str]]], pieces: dict[str, int], k: int,
                vocab: int, *, row: str, token_logps: bool = False) -> tuple[np.ndarray, ...]:
    """ids (n, k) and log-probs (n, k) at the n student tokens of `completion`, from an echo reply.

    completion: (text, spans) from `completion_pieces`; its text begins at character `start`
    of the text the server echoed. The server's tokens that reach into the completion (and
    begin before its end, so not the generated one) must be the student's, by offset and
    text, else `Misaligned` (a ValueError) names `row` and the first token that differs. top_logprobs[t] is
    the distribution that produced token t. With `token_logps`, also each token's own log-prob (n,)
    float32, read from the reply's `token_logprobs` at the same tokens: exact whether or not the
    token is among the top k (a served MiniLLM's per-token reward).
    """
    tokens, offsets, tops, own = echo_lists(reply)
    text, spans = completion
    end = start + len(text)
    kept = [(o - start, t, top, lp) for t, o, top, lp in zip(tokens, offsets, tops, own) if o + len(t) > start and o < end]
    served = [x[:3] for x in kept]
    for t in range(max(len(served), len(spans))):
        mine = spans[t] if t < len(spans) else None
        theirs = served[t][:2] if t < len(served) else None
        if mine != theirs:
            raise Misaligned(f"{row}: the server's tokens of the completion do not line up with the student's at completion "
                             f"token {t}: the student has {_describe(mine, 'student')}, the server "
                             f"{_describe(theirs, 'server')}. Top-k of given text needs a server that tokenises it as the "
                             "student does; a local (backend: hf) or vLLM teacher needs no such match")
    positions = []
    for t, (_, _, top) in enumerate(served):
        if not isinstance(top, dict):
            raise MalformedReply(f"{row}: no top_logprobs for completion token {t}")
        positions.append({pieces[piece]: float(lp) for piece, lp in top.items() if piece in pieces and lp is not None})
    most = max((len(top) for _, _, top in served), default=0)
    if served and most < min(k, vocab):
        raise MalformedReply(f"{row}: the server gave at most {most} top log-probs per token where {k} were asked for "
                             "(servers may cap `logprobs`); lower k")
    if not token_logps:
        return topk_arrays(positions, k, vocab)
    if any(lp is None for *_, lp in kept):
        raise MalformedReply(f"{row}: no token_logprobs for a completion token")
    return (*topk_arrays(positions, k, vocab), np.array([float(lp) for *_, lp in kept], dtype=np.float32))


def _describe(span: tuple[int, str] | None, side: str) -> str:
    if span is None:
        return "no token"
    offset, text = span
    if offset < 0 and side == "student":
        return f"{text!r}, which is not where its decoded text has it"
    return f"{text!r} at character {offset}" + (" (before the completion)" if offset < 0 else "")


def generated_topk(reply: dict, endpoint: str) -> tuple[str, list[tuple[str, dict[str, float]]]]:
    """(text, [(token, {token text: log-prob, ...}) per generated token]) of a sampled reply with top-k log-probs.

    Completions replies hold logprobs.tokens / top_logprobs (a dict per token); chat replies
    logprobs.content[t].top_logprobs (a list of {token, logprob}). A token's own log-prob is
    added to its entry when the server left it out. The text is returned as sent, unstripped.
    """
    try:
        choice = reply["choices"][0]
        if endpoint == "chat":
            text = choice["message"]["content"]
            steps = [(c["token"], c["logprob"], {e["token"]: e["logprob"] for e in c["top_logprobs"]})
                     for c in choice["logprobs"]["content"]]
        else:
            lp = choice["logprobs"]
            text = choice["text"]
            steps = list(zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]))
    except (KeyError, IndexError, TypeError):
        where = "logprobs.content[].top_logprobs" if endpoint == "chat" else "logprobs.tokens / top_logprobs"
        raise MalformedReply(f"reply has no choices[0].{where}: {str(reply)[:200]}") from None
    if not isinstance(text, str) or not steps:
        raise MalformedReply("reply has no generated tokens with log-probs", kind="empty")
    out = []
    for token, logp, top in steps:
        top = {str(t): float(v) for t, v in (top or {}).items() if v is not None}
        if token not in top and logp is not None:
            top[token] = float(logp)
        out.append((token, top))
    return text, out


def top1_misses(tokens: list[tuple[str, dict[str, float]]]) -> list[int]:
    """Positions whose token is not the most likely entry of its own top-k (greedy decoding makes every one so)."""
    return [t for t, (token, top) in enumerate(tokens) if token not in top or top[token] < max(top.values()) - 1e-6]
