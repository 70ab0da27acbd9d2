"""Word-level KD: forward KL to the teacher's next-token distribution on target prefixes.

Hinton et al. 2015; Kim & Rush 2016 (word-level KD). Loss per target token:
T²·KL(p_T(·|x, y_<t) ‖ q_T(·|x, y_<t)) at temperature T (the T² keeps gradient sizes
independent of T), plus an optional cross-entropy on the target itself.

`signal: topk` trains from the teacher's top-k log-probs, cached once before training
(`prefdistill.signal.topk_cache`, the `teacher_topk` need), so the teacher is not loaded for
training; the KL is then the exact one of the two distributions coarsened to the k ids
and one bucket for the rest (`topk_forward_kl`), equal to the full one when k ≥ V.
`signal: served` asks the teacher's backend (a server) for the same top-k at every step.
"""
from __future__ import annotations

from dataclasses import dataclass

from prefdistill.config.typed import NON_NEGATIVE, POSITIVE, opt
from prefdistill.losses import kl_from_log_probs
from prefdistill.methods.common import TeacherSignal, completion_ids, teacher_student_terms
from prefdistill.methods.registry import register
from prefdistill.models.logprobs import masked_mean


def forward_kl_of(log_q, log_p):
    """KL(p ‖ q) from (log q, log p), as the other divergences take them."""
    return kl_from_log_probs(log_p, log_q)


@dataclass
class KDParams(TeacherSignal):
    temperature: float = opt(1.0, "softmax temperature T of both distributions (the loss is scaled by T²)", POSITIVE)
    ce_weight: float = opt(0.0, "weight of the hard-label cross-entropy on the target", NON_NEGATIVE)

    def requirements(self) -> tuple[str, set[str]]:
        return "targets", {self.teacher_need()}


@register("kd", consumes="targets", params=KDParams, needs=("teacher",), label="KD",
          summary="forward KL to the teacher's token distributions on the reference prefixes", family="kd")
def kd(policy, rows: list[dict], params: KDParams, *, teacher=None, served_teacher=None, teacher_topk=None):
    """T²·mean over target tokens of KL(p ‖ q) (coarsened to the top k with topk / served), + ce_weight·CE."""
    prompts = [r.prompt for r in rows]
    ids = completion_ids(policy, [r.target for r in rows])
    lp = teacher_student_terms(policy, teacher, rows, prompts, ids, params, "kd", forward_kl_of, served_teacher=served_teacher,
                               teacher_topk=teacher_topk, with_logps=params.ce_weight > 0)
    kl = masked_mean(lp.divergence, lp.mask) * params.temperature ** 2
    stats = {"forward_kl": kl.item(), **lp.stats}
    loss = kl
    if params.ce_weight > 0:
        ce = -masked_mean(lp.logps, lp.completion_mask)  # every row, failed ones too
        loss = loss + params.ce_weight * ce
        stats["ce"] = ce.item()
    return loss, stats
