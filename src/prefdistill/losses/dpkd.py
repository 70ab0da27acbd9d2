"""DPKD losses: the teacher as the reference model of a DPO-style objective.

Li et al. 2024, "Direct Preference Knowledge Distillation for LLMs" (arXiv 2406.19774).

    loss = dpkd_loss(q_chosen, q_rejected, p_chosen, p_rejected, beta=1.0)   # (B,)

q_* are the student's (policy's) sequence log-likelihoods, p_* the teacher's; chosen is
the teacher's sample y_t, rejected the student's y_s. In the paper's main form (Eq. 9)
callers pass length-normalised values ℓ(y) = log q(y|x)/|y|, with the teacher's log p(y|x)
divided by the same |y|. The implicit reward is r(x, y) = β·log q_θ(y|x)/p(y|x) + β·log Z(x);
log Z cancels in the Bradley–Terry preference of y_t over y_s.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, teacher_chosen_logps, teacher_rejected_logps) -> torch.Tensor:
    return (policy_chosen_logps - teacher_chosen_logps) - (policy_rejected_logps - teacher_rejected_logps)


def dpkd_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, teacher_chosen_logps: torch.Tensor,
              teacher_rejected_logps: torch.Tensor, *, beta: float) -> torch.Tensor:
    """−log σ(β·((log q(y_t) − log p(y_t)) − (log q(y_s) − log p(y_s)))) (DPKD Eq. 9).

    Args: four (B,) tensors of sequence log-likelihoods. Returns (B,) per-pair losses.
    """
    margin = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, teacher_chosen_logps, teacher_rejected_logps)
    return -F.logsigmoid(beta * margin)


def dpkd_ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, teacher_chosen_logps: torch.Tensor,
                  teacher_rejected_logps: torch.Tensor, *, tau: float) -> torch.Tensor:
    """(Δ − 1/(2τ))², Δ the log-ratio margin above: the IPO form of DPKD's Table 2 (Azar et al. 2023).

    Args: four (B,) tensors; tau > 0 the regularisation strength. Returns (B,).
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    margin = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, teacher_chosen_logps, teacher_rejected_logps)
    return (margin - 1.0 / (2.0 * tau)) ** 2


def simpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, *, beta: float, gamma: float) -> torch.Tensor:
    """−log σ(β·(ℓ(y_t) − ℓ(y_s)) − γ): the SimPO form of DPKD's Table 2 (Meng et al. 2024), no reference term.

    Args: (B,) length-normalised student log-likelihoods; gamma the target margin. Returns (B,).
    """
    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps) - gamma)


def token_argmax_dpkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Per position, the teacher's and the student's argmax tokens as a DPO pair, teacher as reference.

    The official DPKD code's objective: a_t = argmax p(·|prefix), a_s = argmax q(·|prefix),
    rel = (log q(a_t) − log q(a_s)) − (log p(a_t) − log p(a_s)), loss −log σ(β·rel).
    Where the two argmaxes agree rel = 0: the loss is log 2 with zero gradient.

    Args: student_logits, teacher_logits: (B, T, V). Returns (B, T); mask and average in the caller.
    """
    log_q = F.log_softmax(student_logits.float(), -1)
    log_p = F.log_softmax(teacher_logits.float(), -1)
    a_t = teacher_logits.argmax(-1, keepdim=True)
    a_s = student_logits.detach().argmax(-1, keepdim=True)
    rel = (log_q.gather(-1, a_t) - log_q.gather(-1, a_s)) - (log_p.gather(-1, a_t) - log_p.gather(-1, a_s))
    return -F.logsigmoid(beta * rel.squeeze(-1))
