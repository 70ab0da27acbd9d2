"""MiniLLM: reverse-KL distillation by policy gradient (Gu et al. 2024, ICLR, §2.2 and Alg. 1).

Per batch: sample completions from the teacher-mixed policy p̃ = α·p + (1 − α)·q_θ
(α = 0.2), score the sampled tokens under student and teacher, and follow the gradient
of `prefdistill.losses.minillm_loss` (single-step decomposition + length-normalised
returns, importance-weighted). The language-modelling term keeps the student close to
text: cross-entropy on the teacher's samples (the paper uses a pre-training corpus).
The paper's PPO-style clipping is not needed here: each sample is used for one update.

`signal: served` reads the teacher from its backend (a server, `prefdistill.signal.served`) instead
of training memory. The single-step reverse KL is then that of the two distributions
coarsened to the teacher's top-k ids and a rest bucket (`prefdistill.losses.coarsen`: a lower
bound, equal when k ≥ V). The per-token rewards use the teacher's log-prob of each sampled
token from the same reply as the top-k (the echo's `token_logprobs`, vLLM's entry for the
token itself), which is exact whether or not the token is among the k; the top-k alone would
know it only when it is. Teacher-mixed sampling needs the teacher's whole next-token
distribution at every generation step, which a server gives only for text already written,
so `mix_weight` must be 0 there (refused at config time).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from prefdistill.config.typed import AT_LEAST_1, HELD_OUT_SHARE, NON_NEGATIVE, POSITIVE, opt
from prefdistill.errors import ConfigError
from prefdistill.losses import coarsen, kl_from_log_probs, log_probs_pair, minillm_loss_from_terms, shared_outcomes
from prefdistill.losses.chunked import chunked_positions
from prefdistill.methods.common import ServedSignal, aligned_states, logits_chunk, paired_states, served_batch, teacher_side
from prefdistill.methods.registry import register
from prefdistill.models.alignment import AlignedTeacher
from prefdistill.models.logprobs import IGNORE_INDEX, masked_mean, per_token_logps
from prefdistill.models.rollout import canonical, rollout

# signal: served clamps the teacher's rest mass p̄_rest from below here. The reverse KL weighs
# log p̄_rest by the student's rest mass, and 1 − Σ of k float32 probabilities is known only to
# about k·6e-8: where rounding leaves no rest at all the KL would be +inf (`coarsen`).
REST_FLOOR = 1e-6


@dataclass
class MiniLLMParams(ServedSignal):
    mix_weight: float = opt(0.2, "α of teacher-mixed sampling (0 with signal: served)", HELD_OUT_SHARE)
    lm_weight: float = opt(1.0, "weight of the cross-entropy on the teacher's samples (0 turns it off)", NON_NEGATIVE)
    temperature: float = opt(1.0, "softmax temperature of both distributions", POSITIVE)
    max_new_tokens: int = opt(48, "length of the student's samples", AT_LEAST_1)

    def requirements(self) -> tuple[str, set[str]]:
        return "pairs", {self.teacher_need(), "teacher_samples"}

    def across_tokenizers_problem(self) -> str | None:
        """Teacher-mixed sampling draws tokens from the teacher's distribution over the student's vocabulary, which a teacher
        of another tokenizer has only on the shared tokens, at aligned prefixes: it is not done across tokenizers."""
        return "mix_weight: 0 (teacher-mixed sampling needs the teacher's distribution over the student's tokens)" \
            if self.mix_weight > 0 else None

    def check(self, cfg=None) -> None:
        if self.signal == "served" and self.mix_weight > 0:
            raise ConfigError(f"distill.params.mix_weight: {self.mix_weight:g} samples from the teacher-mixed policy, which needs "
                              "the teacher's whole next-token distribution at every generation step, but signal: served asks a "
                              "server for log-probs of text already written; set mix_weight: 0, or signal: live")


@register("minillm", consumes="pairs", params=MiniLLMParams, needs=("teacher", "teacher_samples"), label="MiniLLM",
          summary="reverse KL by policy gradient on teacher-mixed student samples, plus an LM term", family="kd", on_policy=True)
def minillm(policy, rows: list[dict], params: MiniLLMParams, *, teacher=None, served_teacher=None):
    """Policy-gradient surrogate of KL(q_θ ‖ p) averaged over sampled tokens, + lm_weight·CE."""
    prompts = [r.prompt for r in rows]
    params.check()  # a served teacher cannot mix into sampling
    if isinstance(teacher, AlignedTeacher) and params.mix_weight > 0:  # neither can one of another tokenizer
        raise ValueError(f"minillm with a teacher of another tokenizer needs {params.across_tokenizers_problem()}")
    sampled = rollout(policy, prompts, max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                      mix=None if isinstance(teacher, AlignedTeacher) else teacher, mix_weight=params.mix_weight)
    if params.signal == "served":  # the server tokenises the text itself: train on the ids it will see
        sampled = canonical(sampled, policy.tokenizer)
        pg, reward, scored = _served_policy_gradient(policy, served_teacher, rows, sampled, params)
    elif isinstance(teacher, AlignedTeacher):  # another tokenizer: the KL on the aligned positions, the rewards by span
        pg, reward, scored = _aligned_policy_gradient(policy, teacher, prompts, sampled, params)
    else:
        pg, reward, scored = _live_policy_gradient(policy, teacher, prompts, sampled, params)
    stats = {"policy_loss": pg.item(), "mean_reward": reward.item(), **scored, "tokens_student_generated": float(sampled.n_tokens)}
    loss = pg
    if params.lm_weight > 0:
        lm_tok, lm_mask = policy.completion_logps(prompts, [teacher_side(r) for r in rows])
        ce = -masked_mean(lm_tok, lm_mask)
        loss = loss + params.lm_weight * ce
        stats["lm_ce"] = ce.item()
    return loss, stats


def _live_terms(temperature: float):
    """Per position: the single-step KL(q ‖ p) and log q(y_t), log p(y_t) at `temperature` and at 1 (the reward)."""
    def terms(s: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor):
        log_q, log_p = log_probs_pair(s, t, temperature)
        safe = tokens.unsqueeze(-1)
        return (kl_from_log_probs(log_q, log_p), log_q.gather(-1, safe).squeeze(-1), log_p.gather(-1, safe).squeeze(-1),
                per_token_logps(s, tokens).detach(), per_token_logps(t, tokens))
    return terms


def _live_policy_gradient(policy, teacher, prompts: list[str], sampled, params: MiniLLMParams):
    """(policy-gradient loss, mean reward, teacher stats) with the teacher in memory, over the vocabulary."""
    s, t, labels, mask = paired_states(policy, teacher, prompts, sampled.completions)
    tokens = labels.clamp(min=0).masked_fill(mask == 0, 0)  # (B, C)
    single, tok_q, tok_p, log_q, log_p = chunked_positions(_live_terms(params.temperature), s, teacher=t, aligned=(tokens,),
                                                           chunk=logits_chunk(policy), active=mask.bool())
    weights = _importance(sampled, mask, tok_q)
    pg = masked_mean(minillm_loss_from_terms(single, tok_q, tok_p, mask, importance=weights), mask)
    reward = masked_mean(log_p - log_q, mask)
    # The teacher scores every sampled token twice: once while mixing, once for the loss.
    return pg, reward, {"tokens_teacher_scored": float(mask.sum()) + sampled.n_tokens}


def _aligned_terms(temperature: float, shared: tuple[list[int], list[int]]):
    """Per position: the single-step KL(q̄ ‖ p̄) over the shared tokens where `on` (0 elsewhere), log q(y_t) at
    `temperature` and at 1."""
    s_ids, t_ids = (torch.tensor(x, dtype=torch.long) for x in shared)

    def terms(s: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, on: torch.Tensor):
        log_q_bar, log_p_bar = shared_outcomes(s, t, s_ids, t_ids, temperature=temperature)
        log_q = F.log_softmax(s.float() / temperature, -1)
        return (torch.where(on, kl_from_log_probs(log_q_bar, log_p_bar), 0.0), log_q.gather(-1, tokens.unsqueeze(-1)).squeeze(-1),
                per_token_logps(s, tokens).detach())
    return terms


def _own_token_terms(temperature: float):
    """Per position of the teacher's own tokens: log p(y_t) at `temperature` and at 1."""
    def terms(t: torch.Tensor, _, tokens: torch.Tensor):
        return F.log_softmax(t.float() / temperature, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1), per_token_logps(t, tokens)
    return terms


def span_token_logps(rows, ids: list[list[int]], teacher_logps: torch.Tensor, student_logps: torch.Tensor) -> torch.Tensor:
    """(B, C): per student position, the teacher log-prob that makes each span's reward exact.

    A span (the same characters in both tokenizations, `RowAlignment.spans`) gets the reward
    log p(span) − log q(span) at its last student token and 0 at its others: this returns log q(y_t) there and, at the
    last token, log p(span) − (log q(span) − log q(y_last)). Positions in no span (after the alignment failed) get
    log q(y_t): no reward. Args: teacher_logps (B, C_t) on the teacher's own tokens; student_logps (B, C), both with
    completions at the right edge. With one tokenizer every span is one token and this is the teacher's log p(y_t).
    """
    out = student_logps.detach().clone()
    width, t_width = student_logps.shape[1], teacher_logps.shape[1]
    for b, (row, r) in enumerate(zip(ids, rows)):
        off, t_off = width - len(row), t_width - len(r.teacher_ids)
        for s0, s1, t0, t1 in r.spans:
            inner = out[b, off + s0:off + s1 - 1].sum()
            out[b, off + s1 - 1] = teacher_logps[b, t_off + t0:t_off + t1].sum().to(out.dtype) - inner
    return out


def _aligned_policy_gradient(policy, teacher: AlignedTeacher, prompts: list[str], sampled, params: MiniLLMParams):
    """(policy-gradient loss, mean reward, stats) with a teacher of another tokenizer (`aligned_states`): the single-step
    KL over the shared tokens at the paired positions, the rewards of whole spans (exact sequence log-probs)."""
    batch = aligned_states(policy, teacher, prompts, sampled.completions)
    tokens = batch.labels.clamp(min=0).masked_fill(batch.mask == 0, 0)  # (B, C)
    chunk = logits_chunk(policy)
    single, tok_q, log_q = chunked_positions(_aligned_terms(params.temperature, teacher.bridge.shared), batch.student,
                                             teacher=batch.teacher, aligned=(tokens, batch.paired), chunk=chunk,
                                             active=batch.mask.bool())
    own = batch.teacher_labels != IGNORE_INDEX
    with torch.no_grad():
        t_tok, t_tok1 = chunked_positions(_own_token_terms(params.temperature), batch.teacher_own,
                                          aligned=(batch.teacher_labels.clamp(min=0),), chunk=chunk, active=own)
    tok_p = span_token_logps(batch.rows, sampled.completions, t_tok.to(tok_q.device), tok_q)
    weights = _importance(sampled, batch.mask, tok_q)
    pg = masked_mean(minillm_loss_from_terms(single, tok_q, tok_p, batch.mask, importance=weights), batch.mask)
    reward = masked_mean(span_token_logps(batch.rows, sampled.completions, t_tok1.to(log_q.device), log_q) - log_q, batch.mask)
    return pg, reward, batch.stats


def _served_terms(temperature: float):
    """Per position: the single-step KL of both coarsened to the served top-k, log q(y_t) at `temperature` and at 1."""
    def terms(s: torch.Tensor, _, tokens: torch.Tensor, ids: torch.Tensor, logps: torch.Tensor):
        log_q = F.log_softmax(s.float() / temperature, -1)  # (1, n, V): the student's, as minillm_loss makes it
        log_p_bar, log_q_bar = coarsen(s / temperature, ids, logps, rest_floor=REST_FLOOR)  # (1, n, k + 1)
        return (kl_from_log_probs(log_q_bar, log_p_bar), log_q.gather(-1, tokens.unsqueeze(-1)).squeeze(-1),
                per_token_logps(s, tokens).detach())
    return terms


def _served_policy_gradient(policy, teacher, rows: list[dict], sampled, params: MiniLLMParams):
    """The same from a served teacher's top-k (the single-step KL, coarsened) and its log-probs of the sampled tokens.

    A row the teacher could not give is left out of the loss and the reward (`served_batch` masks it).
    A server of another tokenizer (rows read by character offset, `top.spans`): the KL at the paired positions, the
    policy gradient at every sampled token, the rewards of whole spans (`span_token_logps`)."""
    s, labels, paired, top, stats = served_batch(policy, teacher, rows, [r.prompt for r in rows], sampled.completions, params,
                                                 "minillm")
    mask = paired if top.spans is None else (labels != IGNORE_INDEX).to(paired.dtype) * (~top.failed)[:, None].to(paired.dtype)
    tokens = labels.clamp(min=0).masked_fill(mask == 0, 0)  # (B, C)
    single, token_log_q, log_q = chunked_positions(_served_terms(params.temperature), s, aligned=(tokens, top.ids, top.logprobs),
                                                   chunk=logits_chunk(policy), active=mask.bool())
    token_log_p = top.token_logps
    if top.spans is not None:  # a server's log-prob of each span of shared characters, the KL only where positions pair
        single = single * paired.to(single.dtype)
        token_log_p = span_token_logps(_served_spans(top.spans, sampled.completions), sampled.completions,
                                       top.token_logps, token_log_q)
    per_pos = minillm_loss_from_terms(single, token_log_q, token_log_p, mask, importance=_importance(sampled, mask, token_log_q))
    reward = masked_mean(token_log_p - log_q, mask)  # a server scores at temperature 1 only: token_log_q is log_q
    return masked_mean(per_pos, mask), reward, stats


class _SpanRow(NamedTuple):
    spans: tuple  # (s0, s1, t0, t1) as `RowAlignment.spans`
    teacher_ids: list[int]


def _served_spans(spans: tuple, completions: list[list[int]]) -> list[_SpanRow]:
    """A served batch's spans as `span_token_logps` reads them: each span's teacher log-prob sits at its last student
    token, so its 'teacher tokens' are that one position of the student's row; a row read exactly is one token a span."""
    out = []
    for row_spans, ids in zip(spans, completions):
        pairs = ((s0, s1, s1 - 1, s1) for s0, s1 in row_spans) if row_spans is not None else \
            ((j, j + 1, j, j + 1) for j in range(len(ids)))
        out.append(_SpanRow(tuple(pairs), list(ids)))
    return out


def _importance(sampled, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, C) importance weights q_θ(y_t) / p̃(y_t) of the sampled tokens, 0 off them."""
    weights = torch.zeros(mask.shape, dtype=like.dtype, device=like.device)
    for i, w in enumerate(sampled.importance):  # completions sit at the right edge of the batch
        if w:
            weights[i, -len(w):] = torch.tensor(w, dtype=like.dtype)
    return weights
