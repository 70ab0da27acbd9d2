"""DPKD: direct preference knowledge distillation (Li et al. 2024, arXiv 2406.19774).

Two modes, chosen by `mode`:

* `sequence` (the paper's Eq. 9 / Algorithm 1, default): on the pseudo-preference pairs
  (teacher sample y_t ≻ student sample y_s), a DPO loss with the teacher as reference,
  length-normalised, plus λ·L_pt. The teacher's log p(y|x) of both samples is computed
  once and stored with the pairs (`teacher_pair_logps`), so the teacher is not in memory
  during training and this mode works across tokenizers. `loss` selects the Table 2 form:
  sigmoid (DPO), ipo, or simpo (no teacher term).
* `token_argmax` (what the official code runs): on the reference completions, per
  position, the teacher's and the student's argmax tokens form a DPO pair with the
  teacher as reference; total (1 − kd_ratio)·CE + kd_ratio·L_kd. Needs the teacher in the
  loop and one vocabulary.

L_pt is the paper's language-modelling term on plain text. This pipeline has no
pre-training corpus, so it is cross-entropy on the teacher's samples (as for MiniLLM);
in token_argmax mode the CE on the references already plays that role and
`lm_weight` defaults to 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from prefdistill.config.typed import NON_NEGATIVE, POSITIVE, SHARE, opt
from prefdistill.data.pairs import chosen_is_teacher
from prefdistill.errors import ConfigError
from prefdistill.losses import dpkd_ipo_loss, dpkd_loss, simpo_loss, token_argmax_dpkd_loss
from prefdistill.losses.chunked import chunked_positions
from prefdistill.methods.common import completion_ids, logits_chunk, pair_logps, paired_states, teacher_side
from prefdistill.methods.registry import SFT_ROW, Claim, register
from prefdistill.models.logprobs import masked_mean, per_token_logps, sequence_logps

# The Table 2 forms, by name: (q_c, q_r, p_c, p_r, params) -> (B,) losses.
SEQUENCE_LOSSES = {
    "sigmoid": lambda qc, qr, pc, pr, prm: dpkd_loss(qc, qr, pc, pr, beta=prm.beta),
    "ipo": lambda qc, qr, pc, pr, prm: dpkd_ipo_loss(qc, qr, pc, pr, tau=prm.tau),
    "simpo": lambda qc, qr, pc, pr, prm: simpo_loss(qc, qr, beta=prm.beta, gamma=prm.gamma),
}


@dataclass
class DPKDParams:
    mode: Literal["sequence", "token_argmax"] = opt("sequence", "the paper's sequence loss, or the official code's per-token form")
    loss: Literal["sigmoid", "ipo", "simpo"] = opt("sigmoid", "sequence mode: the forms of the paper's Table 2")
    beta: float = opt(0.1, "inverse temperature of the implicit reward (the official code's default)", POSITIVE)
    normalize: bool = opt(True, "divide both log-likelihoods by |y| (the paper; off = its ablation)")
    lm_weight: float | None = opt(None, "λ of L_pt; None: 0.5 in sequence mode, 0 in token_argmax mode", NON_NEGATIVE)
    tau: float = opt(0.1, "IPO's τ", POSITIVE)
    gamma: float = opt(0.5, "SimPO's margin γ", NON_NEGATIVE)
    kd_ratio: float = opt(0.5, "token_argmax: weight of L_kd against the CE on references", SHARE)

    def requirements(self) -> tuple[str, set[str]]:
        if self.mode == "token_argmax":
            return "targets", {"teacher"}
        needs = {"teacher_samples", "student_samples"}
        return "pairs", needs if self.loss == "simpo" else needs | {"teacher_pair_logps"}

    @property
    def lm(self) -> float:
        if self.lm_weight is not None:
            return self.lm_weight
        return 0.5 if self.mode == "sequence" else 0.0

    def check(self, cfg) -> None:
        if self.mode == "token_argmax" and self.loss != "sigmoid":
            raise ConfigError("distill.params.loss: the token_argmax mode has only the sigmoid form; ipo / simpo are sequence-mode forms")


@register("dpkd", consumes="pairs", params=DPKDParams, needs=("teacher_samples", "student_samples", "teacher_pair_logps"),
          label="DPKD", summary="DPO with the teacher as reference on teacher ≻ student pairs (or the code's token-argmax form)",
          family="preference",
          claims=(Claim("DPKD", "dpkd", "minillm", "rougeL"), Claim("DPKD", "minillm", SFT_ROW, "rougeL"),
                  Claim("DPKD", "dpkd", SFT_ROW, "rougeL")))
def dpkd(policy, rows: list[dict], params: DPKDParams, *, teacher=None):
    """DPKD loss of a batch (pairs in sequence mode, reference rows in token_argmax mode)."""
    if params.mode == "token_argmax":
        return _token_argmax(policy, rows, params, teacher)
    n = len(rows)
    prompts = [r.prompt for r in rows]
    per_token, mask = pair_logps(policy, prompts, [r.chosen for r in rows], [r.rejected for r in rows])  # (2B, C)
    sums = sequence_logps(per_token, mask, normalize=False)  # (2B,)
    lengths = mask.sum(-1).clamp(min=1).to(sums.dtype) if params.normalize else torch.ones_like(sums)
    q = sums / lengths
    if params.loss == "simpo":
        p = torch.zeros_like(q)
    else:
        stored = torch.tensor([r.teacher_chosen_logp for r in rows] + [r.teacher_rejected_logp for r in rows],
                              dtype=q.dtype, device=q.device)
        p = stored / lengths  # the teacher's log p(y|x) over the same |y|
    losses = SEQUENCE_LOSSES[params.loss](q[:n], q[n:], p[:n], p[n:], params)
    loss = losses.mean()
    margin = ((q[:n] - p[:n]) - (q[n:] - p[n:])).detach()
    stats = {"dpkd": loss.item(), "reward_margin": (params.beta * margin).mean().item(), "reward_accuracy": (margin > 0).float().mean().item()}
    if params.lm > 0:
        lm_tok, lm_mask = per_token[:n], mask[:n]
        if not all(chosen_is_teacher(r) for r in rows):  # swapped pairs: find the teacher's text
            lm_tok, lm_mask = policy.completion_logps(prompts, [teacher_side(r) for r in rows])
        ce = -masked_mean(lm_tok, lm_mask)
        loss = loss + params.lm * ce
        stats["lm_ce"] = ce.item()
    return loss, stats


def _token_argmax(policy, rows: list[dict], params: DPKDParams, teacher):
    if teacher is None:
        raise ValueError("dpkd token_argmax mode needs the teacher in the training loop (a local model with logits)")
    prompts = [r.prompt for r in rows]
    s, t, labels, mask = paired_states(policy, teacher, prompts, completion_ids(policy, [r.target for r in rows]))

    def terms(s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor):  # per position, a chunk at a time
        return (per_token_logps(s_logits, y), token_argmax_dpkd_loss(s_logits, t_logits, beta=params.beta),
                (s_logits.detach().argmax(-1) == t_logits.argmax(-1)).float())
    logps, per_kd, agreed = chunked_positions(terms, s, teacher=t, aligned=(labels,), chunk=logits_chunk(policy),
                                              active=mask.bool())
    ce = -masked_mean(logps, mask)
    kd = masked_mean(per_kd, mask)
    loss = (1 - params.kd_ratio) * ce + params.kd_ratio * kd
    agree = masked_mean(agreed, mask)
    stats = {"ce": ce.item(), "dpkd_token": kd.item(), "argmax_agreement": agree.item(), "tokens_teacher_scored": float(mask.sum())}
    if params.lm > 0:  # no plain-text corpus here: the references stand in for it
        loss = loss + params.lm * ce
    return loss, stats
