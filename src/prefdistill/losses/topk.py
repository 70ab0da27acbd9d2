"""Teacher and student coarsened to the teacher's top-k ids, and the forward KL between them [ours].

    log_p, log_q = coarsen(student_logits, teacher_topk_ids, teacher_topk_logprobs)   # (B, T, k + 1) each
    kl = topk_forward_kl(student_logits, teacher_topk_ids, teacher_topk_logprobs)     # (B, T)

With only the teacher's k most likely ids and their log-probs (a cache made once, or a
server's `top_logprobs`), the full distributions are unknown, but both distributions
coarsened to k + 1 outcomes (the k ids and "every other token") are exact, and so is any
divergence between them: `prefdistill.losses.divergences`' `*_from_log_probs` forms take the
coarsened pair as they take full ones. Every divergence there is an f-divergence, so the
coarsened value never exceeds the full one and equals it when the ids cover the vocabulary.
"""
from __future__ import annotations

import torch

from prefdistill.losses.divergences import kl_from_log_probs

NEG_INF = float("-inf")


def coarsen(student_logits: torch.Tensor, teacher_topk_ids: torch.Tensor, teacher_topk_logprobs: torch.Tensor, *,
            rest_floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p̄, log q̄), (B, T, k + 1) each: teacher and student over the k teacher ids and one bucket for the rest.

    p̄_i = exp(teacher_topk_logprobs_i), p̄_rest = max(0, 1 − Σ_i p̄_i); q = softmax(student_logits),
    q̄_i = q at the same ids, q̄_rest = 1 − Σ_i q̄_i; slot k is the rest bucket. Both are the
    images of p and q under one partition of the vocabulary, so for any f-divergence D (KL,
    reverse KL, TV, JS, JSD_β, skew KL), D(p̄ ‖ q̄) ≤ D(p ‖ q) (the data-processing inequality),
    with equality when the ids cover the vocabulary. The construction is ours.

    Numerically safe where `topk_forward_kl` needs it:
    - log q̄_rest is the log-sum-exp of the student logits outside the ids, exact however small;
    - where the ids cover the whole vocabulary (k = V) there is no rest: both rest slots are
      -inf (p̄_rest from rounded log-probs is dropped too), with finite gradients;
    - a slot whose log-prob is -inf is padding, not an outcome: its id (any id, repeats
      allowed) stays in the rest bucket and both of its slots are -inf (a served teacher's
      ids that the student's vocabulary lacks are stored as (0, -inf), `prefdistill.signal.topk_cache`).
    Outcomes of probability 0 are -inf; the divergences count them as 0·log 0 = 0.

    p̄_rest is known only to the precision of the stored log-probs (about 1e-7 in float32,
    1e-3 in float16, absolute). A divergence weighted by p (forward KL, JSD_β and skew KL
    with a share of q in the mixture) barely feels that, but the pure reverse KL (JSD_β at
    β = 1, skew reverse KL at α = 0) reads log p̄_rest weighted by q̄_rest, so where the
    teacher's rest mass is below that precision its value is off, and +inf where p̄_rest
    rounds to 0 while the student keeps mass outside the ids. `rest_floor` > 0 clamps p̄_rest from
    below (where there is a rest at all), so such a reverse KL stays finite at the price of a bias
    of that size (MiniLLM with a served teacher: `prefdistill.methods.minillm`).

    Temperature is the caller's business, as for the other losses: the log-probs are taken
    as given. A cache holds log-probs at the temperature it was made with (1 by default,
    `prefdistill.signal.topk_cache`); to distil at temperature T, make the cache at T and pass
    student_logits / T. The teacher's log-probs are constants (no gradient flows to them).

    Args: student_logits (B, T, V); teacher_topk_ids (B, T, k) int64, distinct at each position
    apart from padding; teacher_topk_logprobs (B, T, k). Returns log p̄, log q̄ (B, T, k + 1), float32
    (float64 for float64 logits).
    """
    if teacher_topk_ids.shape != teacher_topk_logprobs.shape or teacher_topk_ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"top-k ids {tuple(teacher_topk_ids.shape)} and log-probs {tuple(teacher_topk_logprobs.shape)} must "
                         f"both be (B, T, k) over student logits {tuple(student_logits.shape)}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float32 at least; float64 stays float64
    logits = student_logits.to(dtype)
    ids = teacher_topk_ids.long()
    log_p = teacher_topk_logprobs.to(dtype)
    log_z = torch.logsumexp(logits, -1)  # (B, T)
    valid = log_p > NEG_INF  # (B, T, k): padding slots are no outcome
    # Padded slots are pointed at the position's most likely id before the scatter, so a repeated id is written once.
    best = ids.gather(-1, log_p.argmax(-1, keepdim=True))  # (B, T, 1)
    in_topk = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, torch.where(valid, ids, best), True)  # (B, T, V)
    in_topk.logical_and_(valid.any(-1, keepdim=True))  # a position with no valid slot keeps every token in the rest
    covered = in_topk.all(-1, keepdim=True)  # (B, T, 1): no token is left for the rest bucket
    # Covered rows keep every logit (a log-sum-exp over nothing but -inf has NaN gradients); their slot is -inf below.
    outside = logits.masked_fill(in_topk & ~covered, NEG_INF)  # (B, T, V)
    log_q_rest = torch.logsumexp(outside, -1, keepdim=True) - log_z.unsqueeze(-1)  # (B, T, 1)
    log_q_top = logits.gather(-1, ids) - log_z.unsqueeze(-1)  # (B, T, k)
    p_rest = (1.0 - log_p.exp().sum(-1, keepdim=True)).clamp(min=rest_floor)  # (B, T, 1)
    log_p_bar = torch.cat([log_p, torch.where(covered, NEG_INF, p_rest.log())], -1)
    log_q_bar = torch.cat([torch.where(valid, log_q_top, NEG_INF), torch.where(covered, NEG_INF, log_q_rest)], -1)
    return log_p_bar, log_q_bar


def topk_forward_kl(student_logits: torch.Tensor, teacher_topk_ids: torch.Tensor, teacher_topk_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p̄ ‖ q̄) between teacher and student coarsened to the k teacher ids plus one bucket for the rest (`coarsen`).

        KL = Σ_i p_i (log p_i − log q_i) + p_rest (log p_rest − log q_rest),   0·log 0 = 0.

    A lower bound of the full forward KL (coarsening cannot increase a KL divergence: the
    data-processing inequality; for one merged bucket it is the log-sum inequality), equal to
    `forward_kl` with finite values and gradients when the ids cover the vocabulary (k = V).
    Temperature and padding slots (log-prob -inf) as in `coarsen`. The construction is ours.

    Args: student_logits (B, T, V); teacher_topk_ids (B, T, k) int64, distinct at each position
    apart from padding; teacher_topk_logprobs (B, T, k). Returns (B, T).
    """
    log_p, log_q = coarsen(student_logits, teacher_topk_ids, teacher_topk_logprobs)
    return kl_from_log_probs(log_p, log_q)
