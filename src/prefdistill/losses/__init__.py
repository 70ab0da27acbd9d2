"""Loss functions of prefdistill: pure functions of tensors, no reduction.

    from prefdistill.losses import plad_rank_loss
    loss = plad_rank_loss(chosen_logps, rejected_logps, beta=1.0).mean()
"""
from prefdistill.losses.divergences import forward_kl, reverse_kl
from prefdistill.losses.plad import plad_margin_loss, plad_rank_loss
from prefdistill.losses.preference import bradley_terry_loss

__all__ = ["bradley_terry_loss", "forward_kl", "reverse_kl", "plad_margin_loss", "plad_rank_loss"]
