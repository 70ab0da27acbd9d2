"""Word-level KD: forward KL to the teacher's next-token distribution on target prefixes.

Hinton et al. 2015; Kim & Rush 2016 (word-level KD). Loss per target token:
T²·KL(p_T(·|x, y_<t) ‖ q_T(·|x, y_<t)) at temperature T (the T² keeps gradient sizes
independent of T), plus an optional cross-entropy on the target itself.

`signal: topk` trains from the teacher's top-k log-probs, cached once before training
(`prefdistill.teacher_signal`, the `teacher_topk` need), so the teacher is not loaded for
training; the KL is then the exact one of the two distributions coarsened to the k ids
and one bucket for the rest (`topk_forward_kl`), equal to the full one when k ≥ V.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from prefdistill.logprobs import masked_mean, per_token_logps
from prefdistill.losses import forward_kl, topk_forward_kl
from prefdistill.methods.common import completion_ids, paired_logits
from prefdistill.methods.registry import register
from prefdistill.teacher_signal import load_topk
from prefdistill.typed import AT_LEAST_1, NON_NEGATIVE, POSITIVE, opt


@dataclass
class KDParams:
    temperature: float = opt(1.0, "softmax temperature T of both distributions (the loss is scaled by T²)", POSITIVE)
    ce_weight: float = opt(0.0, "weight of the hard-label cross-entropy on the target", NON_NEGATIVE)
    signal: Literal["live", "topk"] = opt("live", "live: the teacher in the training loop; topk: its top-k log-probs, "
                                                  "cached once before training (the teacher is not loaded for training)")
    k: int = opt(20, "topk: teacher token ids kept per position", AT_LEAST_1)
    topk_dtype: Literal["float16", "float32"] = opt("float16", "topk: how cached log-probs are stored (2 bytes, or exact)")

    def requirements(self) -> tuple[str, set[str]]:
        return "targets", {"teacher_topk" if self.signal == "topk" else "teacher"}


@register("kd", consumes="targets", params=KDParams, needs=("teacher",), label="KD",
          summary="forward KL to the teacher's token distributions on the reference prefixes")
def kd(policy, rows: list[dict], params: KDParams, *, teacher=None):
    """T²·mean over target tokens of KL(p ‖ q) (coarsened to the top k with `signal: topk`), + ce_weight·CE."""
    prompts = [r["prompt"] for r in rows]
    ids = completion_ids(policy, [r["target"] for r in rows])
    if params.signal == "topk":
        s, labels, mask, kl_per_token, stats = _from_cache(policy, rows, prompts, ids, params.temperature)
    elif teacher is None:
        raise ValueError("kd with signal: live needs the teacher in the training loop (or signal: topk and a cache)")
    else:
        s, t, labels, mask = paired_logits(policy, teacher, prompts, ids)
        kl_per_token, stats = forward_kl(s, t, temperature=params.temperature), {"tokens_teacher_scored": float(mask.sum())}
    kl = masked_mean(kl_per_token, mask) * params.temperature ** 2
    stats = {"forward_kl": kl.item(), **stats}
    loss = kl
    if params.ce_weight > 0:
        ce = -masked_mean(per_token_logps(s, labels), mask)
        loss = loss + params.ce_weight * ce
        stats["ce"] = ce.item()
    return loss, stats


def _from_cache(policy, rows: list[dict], prompts: list[str], ids: list[list[int]], temperature: float):
    """(student logits (B, C, V), labels, mask, coarsened KL (B, C), stats) against the cached top-k of `rows`."""
    if "teacher_topk_key" not in rows[0]:
        raise ValueError("kd with signal: topk trains from cached teacher top-k: build the cache for these rows first "
                         "(prefdistill.teacher_signal.build_topk_cache; the pipeline does it before training)")
    s, labels, mask = policy.completion_logits(prompts, ids)
    s = s[..., :len(policy.tokenizer)]  # a padded output layer's extra entries are not tokens (as in paired_logits)
    t_ids, t_logps, t_mask = load_topk(rows[0]["teacher_topk_path"], rows)  # (B, C, k), (B, C, k), (B, C)
    if not torch.equal(t_mask.to(mask.device), mask):
        raise ValueError(f"the cached teacher top-k ({rows[0]['teacher_topk_path']}) does not cover these rows' completion "
                         "tokens; delete the file to recompute it")
    t_ids, t_logps = t_ids.to(s.device), t_logps.to(s.device)
    kl = topk_forward_kl(s / temperature, t_ids, t_logps)  # the cache was made at this temperature
    mass = masked_mean(t_logps.exp().sum(-1), mask)
    return s, labels, mask, kl, {"topk_teacher_mass": mass.item()}
