"""f-distill: step-wise total variation or Jensen–Shannon divergence (Wen et al. 2023, ACL).

The sequence-level f-divergence is decomposed into per-step divergences between the
teacher's and student's next-token distributions, on prefixes sampled from both models:
the teacher's samples (the teacher side of the pairs: the teacher is frozen, so these
are exact samples of p) and fresh samples of the current student.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prefdistill.logprobs import masked_mean
from prefdistill.losses import js_divergence, total_variation
from prefdistill.methods.common import completion_ids, paired_logits, teacher_side
from prefdistill.methods.registry import register
from prefdistill.typed import AT_LEAST_1, POSITIVE, opt
from prefdistill.rollout import rollout

DIVERGENCES = {"tv": total_variation, "js": js_divergence}


@dataclass
class FDistillParams:
    divergence: Literal["tv", "js"] = opt("tv", "per-step total variation or Jensen–Shannon divergence")
    temperature: float = opt(1.0, "softmax temperature of both distributions", POSITIVE)
    student_prefixes: bool = opt(True, "also on prefixes the current student samples (off: teacher samples only)")
    max_new_tokens: int = opt(48, "length of the student's samples", AT_LEAST_1)


@register("fdistill", consumes="pairs", params=FDistillParams, needs=("teacher", "teacher_samples"), label="f-distill",
          summary="step-wise TV or JS divergence on teacher- and student-sampled prefixes")
def fdistill(policy, rows: list[dict], params: FDistillParams, *, teacher):
    """Mean per-step divergence over the tokens of teacher samples and of fresh student samples."""
    prompts = [r["prompt"] for r in rows]
    ids = completion_ids(policy, [teacher_side(r) for r in rows])
    stats = {}
    if params.student_prefixes:
        sampled = rollout(policy, prompts, max_new_tokens=params.max_new_tokens)
        ids, prompts = ids + sampled.completions, prompts + prompts
        stats["tokens_student_generated"] = float(sampled.n_tokens)
    s, t, _, mask = paired_logits(policy, teacher, prompts, ids)
    loss = masked_mean(DIVERGENCES[params.divergence](s, t, temperature=params.temperature), mask)
    return loss, {params.divergence: loss.item(), "tokens_teacher_scored": float(mask.sum()), **stats}
