"""MiniLLM: reverse-KL distillation by policy gradient (Gu et al. 2024, ICLR, §2.2 and Alg. 1).

Per batch: sample completions from the teacher-mixed policy p̃ = α·p + (1 − α)·q_θ
(α = 0.2), score the sampled tokens under student and teacher, and follow the gradient
of `prefdistill.losses.minillm_loss` (single-step decomposition + length-normalised
returns, importance-weighted). The language-modelling term keeps the student close to
text: cross-entropy on the teacher's samples (the paper uses a pre-training corpus).
The paper's PPO-style clipping is not needed here: each sample is used for one update.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prefdistill.logprobs import masked_mean, per_token_logps
from prefdistill.losses import minillm_loss
from prefdistill.methods.common import completion_ids, paired_logits, teacher_side
from prefdistill.methods.registry import register
from prefdistill.typed import AT_LEAST_1, HELD_OUT_SHARE, NON_NEGATIVE, POSITIVE, opt
from prefdistill.rollout import rollout


@dataclass
class MiniLLMParams:
    mix_weight: float = opt(0.2, "α of teacher-mixed sampling", HELD_OUT_SHARE)
    lm_weight: float = opt(1.0, "weight of the cross-entropy on the teacher's samples (0 turns it off)", NON_NEGATIVE)
    temperature: float = opt(1.0, "softmax temperature of both distributions", POSITIVE)
    max_new_tokens: int = opt(48, "length of the student's samples", AT_LEAST_1)


@register("minillm", consumes="pairs", params=MiniLLMParams, needs=("teacher", "teacher_samples"), label="MiniLLM",
          summary="reverse KL by policy gradient on teacher-mixed student samples, plus an LM term")
def minillm(policy, rows: list[dict], params: MiniLLMParams, *, teacher):
    """Policy-gradient surrogate of KL(q_θ ‖ p) averaged over sampled tokens, + lm_weight·CE."""
    prompts = [r["prompt"] for r in rows]
    sampled = rollout(policy, prompts, max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                      mix=teacher, mix_weight=params.mix_weight)
    s, t, labels, mask = paired_logits(policy, teacher, prompts, sampled.completions)
    weights = torch.zeros(mask.shape, dtype=s.dtype, device=s.device)
    for i, w in enumerate(sampled.importance):  # completions sit at the right edge of the batch
        if w:
            weights[i, -len(w):] = torch.tensor(w, dtype=s.dtype)
    pg = masked_mean(minillm_loss(s, t, labels.clamp(min=0), mask, importance=weights, temperature=params.temperature), mask)
    with torch.no_grad():
        log_q = per_token_logps(s, labels)
        log_p = per_token_logps(t, labels)
        reward = masked_mean(log_p - log_q, mask)
    # The teacher scores every sampled token twice: once while mixing, once for the loss.
    stats = {"policy_loss": pg.item(), "mean_reward": reward.item(), "tokens_teacher_scored": float(mask.sum()) + sampled.n_tokens,
             "tokens_student_generated": float(sampled.n_tokens)}
    loss = pg
    if params.lm_weight > 0:
        lm_tok, lm_mask = policy.completion_logps(prompts, [teacher_side(r) for r in rows])
        ce = -masked_mean(lm_tok, lm_mask)
        loss = loss + params.lm_weight * ce
        stats["lm_ce"] = ce.item()
    return loss, stats
