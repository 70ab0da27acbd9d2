"""The evaluation judge's Bradley–Terry scale: what turns its score gap into P(y ≻ y′ | x), for the soft win rate.

    scale = judge_scale(judge, validation, negatives=cfg.reward.negatives, seed=cfg.seed)   # {"scale", "how", ...}

A judge trained by the reward stage (`TrainedRewardJudge`) minimised −log σ(s(chosen) −
s(rejected)) (Bradley & Terry 1952), so σ(s(y) − s(y′)) is already its probability: scale 1.
Any other judge (an `hf` sequence-classification reward model, a callable) has scores of
unknown scale: it scores the validation split's (reference ≻ synthetic negative) pairs
(`judges.negatives`, the kinds the reward stage uses) and the scale is the one-parameter
logistic fit of those gaps (`evaluation.paired.fit_logistic_scale`). The fit is stated in
results.json, with its pairs and its accuracy on them, so a reader sees what the soft win
rate of such a judge rests on.
"""
from __future__ import annotations

from prefdistill.evaluation.paired import fit_logistic_scale
from prefdistill.io import Example
from prefdistill.judges.negatives import GENERATED_KINDS, make_preference_pairs
from prefdistill.judges.reward_model import TrainedRewardJudge

BRADLEY_TERRY = ("bradley-terry: the reward stage trained this judge with −log σ(s(chosen) − s(rejected)), "
                 "so σ(s(y) − s(ref)) is its probability")


def judge_scale(judge, validation: list[Example], *, negatives: list[str], seed: int) -> dict:
    """{"scale": c, "how": ...} with P(y ≻ y′) = σ((s(y) − s(y′)) / c) under `judge`; fitted on validation pairs
    unless the judge is a trained Bradley–Terry reward model."""
    if isinstance(judge, TrainedRewardJudge):
        return {"scale": 1.0, "how": BRADLEY_TERRY}
    negatives = [k for k in negatives if k not in GENERATED_KINDS]  # built from the references alone
    pairs = make_preference_pairs(validation, negatives, seed=seed)
    if len(pairs) < 2:
        raise ValueError(f"judge {getattr(judge, 'name', judge)!r}: the validation split gives {len(pairs)} (reference, negative) "
                         "pair(s); the soft win rate needs at least two to fit the judge's scale. Give the split references")
    prompts = [p["prompt"] for p in pairs]
    chosen, rejected = judge.score(prompts, [p["chosen"] for p in pairs]), judge.score(prompts, [p["rejected"] for p in pairs])
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)
    return {"scale": fit_logistic_scale(chosen, rejected), "pairs": len(pairs), "pair_accuracy": 100.0 * accuracy,
            "how": f"logistic fit of σ((s(reference) − s(negative)) / scale) on {len(pairs)} validation pairs "
                   f"({', '.join(negatives)}); the judge orders {100 * accuracy:.1f}% of them right"}
