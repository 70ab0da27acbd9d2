"""GKD: generalised knowledge distillation (Agarwal et al. 2024, "On-policy distillation of LMs", Alg. 1).

Each batch is, with probability λ, completions freshly sampled from the current student
(on-policy), and otherwise the fixed dataset of teacher outputs (the teacher side of the
pairs). The loss is the generalised JSD_β between teacher and student next-token
distributions on those tokens; β = 0 is the forward KL, β = 1 the reverse KL (see
`prefdistill.losses.generalized_jsd` for the scaling convention).

`signal: topk` trains the off-policy part from the teacher's top-k log-probs at its own
samples, cached once before training, without the teacher in memory; the JSD_β is then that
of the two distributions coarsened to the k ids and a rest bucket (`prefdistill.losses.coarsen`),
a lower bound of the full one, equal when k ≥ V. The on-policy share needs the teacher to
score fresh samples, so it must be 0 there (refused at config time otherwise). `signal: served`
asks the teacher's backend (a server) for its top-k at every step instead, on the teacher's
samples and on the fresh ones alike, so the on-policy share may be anything there.
"""
from __future__ import annotations

from dataclasses import dataclass

import functools

import torch

from prefdistill.config.typed import AT_LEAST_1, POSITIVE, SHARE, opt
from prefdistill.losses import generalized_jsd_from_log_probs
from prefdistill.methods.common import TeacherSignal, completion_ids, teacher_side, teacher_student_terms
from prefdistill.methods.registry import register
from prefdistill.models.logprobs import masked_mean
from prefdistill.models.rollout import canonical, rollout


@dataclass
class GKDParams(TeacherSignal):
    beta: float = opt(0.5, "β of the generalised JSD (0: forward KL, 1: reverse KL)", SHARE)
    on_policy_fraction: float = opt(0.5, "λ: share of batches sampled by the current student (0 with signal: topk)", SHARE)
    temperature: float = opt(1.0, "softmax temperature of both distributions", POSITIVE)
    max_new_tokens: int = opt(48, "length of the student's samples", AT_LEAST_1)

    def samples_student(self) -> bool:
        """Whether training draws fresh student samples (on_policy_fraction)."""
        return bool(self.on_policy_fraction > 0)

    def requirements(self) -> tuple[str, set[str]]:
        return "pairs", {self.teacher_need(), "teacher_samples"}

    def check(self, cfg=None) -> None:
        self.refuse_fresh_samples("on_policy_fraction", self.on_policy_fraction)


@register("gkd", consumes="pairs", params=GKDParams, needs=("teacher", "teacher_samples"), label="GKD",
          summary="generalised JSD_β on student samples (share λ) or teacher samples", family="kd", on_policy=True)
def gkd(policy, rows: list[dict], params: GKDParams, *, teacher=None, served_teacher=None, teacher_topk=None):
    """Mean JSD_β over the tokens of an on-policy or a teacher-sampled batch (coarsened to the top k with topk / served)."""
    prompts = [r.prompt for r in rows]
    stats = {}
    on_policy = bool(torch.rand(()) < params.on_policy_fraction)  # the loop seeds and checkpoints torch's RNG
    if on_policy:
        params.check()  # a cached teacher cannot score the student's fresh samples
        sampled = rollout(policy, prompts, max_new_tokens=params.max_new_tokens, temperature=params.temperature)
        if params.signal == "served":  # the server tokenises the text itself: train on the ids it will see
            sampled = canonical(sampled, policy.tokenizer)
        ids = sampled.completions
        stats["tokens_student_generated"] = float(sampled.n_tokens)
    else:
        ids = completion_ids(policy, [teacher_side(r) for r in rows])
    jsd = functools.partial(generalized_jsd_from_log_probs, beta=params.beta)
    lp = teacher_student_terms(policy, teacher, rows, prompts, ids, params, "gkd", jsd, served_teacher=served_teacher,
                               teacher_topk=teacher_topk)
    loss = masked_mean(lp.divergence, lp.mask)
    return loss, {"jsd": loss.item(), "on_policy": float(on_policy), **lp.stats, **stats}
