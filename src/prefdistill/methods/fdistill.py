"""f-distill: step-wise total variation or Jensen–Shannon divergence (Wen et al. 2023, ACL).

The sequence-level f-divergence is decomposed into per-step divergences between the
teacher's and student's next-token distributions, on prefixes sampled from both models:
the teacher's samples (the teacher side of the pairs: the teacher is frozen, so these
are exact samples of p) and fresh samples of the current student.

`signal: topk` trains on the teacher's samples from the teacher's top-k log-probs there,
cached once before training, without the teacher in memory; TV / JS are then those of the
two distributions coarsened to the k ids and a rest bucket (`prefdistill.losses.coarsen`),
lower bounds of the full ones, equal when k ≥ V. Student prefixes need the teacher to score
fresh samples, so `student_prefixes` must be off there (refused at config time otherwise).
`signal: served` asks the teacher's backend (a server) for its top-k at every step instead, on
both kinds of prefixes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prefdistill.config.typed import AT_LEAST_1, POSITIVE, opt
from prefdistill.losses import js_from_log_probs, total_variation_from_log_probs
from prefdistill.methods.common import TeacherSignal, completion_ids, teacher_side, teacher_student_terms
from prefdistill.methods.registry import register
from prefdistill.models.logprobs import masked_mean
from prefdistill.models.rollout import canonical, rollout

DIVERGENCES = {"tv": total_variation_from_log_probs, "js": js_from_log_probs}  # (log q, log p) -> (B, C)


@dataclass
class FDistillParams(TeacherSignal):
    divergence: Literal["tv", "js"] = opt("tv", "per-step total variation or Jensen–Shannon divergence")
    temperature: float = opt(1.0, "softmax temperature of both distributions", POSITIVE)
    student_prefixes: bool = opt(True, "also on prefixes the current student samples (off: teacher samples only; "
                                       "off with signal: topk)")
    max_new_tokens: int = opt(48, "length of the student's samples", AT_LEAST_1)

    def samples_student(self) -> bool:
        """Whether training draws fresh student samples (student_prefixes)."""
        return bool(self.student_prefixes)

    def requirements(self) -> tuple[str, set[str]]:
        return "pairs", {self.teacher_need(), "teacher_samples"}

    def check(self, cfg=None) -> None:
        self.refuse_fresh_samples("student_prefixes", self.student_prefixes)


@register("fdistill", consumes="pairs", params=FDistillParams, needs=("teacher", "teacher_samples"), label="f-distill",
          summary="step-wise TV or JS divergence on teacher- and student-sampled prefixes", family="kd", on_policy=True)
def fdistill(policy, rows: list[dict], params: FDistillParams, *, teacher=None, served_teacher=None, teacher_topk=None):
    """Mean per-step divergence over the tokens of teacher samples and of fresh student samples."""
    prompts = [r.prompt for r in rows]
    ids = completion_ids(policy, [teacher_side(r) for r in rows])
    stats = {}
    if params.student_prefixes:
        params.check()  # a cached teacher cannot score the student's fresh samples
        sampled = rollout(policy, prompts, max_new_tokens=params.max_new_tokens)
        if params.signal == "served":  # the server tokenises the text itself: train on the ids it will see
            sampled = canonical(sampled, policy.tokenizer)
        ids, prompts = ids + sampled.completions, prompts + prompts
        stats["tokens_student_generated"] = float(sampled.n_tokens)
    lp = teacher_student_terms(policy, teacher, rows, prompts, ids, params, "fdistill", DIVERGENCES[params.divergence],
                               served_teacher=served_teacher, teacher_topk=teacher_topk)
    loss = masked_mean(lp.divergence, lp.mask)
    return loss, {params.divergence: loss.item(), **lp.stats, **stats}
