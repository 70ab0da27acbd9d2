"""Word-level KD: forward KL to the teacher's next-token distribution on target prefixes.

Hinton et al. 2015; Kim & Rush 2016 (word-level KD). Loss per target token:
T²·KL(p_T(·|x, y_<t) ‖ q_T(·|x, y_<t)) at temperature T (the T² keeps gradient sizes
independent of T), plus an optional cross-entropy on the target itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from prefdistill.logprobs import masked_mean, per_token_logps
from prefdistill.losses import forward_kl
from prefdistill.methods.common import completion_ids, paired_logits
from prefdistill.methods.registry import register
from prefdistill.typed import NON_NEGATIVE, POSITIVE, opt


@dataclass
class KDParams:
    temperature: float = opt(1.0, "softmax temperature T of both distributions (the loss is scaled by T²)", POSITIVE)
    ce_weight: float = opt(0.0, "weight of the hard-label cross-entropy on the target", NON_NEGATIVE)


@register("kd", consumes="targets", params=KDParams, needs=("teacher",), label="KD",
          summary="forward KL to the teacher's token distributions on the reference prefixes")
def kd(policy, rows: list[dict], params: KDParams, *, teacher):
    """T²·mean over target tokens of KL(p ‖ q), + ce_weight·CE."""
    prompts = [r["prompt"] for r in rows]
    s, t, labels, mask = paired_logits(policy, teacher, prompts, completion_ids(policy, [r["target"] for r in rows]))
    kl = masked_mean(forward_kl(s, t, temperature=params.temperature), mask) * params.temperature ** 2
    stats = {"forward_kl": kl.item(), "tokens_teacher_scored": float(mask.sum())}
    loss = kl
    if params.ce_weight > 0:
        ce = -masked_mean(per_token_logps(s, labels), mask)
        loss = loss + params.ce_weight * ce
        stats["ce"] = ce.item()
    return loss, stats
