"""A server's top-k read onto the student's positions when the server tokenises otherwise (pure helpers).

    completion = aligned_completion(student_tokenizer, ids)      # what to send, and where each student token starts
    ids_k, logps_k = aligned_echoed_topk(reply, len(head), completion, pieces, k, vocab, row="row 0")    # (n, k) each
    ids_k, logps_k, span_logps, spans = aligned_echoed_topk(..., token_logps=True)

The strict reader (`prefdistill.models.api_topk.echoed_topk`) needs the server's echoed tokens
to be the student's one for one. A teacher of another tokenizer splits the same text otherwise,
so here the two are paired by character offsets, as `prefdistill.models.alignment` pairs two
local tokenizers: student token j, which starts at character a_j of the completion, is
predicted from text[:a_j]; the server's token that starts at a_j was predicted from the same
text, so its `top_logprobs` are the teacher's next-token distribution at student position j.
The token the server generates after the echo was predicted from the whole text: it pairs with
the student's EOS. Each top-k entry is a token's text; it maps to the student id whose
`decode([id])` is that text (`piece_ids`), which is what "the tokens both vocabularies share"
means for a server (the strings compared, not ids). An entry no student id spells stays in the
rest bucket of the coarsened divergence. A student position no server token starts at (inside
one of the server's longer tokens, or after a byte piece of a split character) gets no entry:
every slot padded, so it carries no term.

With `token_logps`, the teacher's log-probability of each span (the same characters in both
tokenisations, cut where both sides end a token: `alignment.spans_of`) is the sum of its
server tokens' `token_logprobs`, placed at the span's last student token; a sequence reward
built from spans is then exact (MiniLLM's, `prefdistill.methods.minillm`). The EOS span is the
student's EOS text in the generated token's top-k, where the server lists it (a teacher that
ends text with a token of the same spelling); otherwise the EOS has a KL term but no reward.
With one tokenizer every span is one token and this reads what `echoed_topk` reads.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from prefdistill.models.alignment import prefix_ends, spans_of, token_starts
from prefdistill.models.api_client import MalformedReply
from prefdistill.models.api_topk import echo_lists
from prefdistill.models.common import topk_arrays


class AlignedCompletion(NamedTuple):
    """A student completion as a server of another tokenizer is sent it (see the module doc)."""
    text: str  # the completion's text tokens decoded (a trailing EOS is not sent: the teacher's own is another token)
    starts: list[int | None]  # per student token (EOS included): where its prefix ends in `text`, None inside a character
    ends: list[int | None]  # per text token: where it ends, None inside a character
    eos: str | None  # the EOS's own text (decode([eos])) when the ids end in EOS


def aligned_completion(tokenizer, ids: list[int]) -> AlignedCompletion:
    """The completion's text and each student token's start and end in it (`alignment.prefix_ends`)."""
    eos_id = tokenizer.eos_token_id
    with_eos = bool(ids) and eos_id is not None and ids[-1] == eos_id
    text_ids = list(ids[:-1] if with_eos else ids)
    text = tokenizer.decode(text_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    ends = prefix_ends(tokenizer, text_ids, text)
    eos = tokenizer.decode([eos_id], skip_special_tokens=False, clean_up_tokenization_spaces=False) if with_eos else None
    return AlignedCompletion(text, token_starts(ends, with_eos), ends, eos)


def _server_tokens(reply: dict, start: int, text: str) -> list[tuple[int, int, str, dict | None, float | None]]:
    """(prefix, offset, text, top-k, own log-prob) of the server's tokens, offsets in the completion `text` (which begins
    at character `start` of the echo), from the first that reaches into it to the first generated one (offset
    len(text): it read the whole completion).

    A token's prefix is where the text it was predicted from ends: its offset, or the end of the token before it when
    only whitespace lies between (a word-level tokenizer's spaces belong to no token, as in the student's decode).
    """
    tokens, offsets, tops, own = echo_lists(reply)
    out, prev_end = [], None
    for t, o, top, lp in zip(tokens, offsets, tops, own):
        r = o - start
        if r >= len(text):  # the generated token (servers put it at the end of the text or one character after it)
            out.append((len(text), len(text), t, top, lp))
            break
        if r + len(t) > 0:
            gap = prev_end is not None and 0 <= prev_end < r and text[prev_end:r].isspace()
            out.append((prev_end if gap else r, r, t, top, lp))
        prev_end = r + len(t)
    return out


def aligned_echoed_topk(reply: dict, start: int, completion: AlignedCompletion, pieces: dict[str, int], k: int,
                        vocab: int, *, row: str, token_logps: bool = False) -> tuple:
    """ids (n, k) and log-probs (n, k) at the n student tokens of `completion`, paired by offset (see the module doc).

    completion begins at character `start` of the echoed text. With `token_logps`, also span_logps (n,) float32 (a
    span's teacher log-probability at its last student token, 0 elsewhere) and spans ((s0, s1), ...): the student
    token ranges of the spans, in order.
    """
    served = _server_tokens(reply, start, completion.text)
    first_at: dict[int, int] = {}
    for i, (prefix, r, _, _, _) in enumerate(served):
        if r >= 0:
            first_at.setdefault(prefix, i)
    positions, seen = [], set()
    for j, a in enumerate(completion.starts):
        i = first_at.get(a) if a is not None and a not in seen else None
        seen.add(a)
        top = served[i][3] if i is not None else {}
        if not isinstance(top, dict):
            raise MalformedReply(f"{row}: no top_logprobs for the server's token at completion character {a}")
        positions.append({pieces[p]: float(lp) for p, lp in top.items() if p in pieces and lp is not None})
    most = max((len(top) for *_, top, _ in served if isinstance(top, dict)), default=0)
    if served and most < min(k, vocab):
        raise MalformedReply(f"{row}: the server gave at most {most} top log-probs per token where {k} were asked for "
                             "(servers may cap `logprobs`); lower k")
    ids, logps = topk_arrays(positions, k, vocab)
    if not token_logps:
        return ids, logps
    span_logps, spans = _span_logps(served, completion, row)
    return ids, logps, span_logps, spans


def _span_logps(served: list, completion: AlignedCompletion, row: str) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """(span log-probs at each span's last student token (n,), the spans' student ranges) of the echoed text tokens."""
    text = completion.text
    echoed = [x for x in served if x[1] < len(text)]  # not the generated token (at len(text)): it reads the whole text
    t_ends = [r + len(t) if r >= 0 and text.startswith(t, r) else None for _, r, t, _, _ in echoed]
    straddles = bool(echoed) and echoed[0][1] < 0  # the first server token holds characters of the prompt too
    out = np.zeros(len(completion.starts), dtype=np.float32)
    spans = []
    for s0, s1, t0, t1 in spans_of(completion.ends, t_ends):
        if t0 == 0 and straddles:
            continue
        own = [x[4] for x in echoed[t0:t1]]
        if any(lp is None for lp in own):
            raise MalformedReply(f"{row}: no token_logprobs for the server's tokens of completion characters "
                                 f"{echoed[t0][1]}..{echoed[t1 - 1][1]}")
        out[s1 - 1] = sum(float(lp) for lp in own)
        spans.append((s0, s1))
    generated = served[-1] if served and served[-1][1] == len(text) else None
    top = generated[3] if generated is not None else None
    if completion.eos is not None and isinstance(top, dict) and completion.eos in top and completion.starts[-1] == len(text):
        out[-1] = float(top[completion.eos])  # the student's EOS, spelled as the teacher's top-k spells it after the text
        spans.append((len(completion.starts) - 1, len(completion.starts)))
    return out, tuple(spans)
