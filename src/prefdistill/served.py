"""A served teacher in the training loop: its top-k log-probs, and those of the tokens themselves, at given tokens.

    require_topk_of_text(teacher)        # before training: a server whose echo fails the probe is refused with its reason
    top = served_topk(teacher, prompts, ids, 20, tokenizer=student.tokenizer, temperature=1.0)
    top.ids, top.logprobs                # (B, C, k) each, laid out like completion_logits of the same rows
    top.token_logps, top.mask            # (B, C): log p(token t) of the given tokens themselves; which positions are real

`signal: served` (`prefdistill.methods.common.TeacherSignal`) asks the teacher at every step,
for exactly the tokens the method trains on (fresh student samples included), instead of
holding it in training memory (`signal: live`) or caching it before training (`signal: topk`,
`prefdistill.teacher_signal`). The teacher is what its backend loads (the `served_teacher` need):

    openai  `APILM.completion_topk`: one echo request per row; the correctness probe first, so a
            server with a shifted echo (llama-cpp-python 0.3.x) is refused; temperature 1 only
    vllm    `VLLMLM.completion_topk`: the engine's prompt log-probs; temperature 1, k ≤ max_logprobs
    hf      the local model's logits, top-k taken here at any temperature (it is then in memory: for tests)

A token's own log-prob comes with its top-k from the same reply (the echo's `token_logprobs`,
vLLM's entry for the token itself), so it is exact whether or not the token is among the k.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from prefdistill.teacher_signal import stack_topk


class ServedTopk(NamedTuple):
    ids: torch.Tensor  # (B, C, k) int64
    logprobs: torch.Tensor  # (B, C, k) float32, most likely first; -inf marks a padded slot
    token_logps: torch.Tensor  # (B, C) float32, log p of the given token at each position; 0 outside the mask
    mask: torch.Tensor  # (B, C)


def require_topk_of_text(teacher) -> None:
    """Raise, with its reason, when `teacher` cannot give top-k log-probs of given text (a server failing the probe)."""
    check = getattr(teacher, "require_topk_of_text", None)
    if check is not None:
        check()


@torch.no_grad()
def served_topk(teacher, prompts: list[str], completions: list[list[int]], k: int, *, tokenizer,
                temperature: float = 1.0) -> ServedTopk:
    """The teacher's top-k and the tokens' own log-probs at every completion token, at `temperature`.

    completions: the student's token ids (as `completion_logits` takes them); ids are in the
    student's vocabulary (len(tokenizer)). A teacher with `completion_topk` (a server, vLLM:
    `prefdistill.models.common.TopkTeacher`) gives them itself; any other gives logits.
    """
    if not hasattr(teacher, "completion_topk"):
        return _local_topk(teacher, prompts, completions, k, vocab=len(tokenizer), temperature=temperature)
    rows = teacher.completion_topk(prompts, completions, k, tokenizer=tokenizer, temperature=temperature, token_logps=True)
    for i, ((ids, logps, own), completion) in enumerate(zip(rows, completions)):
        if ids.shape != logps.shape or ids.shape[0] != len(completion) or own.shape != (len(completion),):
            raise ValueError(f"{getattr(teacher, 'name', 'the teacher')}: top-k of row {i} ({prompts[i][:40]!r}...) has "
                             f"ids {ids.shape}, log-probs {logps.shape} and token log-probs {own.shape} for "
                             f"{len(completion)} completion tokens")
    ids, logps, mask = stack_topk([(ids, logps) for ids, logps, _ in rows])
    token_logps = torch.zeros(mask.shape)
    for b, (_, _, own) in enumerate(rows):
        if len(own):
            token_logps[b, mask.shape[1] - len(own):] = torch.as_tensor(own, dtype=torch.float32)
    return ServedTopk(ids, logps, token_logps, mask)


def _local_topk(teacher, prompts: list[str], completions: list[list[int]], k: int, *, vocab: int,
                temperature: float) -> ServedTopk:
    """The same from a local model's logits (cut to the student's vocabulary, as `paired_logits` cuts them)."""
    logits, labels, mask = teacher.completion_logits(prompts, completions)  # (B, C, V)
    logprobs = F.log_softmax(logits[..., :vocab].float() / temperature, -1)
    values, ids = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)  # (B, C, k) each
    own = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask  # (B, C)
    return ServedTopk(ids, values, own, mask)
