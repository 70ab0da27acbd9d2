"""BOND and J-BOND (Sessa et al. 2024, arXiv 2407.14622): the quantile reward, the returns, the Jeffreys loss.

    log_q = log_quantile_reward(win_vs_anchor)                    # (B,) from (B, n) P(y ≻ a_j)
    returns = kl_regularised_returns(log_q, logp_y, anchor_logp_y, kl_coef=1 / (n - 1))
    loss = jeffreys_loss(best_logps, logp_y, returns, beta=0.5).mean()

One implementation, used by `methods/bond.py`, `methods/jbond.py` and the bandit lab.
Units [docs/derivations.md §BOND]: both parts of (1 − β)·KL(π_BoN ‖ π) + β·KL(π ‖ π_BoN)
are sequence-level, so every log-probability here is summed over a completion's tokens.
"""
from __future__ import annotations

import torch


def leave_one_out_baseline(returns: torch.Tensor) -> torch.Tensor:
    """b_i = mean of the other entries' returns (0 for a batch of one): an unbiased REINFORCE baseline.

    A batch mean would include each sample's own return, shrinking the policy gradient by
    (B − 1)/B and cancelling it exactly for B = 1. Args: returns (B,). Returns (B,), no gradient.
    """
    r = returns.detach()
    n = r.shape[0]
    if n == 1:
        return torch.zeros_like(r)
    return (r.sum() - r) / (n - 1)


def jeffreys_loss(best_logps: torch.Tensor, sample_logps: torch.Tensor, returns: torch.Tensor, *, beta: float) -> torch.Tensor:
    """(1 − β)·(−log π(y_best)) + β·(−(R − b)·log π(y)), per prompt, no reduction.

    Sessa et al. 2024, Eq. (9)–(11): the forward part, KL(π_BoN ‖ π), is maximum likelihood on a
    Best-of-n sample; the backward part, KL(π ‖ π_BoN), a policy gradient on the policy's own sample
    with return R (reward minus KL penalty, from the caller) and leave-one-out baseline b.

    Args:
        best_logps: (B,) log π(y_best | x) summed over tokens, with grad.
        sample_logps: (B,) log π(y | x) of the policy sample, summed over tokens, with grad.
        returns: (B,) R per prompt; no gradient flows into it or into the baseline.
        beta: Jeffreys mix in [0, 1].
    Returns: (B,). The gradient on best_logps is −(1 − β), on sample_logps −β·(R_b − mean of the others).
    """
    advantage = returns.detach() - leave_one_out_baseline(returns)
    return (1 - beta) * (-best_logps) + beta * (-(advantage * sample_logps))


def log_quantile_reward(win_vs_anchor: torch.Tensor) -> torch.Tensor:
    """log p̂≤(y): the log of y's mid-rank among n anchor samples, from P(y ≻ a_j).

    p≤(y) = P_{a ~ π_anchor}[r(a) ≤ r(y)] (Sessa et al. 2024, Eq. 3); only ranks matter, so each
    comparison counts 1 if y wins (P > ½), ½ on a tie (P = ½) and 0 if it loses. The estimate is
    floored at 1/(2n), half a tie's worth, which keeps the log finite (a sample compared with
    itself is such a tie, so the floor never binds when y is one of the anchor samples).

    Args: win_vs_anchor (..., n) with entries P(y ≻ a_j) in [0, 1]. Returns (...,).
    """
    n = win_vs_anchor.shape[-1]
    wins = (win_vs_anchor > 0.5).to(win_vs_anchor.dtype) + 0.5 * (win_vs_anchor == 0.5).to(win_vs_anchor.dtype)
    return torch.log(wins.mean(-1).clamp(min=1.0 / (2 * n)))


def kl_regularised_returns(reward: torch.Tensor, policy_logps: torch.Tensor, anchor_logps: torch.Tensor, *,
                           kl_coef: float) -> torch.Tensor:
    """R = reward − kl_coef·(log π(y) − log π_anchor(y)), detached.

    BOND: reward log p̂≤(y), kl_coef 1/(n − 1) (Eq. 11); J-BOND: reward −log 16 when y loses to
    both anchor samples, else 0, kl_coef 1 (§5). Both log-probabilities must come from passes
    without dropout, or their difference is noise even when π = π_anchor.
    Args: (B,) each. Returns (B,).
    """
    return (reward - kl_coef * (policy_logps - anchor_logps)).detach()
