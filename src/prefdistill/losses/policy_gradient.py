"""MiniLLM's reverse-KL policy gradient (Gu et al. 2024, "MiniLLM", §2.2, Eq. 2–5).

    per_pos = minillm_loss(student_logits, teacher_logits, tokens, mask, importance=w)  # (B, T)
    loss = (per_pos * mask).sum() / mask.sum()
    per_pos = minillm_loss_from_log_probs(log_q, log_p, token_log_q, token_log_p, mask)   # the same from log-probs
    per_pos = minillm_loss_from_terms(single_step_kl, token_log_q, token_log_p, mask)     # from per-position terms

The sequence-level objective is L(θ) = KL(q_θ ‖ p) over completions y ~ q_θ. With
per-step rewards r_t = log p(y_t | y_<t) − log q_θ(y_t | y_<t), its gradient splits into
  single-step part:  Σ_t ∇ KL(q_θ(·|y_<t) ‖ p(·|y_<t))          (exact over the vocabulary)
  long-term part:   −Σ_t R_{t+1} ∇ log q_θ(y_t | y_<t),  R_{t+1} = mean of r_t' over t' > t
(length-normalised returns). Teacher-mixed sampling y_t ~ p̃ = α·p + (1 − α)·q_θ adds the
per-token importance weight w_t = q_θ(y_t) / p̃(y_t) to both parts.
"""
from __future__ import annotations

import torch

from prefdistill.losses.divergences import kl_from_log_probs, log_probs_pair


def normalized_future_returns(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """R_{t+1} = (Σ_{t' > t} r_t') / #{t' > t}, over masked positions; 0 where nothing follows.

    Args: rewards, mask: (B, T). Returns (B, T).
    """
    m = mask.to(rewards.dtype)
    r = rewards * m
    after_sum = r.flip(-1).cumsum(-1).flip(-1) - r  # Σ over t' > t
    after_cnt = m.flip(-1).cumsum(-1).flip(-1) - m
    return torch.where(after_cnt > 0, after_sum / after_cnt.clamp(min=1), torch.zeros_like(after_sum))


def minillm_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *,
                 importance: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Per-position surrogate whose gradient is MiniLLM's reverse-KL policy gradient.

    Args:
        student_logits, teacher_logits: (B, T, V), position t predicting tokens[:, t].
        tokens: (B, T) sampled token ids; mask: (B, T) 1 on sampled tokens.
        importance: (B, T) weights q_θ(y_t)/p̃(y_t) for teacher-mixed samples (None: all 1).
    Returns (B, T): w_t·KL(q_t ‖ p_t) − w_t·R_{t+1}·log q_θ(y_t), zero off the mask. The value
    of the second term is not a divergence; only its gradient is meaningful.
    """
    log_q, log_p = log_probs_pair(student_logits, teacher_logits, temperature)
    safe = tokens.masked_fill(mask == 0, 0).unsqueeze(-1)
    tok_q = log_q.gather(-1, safe).squeeze(-1)
    tok_p = log_p.gather(-1, safe).squeeze(-1)
    return minillm_loss_from_log_probs(log_q, log_p, tok_q, tok_p, mask, importance=importance)


def minillm_loss_from_log_probs(log_q: torch.Tensor, log_p: torch.Tensor, token_log_q: torch.Tensor, token_log_p: torch.Tensor,
                                mask: torch.Tensor, *, importance: torch.Tensor | None = None) -> torch.Tensor:
    """`minillm_loss` from log-probs: the single-step KL(q ‖ p) over any outcomes, the returns from the sampled tokens.

    Args:
        log_q, log_p: (B, T, K) student (with grad) and teacher log-probs over one set of outcomes:
            the vocabulary, or the k + 1 of a teacher's top-k (`prefdistill.losses.coarsen`), where
            the single-step part is the coarsened reverse KL, a lower bound, equal when k = V.
        token_log_q: (B, T) the student's log q_θ(y_t), with grad; token_log_p: (B, T) the
            teacher's log p(y_t), exact even where y_t is not among a top-k (a server's echo gives it).
        mask, importance: as in `minillm_loss`. Returns (B, T).
    """
    return minillm_loss_from_terms(kl_from_log_probs(log_q, log_p), token_log_q, token_log_p, mask, importance=importance)


def minillm_loss_from_terms(single_step_kl: torch.Tensor, token_log_q: torch.Tensor, token_log_p: torch.Tensor,
                            mask: torch.Tensor, *, importance: torch.Tensor | None = None) -> torch.Tensor:
    """`minillm_loss` from its per-position terms, which can be computed a chunk of positions at a time.

    Args:
        single_step_kl: (B, T) KL(q_θ(·|y_<t) ‖ p(·|y_<t)) with grad, over the vocabulary or coarsened.
        token_log_q, token_log_p, mask, importance: as in `minillm_loss_from_log_probs`. Returns (B, T):
        w_t·KL_t − w_t·R_{t+1}·log q_θ(y_t) (Gu et al. 2024, Eq. 5), zero off the mask; the returns
        R couple the positions of a row, so they are formed here, after the per-position terms.
    """
    returns = normalized_future_returns((token_log_p - token_log_q).detach(), mask)
    w = torch.ones_like(token_log_q) if importance is None else importance.to(token_log_q.dtype)
    per_pos = w * single_step_kl - (w * returns) * token_log_q
    return per_pos * mask.to(per_pos.dtype)
