"""DistiLLM: skew KL divergences (Ko et al. 2024, ICML, Eq. 3–4), α = 0.1 by default.

Skew forward KL(p ‖ α·p + (1 − α)·q) or skew reverse KL(q ‖ α·q + (1 − α)·p) on the
reference prefixes, and on a share of batches made of fresh student samples (the paper's
student-generated outputs). The paper grows that share adaptively from validation
loss with a replay buffer; here it is a fixed share, which keeps the loop unchanged.

`signal: topk` trains on the references from the teacher's top-k log-probs there, cached
once before training, without the teacher in memory; the skew KL is then that of the two
distributions coarsened to the k ids and a rest bucket (`prefdistill.losses.coarsen`), a
lower bound of the full one, equal when k ≥ V. Student samples need the teacher to score
them, so `student_fraction` must be 0 there (refused at config time otherwise). `signal: served`
asks the teacher's backend (a server) for its top-k at every step instead, student samples included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import functools

import torch

from prefdistill.config.typed import AT_LEAST_1, POSITIVE, SHARE, opt
from prefdistill.losses import skew_forward_kl_from_log_probs, skew_reverse_kl_from_log_probs
from prefdistill.methods.common import TeacherSignal, completion_ids, teacher_student_terms
from prefdistill.methods.registry import register
from prefdistill.models.logprobs import masked_mean
from prefdistill.models.rollout import canonical, rollout

DIVERGENCES = {"skew_forward": skew_forward_kl_from_log_probs, "skew_reverse": skew_reverse_kl_from_log_probs}  # (log q, log p)


@dataclass
class DistiLLMParams(TeacherSignal):
    divergence: Literal["skew_forward", "skew_reverse"] = opt("skew_forward", "skew forward KL or skew reverse KL")
    alpha: float = opt(0.1, "skew α of the mixture αp + (1 − α)q", SHARE)
    temperature: float = opt(1.0, "softmax temperature of both distributions", POSITIVE)
    student_fraction: float = opt(0.0, "share of batches made of fresh student samples (0 with signal: topk)", SHARE)
    max_new_tokens: int = opt(48, "length of the student's samples", AT_LEAST_1)

    def samples_student(self) -> bool:
        """Whether training draws fresh student samples (student_fraction)."""
        return bool(self.student_fraction > 0)

    def requirements(self) -> tuple[str, set[str]]:
        return "targets", {self.teacher_need()}

    def check(self, cfg=None) -> None:
        self.refuse_fresh_samples("student_fraction", self.student_fraction)


@register("distillm", consumes="targets", params=DistiLLMParams, needs=("teacher",), label="DistiLLM",
          summary="skew forward / reverse KL (α = 0.1) on references and optional student samples", family="kd", on_policy=True)
def distillm(policy, rows: list[dict], params: DistiLLMParams, *, teacher=None, served_teacher=None, teacher_topk=None):
    """Mean skew KL over the tokens of the references (or, with probability student_fraction, student samples)."""
    prompts = [r.prompt for r in rows]
    stats = {}
    if params.student_fraction > 0 and bool(torch.rand(()) < params.student_fraction):
        params.check()  # a cached teacher cannot score the student's fresh samples
        sampled = rollout(policy, prompts, max_new_tokens=params.max_new_tokens)
        if params.signal == "served":  # the server tokenises the text itself: train on the ids it will see
            sampled = canonical(sampled, policy.tokenizer)
        ids = sampled.completions
        stats["tokens_student_generated"] = float(sampled.n_tokens)
    else:
        ids = completion_ids(policy, [r.target for r in rows])
    skew = functools.partial(DIVERGENCES[params.divergence], alpha=params.alpha)
    lp = teacher_student_terms(policy, teacher, rows, prompts, ids, params, "distillm", skew, served_teacher=served_teacher,
                               teacher_topk=teacher_topk)
    loss = masked_mean(lp.divergence, lp.mask)
    return loss, {params.divergence: loss.item(), **lp.stats, **stats}
