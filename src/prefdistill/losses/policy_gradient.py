"""MiniLLM's reverse-KL policy gradient (Gu et al. 2024, "MiniLLM", §2.2, Eq. 2–5).

    per_pos = minillm_loss(student_logits, teacher_logits, tokens, mask, importance=w)  # (B, T)
    loss = (per_pos * mask).sum() / mask.sum()

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
    returns = normalized_future_returns((tok_p - tok_q).detach(), mask)
    w = torch.ones_like(tok_q) if importance is None else importance.to(tok_q.dtype)
    single = kl_from_log_probs(log_q, log_p)
    per_pos = w * single - (w * returns) * tok_q
    return per_pos * mask.to(per_pos.dtype)
