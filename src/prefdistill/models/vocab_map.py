"""The tokens two vocabularies share: pairs (student id, teacher id) that stand for the same text.

    student_ids, teacher_ids = shared_tokens(student_tokenizer, teacher_tokenizer)   # equal lengths, ids distinct per side

Tokenizers mark spaces and bytes in their token strings differently: byte-level BPE (GPT-2,
SmolLM2, Llama 3, Qwen) writes every byte as a printable character ("Ġ" for a space, "Ċ" for a
newline); SentencePiece-style ones (Llama 2, Gemma, Mistral) write a space as "▁" and a byte the
vocabulary lacks as "<0xNN>". `token_bytes` undoes each marking, so two tokens are shared when
they stand for the same bytes. Rules, in order:
- one vocabulary (token string -> id equal): every id with itself, special tokens included (the
  same-vocabulary losses are then reproduced exactly);
- tokenizers of one marking style: tokens with equal strings (special tokens included);
- otherwise tokens with equal bytes, special tokens left out;
- and in both cases the two EOS tokens paired with each other (both mean "the completion ends").
Where one side has several tokens of the same bytes (a SentencePiece vocabulary's "A" and its
byte token "<0x41>"), the regular token is kept, then the lowest id, so each id is paired at most once.
"""
from __future__ import annotations

import json
import re

BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
SPACE_MARK = "\u2581"  # SentencePiece's "▁"


def byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's character -> byte: printable Latin-1 bytes stand for themselves, the other 68 bytes for the
    characters from U+0100 on, in byte order (the GPT-2 convention)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), ord("\u00ff") + 1)]
    char_of = {b: chr(b) for b in kept}
    moved = (b for b in range(256) if b not in char_of)
    for n, b in enumerate(moved):
        char_of[b] = chr(256 + n)
    return {c: b for b, c in char_of.items()}


_ALPHABET = byte_level_alphabet()


def marking_style(tokenizer) -> str:
    """'byte_level', 'metaspace' or 'plain', read from the fast tokenizer's decoder (a slow tokenizer: 'plain')."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "plain"
    decoder = json.dumps(json.loads(backend.to_str()).get("decoder"), ensure_ascii=False)
    if '"ByteLevel"' in decoder:
        return "byte_level"
    if '"Metaspace"' in decoder or SPACE_MARK in decoder:
        return "metaspace"
    return "plain"


def token_bytes(token: str, style: str) -> bytes | None:
    """The bytes a token string stands for under `style` (None: not a text token of that style)."""
    if style == "byte_level":
        if all(c in _ALPHABET for c in token):
            return bytes(_ALPHABET[c] for c in token)
        return token.encode("utf-8")  # an added token, stored as its text
    if style == "metaspace":
        byte = BYTE_TOKEN.match(token)
        return bytes([int(byte.group(1), 16)]) if byte else token.replace(SPACE_MARK, " ").encode("utf-8")
    return token.encode("utf-8")


def _keys(tokenizer, style: str | None) -> dict:
    """key -> the one id kept for it: the token string (style None) or its bytes, preferring regular tokens, then low ids."""
    specials = set(tokenizer.all_special_ids) if style is not None else set()
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    out: dict = {}
    for i, tok in sorted(enumerate(tokens), key=lambda it: (bool(BYTE_TOKEN.match(it[1] or "")), it[0])):
        if tok is None or i in specials:
            continue
        key = tok if style is None else token_bytes(tok, style)
        if key is not None:
            out.setdefault(key, i)
    return out


def shared_tokens(student, teacher) -> tuple[list[int], list[int]]:
    """(student ids, teacher ids), paired by position, of the tokens the two tokenizers share (the module's rules), in
    student id order."""
    if student.get_vocab() == teacher.get_vocab():
        ids = list(range(len(student)))
        return ids, list(ids)
    s_style, t_style = marking_style(student), marking_style(teacher)
    same = s_style == t_style
    s_keys, t_keys = _keys(student, None if same else s_style), _keys(teacher, None if same else t_style)
    pairs = {s: t_keys[k] for k, s in s_keys.items() if k in t_keys}
    if student.eos_token_id is not None and teacher.eos_token_id is not None:  # both mean "the completion ends"
        pairs = {s: t for s, t in pairs.items() if t != teacher.eos_token_id}
        pairs[student.eos_token_id] = teacher.eos_token_id
    order = sorted(pairs)
    return order, [pairs[s] for s in order]


def tokenizer_label(name: str, tokenizer) -> str:
    """A tokenizer as a report names it: the model's name, the tokenizer's class, its size and marking style."""
    return f"{name} ({type(tokenizer).__name__}, {len(tokenizer):,} tokens, {marking_style(tokenizer)})"


def tokenizer_label_or_none(model) -> str | None:
    """`tokenizer_label` of a model config's tokenizer; None where it cannot be loaded here (a model behind an API)."""
    from prefdistill.models.common import load_tokenizer

    try:
        return tokenizer_label(model.name_or_path, load_tokenizer(model))
    except (OSError, ValueError):
        return None
