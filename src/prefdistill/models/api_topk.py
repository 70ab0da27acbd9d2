"""Top-k log-probs from an OpenAI-compatible server, read into the student's token ids (pure helpers).

    pieces = piece_ids(student_tokenizer)                          # token text -> id, built once per tokenizer
    text, spans = completion_pieces(student_tokenizer, ids)        # what to send, and where each token lies in it
    ids_k, logps_k = echoed_topk(reply, len(head), (text, spans), pieces, k, vocab, row="row 0")   # (n, k) each
    ids_k, logps_k, token_logps = echoed_topk(..., token_logps=True)   # and log p of each of the n tokens itself (n,)
    text, tokens = generated_topk(reply, "completions")            # a sample and its top-k, token by token

A server names tokens by their text, not by id. `echoed_topk` first checks that the server's
echoed tokens over the completion's characters are the student's tokens one for one (same
character offset, same text), then maps each `top_logprobs` entry to the student's id whose
`tokenizer.decode([id])` is that text. Text that several ids decode to (byte-fallback pieces
of a split character, say) is ambiguous and dropped, like text no id decodes to: the
probability of a dropped entry stays in the 'rest' bucket of the coarsened KL
(`prefdistill.losses.topk_forward_kl`), which then only gets coarser.
"""
from __future__ import annotations

import functools

import numpy as np

from prefdistill.api_client import MalformedReply
from prefdistill.models.common import topk_arrays


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


def echoed_topk(reply: dict, start: int, completion: tuple[str, list[tuple[int, str]]], pieces: dict[str, int], k: int,
                vocab: int, *, row: str, token_logps: bool = False) -> tuple[np.ndarray, ...]:
    """ids (n, k) and log-probs (n, k) at the n student tokens of `completion`, from an echo reply.

    completion: (text, spans) from `completion_pieces`; its text begins at character `start`
    of the text the server echoed. The server's tokens that reach into the completion (and
    begin before its end, so not the generated one) must be the student's, by offset and
    text, else a ValueError names `row` and the first token that differs. top_logprobs[t] is
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
            raise ValueError(f"{row}: the server's tokens of the completion do not line up with the student's at completion "
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
