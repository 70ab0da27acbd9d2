"""What the token-level methods share: teacher and student logits on the same tokens.

    ids = completion_ids(student, texts)                  # text -> ids, EOS appended
    s, t, labels, mask = paired_states(student, teacher, prompts, ids)   # sides for prefdistill.losses.chunked
    terms = teacher_student_terms(student, teacher, rows, prompts, ids, params, "gkd", divergence)  # live, cached or served

Student and teacher format the prompt each in their own way; the completion tokens are
the same ids for both, so the two next-token distributions are over one vocabulary.
Logits are computed `policy.logits_chunk` positions at a time and never for the whole batch
(`prefdistill.losses.chunked.chunked_positions`): a method gives the per-position function, the
chunks give it (B, C) values to mask and average as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from prefdistill.config.typed import AT_LEAST_1, opt
from prefdistill.data.pairs import PairRow, chosen_is_teacher, write_back
from prefdistill.data.rows import field_of
from prefdistill.errors import ConfigError
from prefdistill.losses import coarsen, log_probs_pair, shared_outcomes
from prefdistill.losses.chunked import chunked_positions, cut_vocab, side_vocab
from prefdistill.models.alignment import AlignedTeacher
from prefdistill.models.logprobs import (IGNORE_INDEX, completion_token_ids, masked_mean, pack_shared_prompt, per_token_logps,
                                         shared_prompt_logps)
from prefdistill.signal.served import served_topk
from prefdistill.signal.topk_cache import TopkSignal

# Training-log statistics with these prefixes are counts (tokens; samples drawn and oracle
# calls): the loop adds them up over micro-batches (other statistics are averaged), and the
# bench's cost table sums them over steps.
COUNT_PREFIX = ("tokens_", "count_")


def logits_chunk(policy) -> int:
    """Positions whose logits `policy`'s losses compute at once (train.logits_chunk; 0: the whole batch)."""
    return getattr(policy, "logits_chunk", 0)


def completion_ids(policy, completions: list[str]) -> list[list[int]]:
    return completion_token_ids(policy.tokenizer, completions)


def pair_logps(policy, prompts: list[str], chosen: list[str], rejected: list[str]):
    """(per-token log-probs (2B, C), completion mask (2B, C)): rows :B the chosen, B: the rejected completions.

    Each prompt runs through the model once for both of its completions
    (`prefdistill.models.logprobs.shared_prompt_logps`), not once per completion.
    """
    tok = policy.tokenizer
    prompt_ids = [policy.prompt_ids(p) for p in prompts]
    completions = completion_token_ids(tok, [text for pair in zip(chosen, rejected) for text in pair])  # c0 r0 c1 r1 ...
    batch = pack_shared_prompt(prompt_ids, completions, pad_id=tok.pad_token_id, n_per_prompt=2)
    per_token = shared_prompt_logps(policy.model, batch, chunk=logits_chunk(policy))  # (2B, C), pairs interleaved
    mask = batch["completion_mask"].to(per_token.device)
    return torch.cat([per_token[0::2], per_token[1::2]]), torch.cat([mask[0::2], mask[1::2]])


def teacher_side(row) -> str:
    """The teacher's sample of a pair row (a dict or a `PairRow`), whichever side relabelling put it on."""
    return field_of(row, "chosen") if chosen_is_teacher(row) else field_of(row, "rejected")


def student_side(row) -> str:
    """The SFT student's sample of a pair row (a dict or a `PairRow`)."""
    return field_of(row, "rejected") if chosen_is_teacher(row) else field_of(row, "chosen")


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


def student_states(policy, prompts: list[str], ids: list[list[int]]):
    """(the student's side with grad, labels (B, C), mask (B, C)), logits cut to the tokenizer's vocabulary.

    Models often pad their output layer (to a multiple of 64, say), and the padded entries are not tokens.
    """
    return policy.completion_states(prompts, ids, vocab=len(policy.tokenizer))


def paired_states(policy, teacher, prompts: list[str], ids: list[list[int]]):
    """(student side with grad, teacher side without, labels (B, C), mask (B, C)), over one vocabulary.

    A side is hidden states and a head, or logits (`prefdistill.losses.chunked`). The teacher runs
    without an autograd graph or dropout (`LocalLM.teacher_states`); its logits only ever exist a chunk
    at a time, inside the loss. The vocabulary is cut to the tokenizer's size and both output layers'.
    """
    s, labels, mask = student_states(policy, prompts, ids)
    t, _, _ = teacher.teacher_states(prompts, ids, vocab=None, chunk=logits_chunk(policy))
    vocab = min(side_vocab(s), side_vocab(t))
    return cut_vocab(s, vocab), cut_vocab(t, vocab), labels, mask


def aligned_states(policy, teacher: AlignedTeacher, prompts: list[str], ids: list[list[int]]):
    """An `AlignedBatch`: a teacher of another tokenizer on the same completion text (`prefdistill.models.alignment`).

    The teacher reads each completion in its own tokens (`RowAlignment.teacher_ids`); its hidden states (or logits) at the
    teacher position paired with each student position are moved there, so both sides line up position by position as in
    `paired_states`. Student positions without a pair are False in `paired` (their teacher rows are placeholders).
    Each side's vocabulary is cut to its tokenizer's (a padded output layer's extra rows are not tokens).
    """
    s, labels, mask = student_states(policy, prompts, ids)
    rows = [teacher.bridge.align(row) for row in ids]
    lm = teacher.model
    t, t_labels, t_mask = lm.teacher_states(prompts, [r.teacher_ids for r in rows], vocab=len(lm.tokenizer),
                                            chunk=logits_chunk(policy))
    batch, width, t_width = labels.shape[0], labels.shape[1], t_mask.shape[1]
    index = torch.zeros(batch, width, dtype=torch.long)
    paired = torch.zeros(batch, width, dtype=torch.bool)
    for b, (row, r) in enumerate(zip(ids, rows)):  # completions sit at the right edge of both batches
        for j, i in r.pairs:
            index[b, width - len(row) + j] = b * t_width + t_width - len(r.teacher_ids) + i
            paired[b, width - len(row) + j] = True
    x, head = t
    gathered = x.flatten(0, 1).index_select(0, index.flatten().to(x.device)).view(batch, width, *x.shape[2:])
    paired = paired.to(mask.device) & mask.bool()
    stats = {"tokens_teacher_scored": float(t_mask.sum()), "tokens_aligned": float(paired.sum()),
             "tokens_completion": float(mask.sum())}
    return AlignedBatch(s, (gathered, head), labels, mask, paired, stats, rows, t, t_labels)


class AlignedBatch(NamedTuple):
    """`aligned_states`: both sides on the student's positions, and the teacher's own side on its tokens."""
    student: tuple  # the student's side (with grad), (B, C) positions
    teacher: tuple  # the teacher's side gathered onto the student's positions (placeholders where unpaired)
    labels: torch.Tensor  # (B, C) the student's completion tokens
    mask: torch.Tensor  # (B, C) every student completion token
    paired: torch.Tensor  # (B, C) bool: positions with a teacher position of the same prefix
    stats: dict[str, float]
    rows: list  # a `RowAlignment` per row
    teacher_own: tuple  # the teacher's side on its own (B, C_t) positions
    teacher_labels: torch.Tensor  # (B, C_t) the teacher's completion tokens


def aligned_terms(policy, teacher: AlignedTeacher, prompts: list[str], ids: list[list[int]], divergence, temperature: float,
                  with_logps: bool) -> DistillTerms:
    """`teacher_student_terms` for a teacher of another tokenizer: divergence(log q̄, log p̄) of both next-token distributions
    over the shared tokens and a rest outcome (`shared_outcomes`) at the paired positions; the student's log-probs (a CE
    term) at every completion position."""
    s, t, labels, mask, paired, stats = aligned_states(policy, teacher, prompts, ids)[:6]
    s_ids, t_ids = (torch.tensor(x, dtype=torch.long) for x in teacher.bridge.shared)

    def terms(s_logits: torch.Tensor, t_logits: torch.Tensor, labels: torch.Tensor, on: torch.Tensor):
        log_q, log_p = shared_outcomes(s_logits, t_logits, s_ids, t_ids, temperature=temperature)
        values = (torch.where(on, divergence(log_q, log_p), 0.0),)
        return values + (per_token_logps(s_logits, labels),) if with_logps else values

    values = chunked_positions(terms, s, teacher=t, aligned=(labels, paired), chunk=logits_chunk(policy),
                               active=(paired | mask.bool()) if with_logps else paired)
    return DistillTerms(values[0], values[1] if with_logps else None, labels, paired.to(mask.dtype), stats, mask)


@dataclass
class ServedSignal:
    """Where a token-level method reads the teacher: live in the training loop, or served by its backend (MiniLLM's params).

    served: the teacher is not loaded into training memory; at every step its backend (a server,
    a vLLM engine: `prefdistill.signal.served`, the `served_teacher` need) gives its top-k ids and
    log-probs at the tokens trained on, fresh student samples included, and the method's
    divergence is that of the two distributions coarsened to the k ids and one bucket for the
    rest (`prefdistill.losses.coarsen`): a lower bound of the full one, equal to it when k ≥ V.
    """
    signal: Literal["live", "served"] = opt("live", "live: the teacher in the training loop; served: its top-k log-probs of "
                                                    "the text trained on, asked of its backend (a server) at every step")
    k: int = opt(20, "topk / served: teacher token ids kept per position", AT_LEAST_1)
    vocabulary: Literal["auto", "shared", "aligned"] = opt(
        "auto", "auto: a teacher of the student's vocabulary is compared token for token, one of another tokenizer on the "
                "aligned positions over the shared tokens (prefdistill.models.alignment; a served teacher's rows by character "
                "offset where its tokens differ); shared: refuse a teacher of another tokenizer (a served row whose tokens "
                "differ fails); aligned: the aligned path even for one vocabulary (what it costs)")

    def teacher_need(self) -> str:
        return {"topk": "teacher_topk", "served": "served_teacher"}.get(self.signal, "teacher")


@dataclass
class TeacherSignal(ServedSignal):
    """`ServedSignal`, or the teacher's top-k cached once before training (the params of kd, distillm, gkd, fdistill).

    topk: its top-k ids and log-probs at every position the method trains on are cached once
    before training (`prefdistill.signal.topk_cache`, the `teacher_topk` need), the teacher is not
    loaded for training, and the divergence is coarsened as with `served`. A cache holds nothing
    for samples the student draws during training: those need `live` or `served`.
    """
    signal: Literal["live", "topk", "served"] = opt("live", "live: the teacher in the training loop; topk: its top-k "
                                                            "log-probs, cached once before training; served: asked of its "
                                                            "backend (a server) at every step (neither loads it for training)")
    topk_dtype: Literal["float16", "float32"] = opt("float16", "topk: how cached log-probs are stored (2 bytes, or exact)")

    def refuse_fresh_samples(self, param: str, value) -> None:
        """A cache made before training holds nothing for samples the student draws during it: refuse `param` = value."""
        if self.signal == "topk" and value:
            off = "false" if isinstance(value, bool) else "0"
            raise ConfigError(f"distill.params.{param}: {value} trains on fresh student samples, which only the teacher itself "
                              f"can score, but signal: topk reads the teacher from a cache made before training; "
                              f"set {param}: {off}, or signal: live or served (a server scores them during training)")


class DistillTerms(NamedTuple):
    """Per-position terms of one batch, computed a chunk of positions at a time (`chunked_positions`)."""
    divergence: torch.Tensor  # (B, C): the method's divergence of teacher and student, with grad (0 off completion_mask)
    logps: torch.Tensor | None  # (B, C): the student's log q(label) at temperature 1, with grad (with_logps), else None
    labels: torch.Tensor  # (B, C)
    mask: torch.Tensor  # (B, C): the tokens of the distillation term (not those of a row the teacher could not give)
    stats: dict[str, float]
    completion_mask: torch.Tensor  # (B, C): every completion token (terms without the teacher: a CE)


def live_terms(divergence, temperature: float, with_logps: bool = False):
    """The per-position function of a live teacher: divergence(log q, log p) over the vocabulary [, log q(label)]."""
    def terms(s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor):
        values = (divergence(*log_probs_pair(s, t, temperature)),)
        return values + (per_token_logps(s, labels),) if with_logps else values
    return terms


def topk_terms(divergence, temperature: float, with_logps: bool = False, rest_floor: float = 0.0):
    """The same from a teacher's top-k: divergence(log q̄, log p̄) of both coarsened to the k ids and a rest (`coarsen`)."""
    def terms(s: torch.Tensor, _, labels: torch.Tensor, ids: torch.Tensor, logps: torch.Tensor):
        log_p, log_q = coarsen(s / temperature, ids, logps, rest_floor=rest_floor)
        values = (divergence(log_q, log_p),)
        return values + (per_token_logps(s, labels),) if with_logps else values
    return terms


def teacher_student_terms(policy, teacher, rows: list[dict], prompts: list[str], ids: list[list[int]], params, method: str,
                          divergence, *, served_teacher=None, teacher_topk: TopkSignal | None = None,
                          with_logps: bool = False) -> DistillTerms:
    """divergence(log q, log p) (B, C) of student and teacher at `params.temperature` on the completion `ids`, by `params.signal`.

    `divergence` is a `*_from_log_probs` form (`prefdistill.losses.divergences`), which takes either pair:
    live: both over the vocabulary, the teacher run now. topk: both coarsened to the top-k that
    `teacher_topk` (the cache's `TopkSignal`) holds for these tokens and a rest bucket (`coarsen`); the
    cache was made at this temperature. served: coarsened likewise to the top-k `served_teacher` gives
    now (`served_batch`). A row whose cached or served top-k could not be had is out of `mask`
    (`completion_mask` keeps it). With `with_logps`, also the student's per-token log-probs (a CE term).
    """
    chunk = logits_chunk(policy)
    if params.signal in ("topk", "served"):
        if params.signal == "topk":
            s, labels, mask, t_ids, t_logps, stats = cached_topk(policy, teacher_topk, prompts, ids, method)
        else:
            s, labels, mask, top, stats = served_batch(policy, served_teacher, rows, prompts, ids, params, method)
            t_ids, t_logps = top.ids, top.logprobs
        every = (labels != IGNORE_INDEX).to(mask.dtype)
        values = chunked_positions(topk_terms(divergence, params.temperature, with_logps), s, aligned=(labels, t_ids, t_logps),
                                   chunk=chunk, active=every.bool())
        return DistillTerms(values[0], values[1] if with_logps else None, labels, mask, stats, every)
    if teacher is None:
        raise ValueError(f"{method} with signal: live needs the teacher in the training loop (or signal: topk and a "
                         "cache, or signal: served and a server)")
    if isinstance(teacher, AlignedTeacher):  # another tokenizer (or vocabulary: aligned): compared on the aligned positions
        return aligned_terms(policy, teacher, prompts, ids, divergence, params.temperature, with_logps)
    s, t, labels, mask = paired_states(policy, teacher, prompts, ids)
    values = chunked_positions(live_terms(divergence, params.temperature, with_logps), s, teacher=t, aligned=(labels,),
                               chunk=chunk, active=mask.bool())
    return DistillTerms(values[0], values[1] if with_logps else None, labels, mask, {"tokens_teacher_scored": float(mask.sum())},
                        mask)


def served_batch(policy, teacher, rows: list[dict], prompts: list[str], ids: list[list[int]], params, method: str):
    """(student side with grad (`student_states`), labels (B, C), mask (B, C), the teacher's `ServedTopk` of the same tokens, stats).

    `teacher` is the served teacher (the `served_teacher` need, `prefdistill.signal.served`), asked now
    for its top-`params.k` at `params.temperature` at exactly the completion tokens `ids`. A row
    it could not give is out of the mask returned (`top.failed`), counted in the stats.
    """
    if teacher is None:
        raise ValueError(f"{method} with signal: served needs the served teacher (the served_teacher need, which the "
                         "pipeline loads with the teacher's backend)")
    s, labels, mask = student_states(policy, prompts, ids)
    row_ids = [str(rows[i % len(rows)].id or f"row {i}") for i in range(len(prompts))]  # f-distill: each row twice
    aligned = {"shared": False, "auto": None, "aligned": True}[getattr(params, "vocabulary", "auto")]
    top = served_topk(teacher, prompts, ids, params.k, tokenizer=policy.tokenizer, temperature=params.temperature,
                      row_ids=row_ids, aligned=aligned).to(mask.device)
    ok = ~top.failed
    if top.mask.shape != mask.shape or bool((top.mask[ok] > mask[ok]).any()) or (
            top.spans is None and not torch.equal(top.mask[ok], mask[ok])):
        raise ValueError(f"{method}: the served teacher's top-k does not cover the completion tokens it was asked for")
    completion = mask
    mask = top.mask.to(mask.dtype)
    stats = {"tokens_teacher_scored": float(mask.sum()), "topk_teacher_mass": masked_mean(top.logprobs.exp().sum(-1), mask).item(),
             "count_signal_failed_rows": float(top.failed.sum())}
    if top.spans is not None:  # rows read by character offset (a server of another tokenizer): positions paired
        stats.update(tokens_aligned=float(mask.sum()), tokens_completion=float((completion * ok[:, None]).sum()))
    return s, labels, mask, top, stats


def cached_topk(policy, signal: TopkSignal | None, prompts: list[str], ids: list[list[int]], method: str):
    """(student side with grad (`student_states`), labels (B, C), mask (B, C), teacher ids (B, C, k), log-probs (B, C, k), stats).

    The teacher's side is what `signal` (`build_topk_cache`'s) holds for these prompts and
    completion tokens `ids`; it must cover exactly those tokens, but for a row it holds no
    top-k for (an empty record: the teacher could not give it), which leaves the mask.
    """
    if signal is None:
        raise ValueError(f"{method} with signal: topk trains from cached teacher top-k: build the cache for these rows first "
                         "(prefdistill.signal.topk_cache.build_topk_cache, whose TopkSignal the loss takes as teacher_topk; "
                         "the pipeline does it before training)")
    s, labels, mask = student_states(policy, prompts, ids)
    try:
        t_ids, t_logps, t_mask = signal.lookup(prompts, ids)  # (B, C, k), (B, C, k), (B, C)
    except KeyError as e:  # records are keyed by prompt and tokens: other text, tokenizer or settings find none
        raise ValueError(f"the cached teacher top-k ({signal.path}) does not cover these rows' completion tokens: it was "
                         f"built for other text or settings ({e.args[0]}); build it for the rows trained on") from None
    t_mask = t_mask.to(mask.device)
    ok = t_mask.sum(-1) > 0  # (B,): a row the teacher could not give has an empty record (prefdistill.signal.topk_cache)
    if not torch.equal(t_mask[ok], mask[ok]):
        raise ValueError(f"the cached teacher top-k ({signal.path}) does not cover these rows' completion "
                         "tokens; delete the file to recompute it")
    t_ids, t_logps = t_ids.to(mask.device), t_logps.to(mask.device)
    mask = mask * ok[:, None].to(mask.dtype)  # the failed rows leave the distillation term
    # A position with no valid slot (an aligned cache's student position paired with no teacher position) has no term.
    mask = mask * (t_logps > float("-inf")).any(-1).to(mask.dtype)
    mass = masked_mean(t_logps.exp().sum(-1), mask)
    stats = {"topk_teacher_mass": mass.item(), "count_signal_failed_rows": float((~ok).sum())}
    return s, labels, mask, t_ids, t_logps, stats
