"""Loss functions of prefdistill: pure functions of tensors, no reduction.

    from prefdistill.losses import plad_rank_loss
    loss = plad_rank_loss(chosen_logps, rejected_logps, beta=1.0).mean()
"""
from prefdistill.losses.bond import jeffreys_loss, kl_regularised_returns, leave_one_out_baseline, log_quantile_reward
from prefdistill.losses.chunked import LMHead, chunked_positions
from prefdistill.losses.cross_vocab import shared_outcomes
from prefdistill.losses.divergences import (
    forward_kl,
    generalized_jsd,
    generalized_jsd_from_log_probs,
    js_divergence,
    js_from_log_probs,
    kl_from_log_probs,
    log_probs_pair,
    reverse_kl,
    skew_forward_kl,
    skew_forward_kl_from_log_probs,
    skew_reverse_kl,
    skew_reverse_kl_from_log_probs,
    total_variation,
    total_variation_from_log_probs,
)
from prefdistill.losses.dpkd import dpkd_ipo_loss, dpkd_loss, simpo_loss, token_argmax_dpkd_loss
from prefdistill.losses.plad import plad_margin_loss, plad_rank_loss
from prefdistill.losses.policy_gradient import (minillm_loss, minillm_loss_from_log_probs, minillm_loss_from_terms,
                                               normalized_future_returns)
from prefdistill.losses.preference import bradley_terry_loss
from prefdistill.losses.topk import coarsen, topk_forward_kl
from prefdistill.losses.wind import wind_kl_loss, wind_nce_loss, wind_squared_loss, wind_target_weights

__all__ = [
    "LMHead", "bradley_terry_loss", "shared_outcomes", "chunked_positions", "coarsen", "dpkd_ipo_loss", "dpkd_loss", "forward_kl", "generalized_jsd", "generalized_jsd_from_log_probs",
    "jeffreys_loss", "js_divergence", "js_from_log_probs", "kl_from_log_probs", "log_probs_pair",
    "kl_regularised_returns", "leave_one_out_baseline", "log_quantile_reward", "minillm_loss", "minillm_loss_from_log_probs", "minillm_loss_from_terms",
    "normalized_future_returns", "plad_margin_loss", "plad_rank_loss",
    "reverse_kl", "simpo_loss", "skew_forward_kl", "skew_forward_kl_from_log_probs", "skew_reverse_kl", "skew_reverse_kl_from_log_probs",
    "token_argmax_dpkd_loss", "topk_forward_kl", "total_variation", "total_variation_from_log_probs",
    "wind_kl_loss", "wind_nce_loss", "wind_squared_loss", "wind_target_weights",
]
