"""A served teacher in the training loop: its top-k log-probs, and those of the tokens themselves, at given tokens.

    require_topk_of_text(teacher)        # before training: a server whose echo fails the probe is refused with its reason
    top = served_topk(teacher, prompts, ids, 20, tokenizer=student.tokenizer, temperature=1.0)
    top.ids, top.logprobs                # (B, C, k) each, laid out like completion_logits of the same rows
    top.token_logps, top.mask            # (B, C): log p(token t) of the given tokens themselves; which positions are real

`signal: served` (`prefdistill.methods.common.TeacherSignal`) asks the teacher at every step,
for exactly the tokens the method trains on (fresh student samples included), instead of
holding it in training memory (`signal: live`) or caching it before training (`signal: topk`,
`prefdistill.signal.topk_cache`). The teacher is what its backend loads (the `served_teacher` need):

    openai  `APILM.completion_topk`: one echo request per row; the correctness probe first, so a
            server with a shifted echo (llama-cpp-python 0.3.x) is refused; temperature 1 only
    vllm    `VLLMLM.completion_topk`: the engine's prompt log-probs; temperature 1, k ≤ max_logprobs
    hf      the local model's logits, top-k taken here at any temperature (it is then in memory: for tests)

A token's own log-prob comes with its top-k from the same reply (the echo's `token_logprobs`,
vLLM's entry for the token itself), so it is exact whether or not the token is among the k.

A row the teacher cannot give (a server's tokens that do not line up with the student's,
`TopkFailure`) does not stop training: its mask is 0 (left out of the distillation term) and
`top.failed` marks it. With a record (`RecordedTeacher`, what the pipeline passes as the
served teacher) the row is listed with its id and reason (`prefdistill.signal.failures`), a
sample recorded before is not sent again, and above the stated share the run stops naming them:

    teacher = RecordedTeacher(server_lm, SignalFailures(path, max_fraction=0.05, total=steps * rows_per_step))
    top = served_topk(teacher, prompts, ids, 20, tokenizer=tok, row_ids=["3#0", ...])
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from prefdistill.io import n_processes
from prefdistill.models.common import TopkFailure
from prefdistill.signal.failures import SignalFailures, process_path, row_key
from prefdistill.signal.topk_cache import stack_topk


class ServedTopk(NamedTuple):
    ids: torch.Tensor  # (B, C, k) int64
    logprobs: torch.Tensor  # (B, C, k) float32, most likely first; -inf marks a padded slot
    token_logps: torch.Tensor  # (B, C) float32, log p of the given token at each position; 0 outside the mask
    mask: torch.Tensor  # (B, C); 0 all along a failed row
    failed: torch.Tensor  # (B,) bool: rows the teacher could not give (left out)
    spans: tuple | None = None  # aligned only: per row, the student token ranges ((s0, s1), ...) whose teacher
    #   log-probability token_logps holds at s1 - 1 (0 at a span's other tokens); None when each token is its own span

    def to(self, device) -> "ServedTopk":
        return self._replace(**{f: getattr(self, f).to(device) for f in ("ids", "logprobs", "token_logps", "mask", "failed")})


@dataclass
class RecordedTeacher:
    """A served teacher and the record of the rows it could not give; anything else is the teacher's own."""

    teacher: Any
    failures: SignalFailures

    def __getattr__(self, name: str):
        if name in ("teacher", "failures"):  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.teacher, name)


def recorded_teacher(teacher, out_dir: Path, rows_scored: int, *, max_failed_fraction: float, retry_failed: bool):
    """`teacher` with the failure record of the training run that writes `out_dir`: OUT.signal_failures.jsonl beside it.

    rows_scored: the rows the run will ask the teacher for (steps · batch_size · grad_accum), of which at most
    `max_failed_fraction` may fail; `retry_failed` forgets the rows recorded by an earlier try of the run.
    """
    out_dir = Path(out_dir)
    failures = SignalFailures(process_path(out_dir.with_name(out_dir.name + ".signal_failures.jsonl")),
                              max_fraction=max_failed_fraction, total=rows_scored // n_processes())
    if retry_failed:
        failures.forget(list(failures.records))
    return RecordedTeacher(teacher, failures)


def require_topk_of_text(teacher) -> None:
    """Raise, with its reason, when `teacher` cannot give top-k log-probs of given text (a server failing the probe)."""
    check = getattr(teacher, "require_topk_of_text", None)
    if check is not None:
        check()


@torch.no_grad()
def served_topk(teacher, prompts: list[str], completions: list[list[int]], k: int, *, tokenizer,
                temperature: float = 1.0, row_ids: list[str] | None = None, aligned: bool | None = False) -> ServedTopk:
    """The teacher's top-k and the tokens' own log-probs at every completion token, at `temperature`.

    completions: the student's token ids (as `completion_logits` takes them); ids are in the
    student's vocabulary (len(tokenizer)). A teacher with `completion_topk` (a server, vLLM:
    `prefdistill.models.common.TopkTeacher`) gives them itself; any other gives logits. A row it
    cannot give is masked out and flagged in `failed`; `row_ids` name rows in the record.

    aligned True: the teacher tokenises otherwise (a server of another model): its top-k is read by
    character offset onto the student positions it shares (`prefdistill.models.api_aligned`),
    the rest masked out, and token_logps holds span log-probs with the row's spans in `spans`.
    None: each row exactly where the server's tokens are the student's, by offset where not
    (`APILM.completion_topk`); False: such a row fails (`vocabulary: shared`).
    """
    failures = teacher.failures if isinstance(teacher, RecordedTeacher) else None
    teacher = teacher.teacher if isinstance(teacher, RecordedTeacher) else teacher
    if aligned is not False and hasattr(teacher, "completion_topk") and not getattr(teacher, "topk_by_offset", False):
        aligned = False if aligned is None else aligned  # vLLM: the student's own ids, one vocabulary (checked at load)
    if aligned and not getattr(teacher, "topk_by_offset", False):
        raise ValueError(f"{getattr(teacher, 'name', 'the teacher')}: signal: served with a teacher of another tokenizer "
                         "reads a server's top-k by character offset (backend: openai); a local or vLLM teacher of another "
                         "tokenizer distils with signal: live or topk (aligned by prefdistill.models.alignment)")
    if not hasattr(teacher, "completion_topk"):
        return _local_topk(teacher, prompts, completions, k, vocab=len(tokenizer), temperature=temperature)
    keys = [row_key(p, c) for p, c in zip(prompts, completions)]
    known = {i: TopkFailure(failures.reason(key)) for i, key in enumerate(keys) if failures and failures.reason(key)}
    ask = [i for i in range(len(prompts)) if i not in known]
    got = teacher.completion_topk([prompts[i] for i in ask], [completions[i] for i in ask], k, tokenizer=tokenizer,
                                  temperature=temperature, token_logps=True,
                                  **({} if aligned is False else {"aligned": aligned})) if ask else []
    rows = {**known, **dict(zip(ask, got))}
    rows = [rows[i] for i in range(len(prompts))]
    for i, row in enumerate(rows):
        if isinstance(row, TopkFailure):
            if failures is not None and i not in known:
                failures.record(keys[i], row_ids[i] if row_ids else f"prompt {prompts[i][:60]!r}", prompts[i], row.reason)
        elif row[0].shape != row[1].shape or row[0].shape[0] != len(completions[i]) or row[2].shape != (len(completions[i]),):
            raise ValueError(f"{getattr(teacher, 'name', 'the teacher')}: top-k of row {i} ({prompts[i][:40]!r}...) has "
                             f"ids {row[0].shape}, log-probs {row[1].shape} and token log-probs {row[2].shape} for "
                             f"{len(completions[i])} completion tokens")
    if failures is not None:
        failures.check()
    return _stack(rows, completions, min(k, len(tokenizer)))


def _stack(rows: list, completions: list[list[int]], width: int) -> ServedTopk:
    """Rows of (ids, log-probs, token log-probs[, spans]) or `TopkFailure` as one batch; a failed row is padding, its
    mask 0. A row read by offset (with spans) leaves out the positions the teacher gave nothing at (every slot padded)."""
    failed = torch.tensor([isinstance(r, TopkFailure) for r in rows], dtype=torch.bool)
    aligned = [not isinstance(r, TopkFailure) and len(r) == 4 for r in rows]
    spans = tuple(r[3] if a else None for r, a in zip(rows, aligned)) if any(aligned) else None
    rows = [r if isinstance(r, TopkFailure) else r[:3] for r in rows]
    k = next((r[0].shape[1] for r in rows if not isinstance(r, TopkFailure)), width)
    pad = lambda n: (np.zeros((n, k), dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32), np.zeros(n, np.float32))  # noqa: E731
    rows = [pad(len(c)) if isinstance(r, TopkFailure) else r for r, c in zip(rows, completions)]
    ids, logps, mask = stack_topk([(i, lp) for i, lp, _ in rows])
    token_logps = torch.zeros(mask.shape)
    for b, (_, _, own) in enumerate(rows):
        if len(own):
            token_logps[b, mask.shape[1] - len(own):] = torch.as_tensor(own, dtype=torch.float32)
    if failed.any():
        logps[failed] = torch.where(torch.arange(k) == 0, 0.0, float("-inf"))  # a valid distribution: losses stay finite
        mask[failed], token_logps[failed] = 0, 0.0
    for b in (b for b, a in enumerate(aligned) if a):
        mask[b] = mask[b] * (logps[b] > float("-inf")).any(-1).to(mask.dtype)
    return ServedTopk(ids, logps, token_logps, mask, failed, spans)


def _local_topk(teacher, prompts: list[str], completions: list[list[int]], k: int, *, vocab: int,
                temperature: float) -> ServedTopk:
    """The same from a local model's logits (cut to the student's vocabulary, as `paired_states` cuts them)."""
    logits, labels, mask = teacher.completion_logits(prompts, completions)  # (B, C, V)
    logprobs = F.log_softmax(logits[..., :vocab].float() / temperature, -1)
    values, ids = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)  # (B, C, k) each
    own = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask  # (B, C)
    return ServedTopk(ids, values, own, mask, torch.zeros(len(prompts), dtype=torch.bool))
