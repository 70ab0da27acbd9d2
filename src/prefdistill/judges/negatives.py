"""Synthetic preference pairs for training the default judge: reference vs. a degraded text.

    pairs = make_preference_pairs(examples, ["mismatched", "truncated"], seed=0)
    # [{"prompt": ..., "chosen": <reference>, "rejected": <degraded>, "kind": "mismatched"}, ...]

Every pair prefers an example's human reference (`Example.target`) over one rejected
text of a named kind (`NEGATIVE_KINDS`). Examples without a target are skipped, and so
is a kind that cannot be built for an example (e.g. "sibling" when the example's group
has no other member). Pairs come out example by example, kinds in the order given, and
each (example, kind) draws from its own random stream seeded by (seed, id, kind), so
the same inputs and seed always give the same pairs.

Three kinds imitate what models produce rather than what corrupts a reference: "template"
(a generic phrase around one topic word of the prompt, "Describe the parser of the
parser."), "loop" (a short phrase looped to about the reference's length, "the parser of
the parser of the ..."), and "student_init" (the untrained student's own answer to the
prompt, passed in as `generated`: the reward stage samples it, `run.stages.stage_reward`).
Every kind is built from the example itself or from the examples passed in, never from
others: a judge given its own half of the documents (`judges.heldout`) sees negatives of that
half only.
"""
from __future__ import annotations

import math
import random
import re
from typing import Callable, Optional

from prefdistill.evaluation.metrics import content_words
from prefdistill.io import Example, group_of, text_key

# Sentence ends: ".", "!" or "?" followed by white space (good enough for copying a lead).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def document_of(ex: Example) -> str:
    """The example's document: its group (`io.group_of`), the key the data splits and the bootstrap use too."""
    return group_of(ex)


def source_text(ex: Example) -> str:
    """The document a prompt is about: meta["source"], else the prompt's longest paragraph.

    Instructions ("Summarize the approach ...") are short, so the longest blank-line
    separated block of the prompt is the document itself.
    """
    source = ex.meta.get("source")
    if isinstance(source, str) and source.strip():
        return source.strip()
    blocks = [b.strip() for b in re.split(r"\n\s*\n", ex.prompt) if b.strip()]
    return max(blocks, key=len) if blocks else ""


class _Pool:
    """Index of the examples that have a reference, by group, and every prompt's valid references."""

    def __init__(self, examples: list[Example], generated: Optional[dict[str, str]] = None):
        self.examples = examples
        self.generated = generated  # text_key(prompt) -> a model's answer to it ("student_init"); None: none given
        self.by_group: dict[str, list[int]] = {}
        self.references: dict[str, set[str]] = {}  # text_key(prompt) -> text_key of each of its references
        for i, ex in enumerate(examples):
            self.by_group.setdefault(document_of(ex), []).append(i)
            self.references.setdefault(text_key(ex.prompt), set()).add(text_key(ex.target))

    def is_reference(self, i: int, text: str) -> bool:
        """Whether `text` is a valid reference of example i's prompt (multi-reference data has several)."""
        return text_key(text) in self.references[text_key(self.examples[i].prompt)]


def _mismatched(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """The reference of an example about another document (another group)."""
    own = document_of(pool.examples[i])
    n = len(pool.examples)
    if len(pool.by_group) < 2:
        return None
    for _ in range(32):  # rejection sampling: cheap when there are many groups
        j = rng.randrange(n)
        if document_of(pool.examples[j]) != own:
            return pool.examples[j].target
    others = [j for j in range(n) if document_of(pool.examples[j]) != own]
    return pool.examples[rng.choice(others)].target


def _sibling(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """The reference of another prompt about the same document (e.g. another aspect); never another reference of this prompt."""
    ex = pool.examples[i]
    siblings = [j for j in pool.by_group[document_of(ex)]
                if text_key(pool.examples[j].prompt) != text_key(ex.prompt) and not pool.is_reference(i, pool.examples[j].target)]
    return pool.examples[rng.choice(siblings)].target if siblings else None


def _truncated(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """The reference cut to its first 30-60% of words."""
    words = pool.examples[i].target.split()
    if len(words) < 2:
        return None
    n = len(words)
    lo, hi = max(1, math.ceil(0.3 * n)), min(n - 1, math.floor(0.6 * n))
    keep = rng.randint(lo, max(lo, hi))
    return " ".join(words[:keep])


def _shuffled(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """The reference's words in random order (same bag of words, no syntax)."""
    words = pool.examples[i].target.split()
    for _ in range(10):  # a 2-word text keeps its order half the time
        order = words[:]
        rng.shuffle(order)
        if order != words:
            return " ".join(order)
    return None


def _repeated(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """Degenerate LM output: the reference up to a fragment, then that fragment looping."""
    words = pool.examples[i].target.split()
    if not words:
        return None
    k = rng.randint(min(2, len(words)), max(2, min(6, len(words) // 2)))
    k = min(k, len(words))
    start = rng.randint(0, max(0, min(len(words) // 2, len(words) - k)))
    fragment = words[start : start + k]
    return " ".join(words[:start] + fragment * rng.randint(3, 5))


def _copied(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """An extractive copy: the source text's first sentence(s), about as long as the reference."""
    n_ref = len(pool.examples[i].target.split())
    sentences = _SENTENCE_END.split(source_text(pool.examples[i]))
    words: list[str] = []
    for sentence in sentences:
        if len(words) >= 0.8 * n_ref:
            break
        words += sentence.split()
    words = words[: max(1, int(1.25 * n_ref))]  # a long first sentence is cut near the reference length
    return " ".join(words) if words else None


# Generic phrases an undertrained summariser emits around one topic word ({t}: the word, {T}: capitalised).
TEMPLATES = (
    "{V} the {t} of the {t}.",
    "This paper presents the {t}.",
    "The {t} of the {t} is the {t}.",
    "In this paper, we propose a new {t}.",
    "The authors {v} the {t}.",
    "{T}: the {t} of the {t}.",
    "We {v} the {t} and the {t} of the {t}.",
)
TEMPLATE_VERBS = ("describe", "present", "discuss", "propose", "introduce", "explain", "study")


def topic_words(prompt: str, top: int = 5) -> list[str]:
    """The prompt's `top` most frequent content words (`metrics.content_words`), ties by first occurrence."""
    words = content_words(prompt)
    first = {w: i for i, w in reversed(list(enumerate(words)))}
    return sorted(first, key=lambda w: (-words.count(w), first[w]))[:top]


def _template(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """A generic template around one topic word of the prompt: "Describe the parser of the parser."."""
    topics = topic_words(pool.examples[i].prompt)
    if not topics:
        return None
    topic, verb = rng.choice(topics), rng.choice(TEMPLATE_VERBS)
    text = rng.choice(TEMPLATES)
    return text.format(t=topic, T=topic.capitalize(), v=verb, V=verb.capitalize())


def _loop(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """A short phrase looped to model length: "the <topic> of" or 2-4 words of the reference or the document,
    repeated to 0.75-1.5x the reference's word count (at least 8 words), cut mid-phrase as a length limit cuts."""
    ex = pool.examples[i]
    n_ref = len(ex.target.split())
    topics = topic_words(ex.prompt)
    choices = [w for w in (ex.target.split(), source_text(ex).split()) if len(w) >= 2]
    if not topics and not choices:
        return None
    if topics and (not choices or rng.random() < 0.5):
        unit = ["the", rng.choice(topics), "of"]
    else:
        words = rng.choice(choices)
        k = rng.randint(2, min(4, len(words)))
        start = rng.randrange(len(words) - k + 1)
        unit = words[start : start + k]
    length = max(8, rng.randint(round(0.75 * n_ref), max(round(0.75 * n_ref), round(1.5 * n_ref))))
    return " ".join((unit * (length // len(unit) + 1))[:length])


def _student_init(i: int, pool: _Pool, rng: random.Random) -> Optional[str]:
    """The untrained student's own answer to the prompt (`generated`; none: skipped, as an empty answer is)."""
    answer = pool.generated.get(text_key(pool.examples[i].prompt)) if pool.generated is not None else None
    return answer if answer and answer.strip() else None


NEGATIVE_KINDS: dict[str, Callable[[int, _Pool, random.Random], Optional[str]]] = {
    "mismatched": _mismatched,
    "sibling": _sibling,
    "truncated": _truncated,
    "shuffled": _shuffled,
    "repeated": _repeated,
    "copied": _copied,
    "template": _template,
    "loop": _loop,
    "student_init": _student_init,
}
GENERATED_KINDS = ("student_init",)  # kinds that read `generated`: a model's answers, supplied by the caller


def make_preference_pairs(examples: list[Example], kinds: list[str], seed: int,
                          generated: Optional[dict[str, str]] = None) -> list[dict]:
    """Rows {"prompt", "chosen", "rejected", "kind"}: each reference beats a degraded text of each kind.

    generated: text_key(prompt) -> a model's answer, what "student_init" reads (required when it is listed).
    """
    unknown = [k for k in kinds if k not in NEGATIVE_KINDS]
    if unknown:
        raise ValueError(f"unknown negative kind(s) {unknown}; valid kinds: {list(NEGATIVE_KINDS)}")
    if not kinds:
        raise ValueError(f"no negative kinds given; valid kinds: {list(NEGATIVE_KINDS)}")
    needing = [k for k in kinds if k in GENERATED_KINDS]
    if needing and generated is None:
        raise ValueError(f"negative kind(s) {needing} are a model's answers: pass generated={{prompt key: answer}} "
                         "(the reward stage samples the initial student for them)")
    pool = _Pool([ex for ex in examples if ex.target.strip()], generated)
    rows = []
    for i, ex in enumerate(pool.examples):
        for kind in kinds:
            rng = random.Random(f"{seed}:{ex.id}:{kind}")  # str seeds are stable across processes
            rejected = NEGATIVE_KINDS[kind](i, pool, rng)
            if rejected is None or pool.is_reference(i, rejected):  # a valid reference is never a negative
                continue
            rows.append({"prompt": ex.prompt, "chosen": ex.target, "rejected": rejected, "kind": kind})
    return rows
