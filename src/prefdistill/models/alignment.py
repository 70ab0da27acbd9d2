"""One text in two tokenizations: the positions where both models predict what follows the same prefix.

    bridge = TokenizerBridge(student.tokenizer, teacher.tokenizer)
    row = bridge.align(student_ids)              # a completion's ids in the student's tokenizer (EOS at the end or not)
    row.teacher_ids                              # the same text in the teacher's tokenizer (its EOS where the student's was)
    row.pairs                                    # ((j, i), ...): student position j and teacher position i read one prefix
    row.spans                                    # ((s0, s1, t0, t1), ...): token ranges [s0, s1), [t0, t1) of the same characters
    bridge.shared                                # (student ids, teacher ids) of the tokens both vocabularies have

Token j of a completion is predicted from the text before it. That prefix is `text[:start_j]`,
where start_j is the length of decode(ids[:j]), defined only where that decode is a prefix of the
text: a token that ends inside a character (a byte-fallback or byte-level piece of a multi-byte
character) leaves no prefix of the text, so the position after it is no boundary. A student
position and a teacher position are paired when their prefixes are the same string, so at a pair
both next-token distributions condition on one text (each model reads its own chat template and
prompt: only the completion is aligned). The EOS both sides append starts at the end of the text,
so the last positions pair as well. Between consecutive shared boundaries lie spans: the same
characters in both tokenizations, so a span's log-probability is the sum of its tokens' on either
side and span-level sequence terms are exact (`prefdistill.methods.common`, MiniLLM's rewards).

With one tokenizer the pairs are every position with itself. The derivation and what the
cross-vocabulary comparison is exact for: docs/derivations.md, "Token-level distillation across
tokenizers".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from prefdistill.models.vocab_map import shared_tokens

MAX_CACHED = 50_000  # alignments a bridge keeps (a few hundred bytes each)


def prefix_ends(tokenizer, ids: list[int], text: str) -> list[int | None]:
    """len(decode(ids[:i + 1])) for each i where that decode is a prefix of `text`, else None.

    None marks a token that ends inside a character (its decode ends in a replacement character)
    or where the tokenizer's decode does not reproduce the text. Decoded without cleaning spaces
    and with special tokens, so nothing the tokenizer did is undone behind the comparison.
    """
    if not ids:
        return []
    prefixes = tokenizer.batch_decode([ids[:i + 1] for i in range(len(ids))], skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False)
    return [len(p) if text.startswith(p) else None for p in prefixes]


def token_starts(ends: list[int | None], with_eos: bool) -> list[int | None]:
    """The start (prefix length) of each token of a completion whose text tokens end at `ends`; an EOS after them starts
    where the last text token ends. None: the prefix before the token is no prefix of the text."""
    starts = [0, *ends]
    return starts if with_eos else starts[:-1]


class RowAlignment(NamedTuple):
    """A completion aligned across two tokenizations (see the module doc)."""
    teacher_ids: list[int]  # the completion in the teacher's tokenizer, its EOS appended where the student's ids end in EOS
    pairs: tuple[tuple[int, int], ...]  # (student position j, teacher position i) predicting after the same prefix
    spans: tuple[tuple[int, int, int, int], ...]  # (s0, s1, t0, t1): student tokens [s0, s1) = teacher tokens [t0, t1) as text;
    #   the two EOS tokens are a last span of their own
    text: str  # what both sides tokenised (the student's ids decoded)


def pair_positions(student_starts: list[int | None], teacher_starts: list[int | None]) -> tuple[tuple[int, int], ...]:
    """(j, i) for each student position whose prefix is also a teacher position's (the first such position of each side:
    a token that decodes to nothing repeats a start, and only the first reads that prefix alone)."""
    first_teacher: dict[int, int] = {}
    for i, start in enumerate(teacher_starts):
        if start is not None:
            first_teacher.setdefault(start, i)
    seen, pairs = set(), []
    for j, start in enumerate(student_starts):
        if start is not None and start in first_teacher and start not in seen:
            seen.add(start)
            pairs.append((j, first_teacher[start]))
    return tuple(pairs)


def spans_of(student_ends: list[int | None], teacher_ends: list[int | None]) -> tuple[tuple[int, int, int, int], ...]:
    """Token ranges of both sides that cover the same characters, cut at every end both sides share (text tokens only)."""
    t_index = {end: i for i, end in enumerate(teacher_ends) if end is not None}
    spans, s0, t0 = [], 0, 0
    for j, end in enumerate(student_ends):
        if end is not None and end in t_index and t_index[end] >= t0:
            spans.append((s0, j + 1, t0, t_index[end] + 1))
            s0, t0 = j + 1, t_index[end] + 1
    return tuple(spans)


@dataclass
class TokenizerBridge:
    """The student's and the teacher's tokenizers, with their shared tokens (`shared_tokens`) and an alignment per completion
    (cached by its ids: a text is aligned once however often it is trained on)."""
    student: object
    teacher: object
    shared: tuple[list[int], list[int]] = field(init=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.shared = shared_tokens(self.student, self.teacher)

    @property
    def identical(self) -> bool:
        """Whether the two tokenizers have one vocabulary (token string -> id): then every position pairs with itself."""
        return self.student.get_vocab() == self.teacher.get_vocab()

    def align(self, student_ids: list[int]) -> RowAlignment:
        key = tuple(student_ids)
        if len(self._cache) >= MAX_CACHED:  # fresh student samples are new texts at every step: keep memory bounded
            self._cache.clear()
        if key not in self._cache:
            self._cache[key] = self._align(list(student_ids))
        return self._cache[key]

    def _align(self, student_ids: list[int]) -> RowAlignment:
        eos_s, eos_t = self.student.eos_token_id, self.teacher.eos_token_id
        with_eos = bool(student_ids) and eos_s is not None and student_ids[-1] == eos_s
        text_ids = student_ids[:-1] if with_eos else student_ids
        text = self.student.decode(text_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        teacher_text_ids = self.teacher(text, add_special_tokens=False)["input_ids"]
        teacher_ids = teacher_text_ids + ([eos_t] if with_eos and eos_t is not None else [])
        s_ends, t_ends = prefix_ends(self.student, text_ids, text), prefix_ends(self.teacher, teacher_text_ids, text)
        s_starts = token_starts(s_ends, with_eos)
        t_starts = token_starts(t_ends, with_eos and eos_t is not None)
        spans = spans_of(s_ends, t_ends)
        whole = [len(text)] if text else []
        if with_eos and eos_t is not None and s_ends[-1:] == whole and t_ends[-1:] == whole:  # both EOS follow the whole text
            spans += ((len(text_ids), len(text_ids) + 1, len(teacher_text_ids), len(teacher_text_ids) + 1),)
        return RowAlignment(teacher_ids, pair_positions(s_starts, t_starts), spans, text)


class AlignedTeacher(NamedTuple):
    """A teacher of another tokenizer than the student's, with the bridge between them (what a token-level loss is given
    as `teacher` when the two tokenise differently, or when `vocabulary: aligned` asks for the aligned path)."""
    model: object  # the teacher (a LocalLM)
    bridge: TokenizerBridge
