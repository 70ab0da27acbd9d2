"""Pairwise preference losses on scalar rewards.

    loss = bradley_terry_loss(chosen_rewards, rejected_rewards).mean()
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """−log σ(r(y⁺) − r(y⁻)): Bradley & Terry (1952); the reward-model loss of Ouyang et al. (2022), eq. 1.

    Args: chosen_rewards, rejected_rewards: (B,). Returns (B,) per-pair losses.
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards)
