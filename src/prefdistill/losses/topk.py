"""The forward KL that a teacher's top-k log-probs alone determine [ours].

    kl = topk_forward_kl(student_logits, teacher_topk_ids, teacher_topk_logprobs)   # (B, T)

With only the teacher's k most likely ids and their log-probs (a cache made once, or a
server's `top_logprobs`), the full KL(p ‖ q) is unknown, but the KL between the two
distributions coarsened to k + 1 outcomes (the k ids and "every other token") is exact.
It equals the full forward KL when the ids cover the vocabulary and never exceeds it.
"""
from __future__ import annotations

import torch


def topk_forward_kl(student_logits: torch.Tensor, teacher_topk_ids: torch.Tensor, teacher_topk_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p̄ ‖ q̄) between teacher and student coarsened to the k teacher ids plus one bucket for the rest.

    p_i = exp(teacher_topk_logprobs_i), p_rest = max(0, 1 − Σ_i p_i); q = softmax(student_logits),
    q_i at the same ids, q_rest = 1 − Σ_i q_i. Then

        KL = Σ_i p_i (log p_i − log q_i) + p_rest (log p_rest − log q_rest),   0·log 0 = 0.

    log q_rest is the log-sum-exp of the student logits outside the ids, so it stays exact
    however small q_rest is; where the ids cover the whole vocabulary there is no rest
    bucket and the term is 0, so k = V gives `forward_kl` with finite values and gradients.
    Coarsening cannot increase a KL divergence (the data-processing inequality; for one merged
    bucket it is the log-sum inequality), so this is a lower bound of the full forward KL.
    The construction is ours.

    Temperature is the caller's business, as for the other losses: the log-probs are taken
    as given. A cache holds log-probs at the temperature it was made with (1 by default,
    `prefdistill.teacher_signal`); to distil at temperature T, make the cache at T and pass
    student_logits / T.

    A slot whose log-prob is -inf is padding, not an outcome: its id (any id, repeats allowed)
    stays in the rest bucket, so padded slots change nothing (a served teacher's ids that the
    student's vocabulary lacks are stored as (0, -inf), `prefdistill.teacher_signal`).

    Args: student_logits (B, T, V); teacher_topk_ids (B, T, k) int64, distinct at each position
    apart from padding; teacher_topk_logprobs (B, T, k). Returns (B, T).
    """
    if teacher_topk_ids.shape != teacher_topk_logprobs.shape or teacher_topk_ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"top-k ids {tuple(teacher_topk_ids.shape)} and log-probs {tuple(teacher_topk_logprobs.shape)} must "
                         f"both be (B, T, k) over student logits {tuple(student_logits.shape)}")
    logits = student_logits.float()
    ids = teacher_topk_ids.long()
    log_z = torch.logsumexp(logits, -1)  # (B, T)
    log_q = logits.gather(-1, ids) - log_z.unsqueeze(-1)  # (B, T, k)
    log_p = teacher_topk_logprobs.float()
    p = log_p.exp()  # (B, T, k)
    head = (p * (torch.where(p > 0, log_p, 0.0) - log_q)).sum(-1)  # an id the teacher gives no mass adds 0
    # A slot with log-prob -inf is padding (an id the teacher gave that the student's vocabulary lacks, stored as
    # (0, -inf)): it is no outcome of its own, so its id stays in the rest bucket. Padded slots are pointed at
    # the position's most likely id before the scatter, so a repeated id is written once, with one value.
    valid = log_p > float("-inf")  # (B, T, k)
    best = ids.gather(-1, log_p.argmax(-1, keepdim=True))  # (B, T, 1)
    in_topk = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, torch.where(valid, ids, best), True)  # (B, T, V)
    in_topk.logical_and_(valid.any(-1, keepdim=True))  # a position with no valid slot keeps every token in the rest
    covered = in_topk.all(-1)  # (B, T): no token is left for the rest bucket
    # Covered rows keep every logit (a log-sum-exp over nothing but -inf has NaN gradients); their term is 0 below.
    outside = logits.masked_fill(in_topk & ~covered.unsqueeze(-1), float("-inf"))  # (B, T, V)
    log_q_rest = torch.logsumexp(outside, -1) - log_z  # (B, T)
    p_rest = (1.0 - p.sum(-1)).clamp(min=0.0)  # (B, T)
    tail = torch.xlogy(p_rest, p_rest) - p_rest * log_q_rest
    return head + torch.where(covered, 0.0, tail)
