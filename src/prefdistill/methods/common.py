"""What the token-level methods share: teacher and student logits on the same tokens.

    ids = completion_ids(student, texts)                  # text -> ids, EOS appended
    s, t, labels, mask = paired_logits(student, teacher, prompts, ids)

Student and teacher format the prompt each in their own way; the completion tokens are
the same ids for both, so the two next-token distributions are over one vocabulary.
"""
from __future__ import annotations

import torch

from prefdistill.logprobs import completion_token_ids, pack_shared_prompt, shared_prompt_logps
from prefdistill.pairs import PairRow, chosen_is_teacher, write_back

# Training-log statistics with these prefixes are counts (tokens; samples drawn and oracle
# calls): the loop adds them up over micro-batches (other statistics are averaged), and the
# bench's cost table sums them over steps.
COUNT_PREFIX = ("tokens_", "count_")


def completion_ids(policy, completions: list[str]) -> list[list[int]]:
    return completion_token_ids(policy.tokenizer, completions)


def pair_logps(policy, prompts: list[str], chosen: list[str], rejected: list[str]):
    """(per-token log-probs (2B, C), completion mask (2B, C)): rows :B the chosen, B: the rejected completions.

    Each prompt runs through the model once for both of its completions
    (`prefdistill.logprobs.shared_prompt_logps`), not once per completion.
    """
    tok = policy.tokenizer
    prompt_ids = [policy.prompt_ids(p) for p in prompts]
    completions = completion_token_ids(tok, [text for pair in zip(chosen, rejected) for text in pair])  # c0 r0 c1 r1 ...
    batch = pack_shared_prompt(prompt_ids, completions, pad_id=tok.pad_token_id, n_per_prompt=2)
    per_token = shared_prompt_logps(policy.model, batch)  # (2B, C), pairs interleaved
    mask = batch["completion_mask"].to(per_token.device)
    return torch.cat([per_token[0::2], per_token[1::2]]), torch.cat([mask[0::2], mask[1::2]])


def teacher_side(row: dict) -> str:
    """The teacher's sample of a pair row (`PairRow`), whichever side relabelling put it on."""
    return row["chosen"] if chosen_is_teacher(row) else row["rejected"]


def student_side(row: dict) -> str:
    """The SFT student's sample of a pair row (`PairRow`)."""
    return row["rejected"] if chosen_is_teacher(row) else row["chosen"]


def attach_teacher_logps(rows: list[dict], table: dict[str, dict], method: str) -> None:
    """Set `PairRow.teacher_chosen_logp` / `teacher_rejected_logp` (log p(y|x), summed) of pair rows, in place.

    `table` is keyed by pair id and by who wrote the text (`teacher_sample` / `student_sample`),
    so a swapped pair reads the teacher's score of its chosen side from `student_sample`.
    """
    for r in rows:
        if r["id"] not in table:
            raise KeyError(f"{method}: no stored teacher log-probabilities for pair {r['id']!r}; delete pairs/teacher_logps.jsonl to recompute")
        entry, teacher_first = table[r["id"]], chosen_is_teacher(r)
        write_back(r, PairRow.from_dict({**r, "teacher_chosen_logp": entry["teacher_sample" if teacher_first else "student_sample"],
                                         "teacher_rejected_logp": entry["student_sample" if teacher_first else "teacher_sample"]}))


def paired_logits(policy, teacher, prompts: list[str], ids: list[list[int]]):
    """(student logits (B, C, V) with grad, teacher logits (B, C, V) without, labels (B, C), mask (B, C)).

    The vocabulary axis is cut to the tokenizer's size: models often pad their output
    layer (to a multiple of 64, say), and the padded entries are not tokens.
    """
    s_logits, labels, mask = policy.completion_logits(prompts, ids)
    with torch.no_grad():
        t_logits, _, _ = teacher.completion_logits(prompts, ids)
    vocab = min(len(policy.tokenizer), s_logits.shape[-1], t_logits.shape[-1])
    return s_logits[..., :vocab], t_logits[..., :vocab].to(s_logits.device), labels, mask
