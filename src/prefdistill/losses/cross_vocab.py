"""Two next-token distributions over different vocabularies, compared on the tokens they share [ours].

    log_q, log_p = shared_outcomes(student_logits, teacher_logits, student_ids, teacher_ids, temperature=1.0)
    kl = kl_from_log_probs(log_p, log_q)            # any `*_from_log_probs` divergence takes the pair

Student q over V_s tokens and teacher p over V_t tokens, at a prefix both read as the same text
(`prefdistill.models.alignment`), are mapped onto one outcome space: the M tokens of both
vocabularies that stand for the same text (`prefdistill.models.vocab_map`), each its own outcome,
and one outcome "any other token" per side:

    q̄_m = q(student_ids[m]),  q̄_rest = 1 − Σ_m q̄_m;     p̄_m = p(teacher_ids[m]),  p̄_rest = 1 − Σ_m p̄_m.

Each is the image of its distribution under a partition of its own vocabulary, and a divergence of
the two images is an exact divergence of two distributions over M + 1 outcomes. It is exact for:
- one vocabulary: the ids are every token with itself, no rest remains, and the value equals the
  same-vocabulary divergence term for term (the columns are the same ones; tested);
- the shared tokens: each is compared exactly, and what the value cannot see is only how each
  side spreads its rest mass over its own unshared tokens (the rest outcomes are compared as
  one); as the shared tokens carry more of both sides' mass, the rest outcomes shrink and so
  does what is left out.
The rest outcome is a log-sum-exp over the unshared logits, exact however small; a side whose
vocabulary is all shared has no rest (−inf, no mass), and when both sides are all shared no rest
column is added at all. Derivation: docs/derivations.md, "Token-level distillation across tokenizers".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def _rest(log_probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(..., 1): log of the mass outside `ids` (−inf when `ids` cover the vocabulary)."""
    vocab = log_probs.shape[-1]
    if ids.numel() >= vocab:
        return log_probs.new_full((*log_probs.shape[:-1], 1), NEG_INF)
    outside = torch.ones(vocab, dtype=torch.bool, device=log_probs.device)
    outside[ids.to(log_probs.device)] = False
    return log_probs[..., outside].logsumexp(-1, keepdim=True)


def shared_outcomes(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_ids: torch.Tensor,
                    teacher_ids: torch.Tensor, *, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q̄, log p̄): the student's and the teacher's next-token distributions at `temperature` over the M shared tokens
    and one rest outcome (see the module doc), float32 at least.

    Args: student_logits (..., V_s); teacher_logits (..., V_t), the same leading shape; student_ids, teacher_ids (M,)
    int64, distinct on each side, paired by position (`shared_tokens`). Returns (..., M + 1) each, or (..., M) when both
    id lists cover their vocabularies. Gradients flow to the student's logits only.
    """
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} must "
                         "share their leading (position) shape")
    if student_ids.shape != teacher_ids.shape or student_ids.dim() != 1:
        raise ValueError(f"shared ids must be two (M,) lists, got {tuple(student_ids.shape)} and {tuple(teacher_ids.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float32 at least; float64 stays float64
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, -1)
    log_p = F.log_softmax(teacher_logits.to(dtype) / temperature, -1).detach()
    s_ids, t_ids = student_ids.to(log_q.device), teacher_ids.to(log_p.device)
    shared_q, shared_p = log_q.index_select(-1, s_ids), log_p.index_select(-1, t_ids).to(log_q.device)
    if s_ids.numel() >= log_q.shape[-1] and t_ids.numel() >= log_p.shape[-1]:
        return shared_q, shared_p  # one vocabulary, every token shared: no rest outcome
    return (torch.cat([shared_q, _rest(log_q, s_ids)], -1),
            torch.cat([shared_p, _rest(log_p, t_ids).to(log_q.device)], -1))
