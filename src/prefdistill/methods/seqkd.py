"""SeqKD: sequence-level knowledge distillation (Kim & Rush 2016): SFT on teacher generations.

It reads the same pairs file as PLaD and trains on the teacher side only, so with the
same budget it is the control that separates "more training on teacher text" from the
effect of PLaD's calibration against the student's own samples.
"""
from __future__ import annotations

from dataclasses import dataclass

from prefdistill.methods.common import teacher_side
from prefdistill.methods.registry import register
from prefdistill.methods.sft import token_nll


@dataclass
class SeqKDParams:
    pass


@register("seqkd", consumes="pairs", params=SeqKDParams, needs=("teacher_samples",), label="SeqKD",
          summary="cross-entropy on the teacher's samples (the chosen side of the pairs)", family="kd")
def seqkd(policy, rows: list[dict], params: SeqKDParams):
    """Token-level NLL of the teacher sample y_t ~ p(·|x) under the student."""
    return token_nll(policy, [r.prompt for r in rows], [teacher_side(r) for r in rows])
