"""Judges: score responses to prompts (higher is better) for win rates and pair relabelling.

    from prefdistill.judges import build_judge
    judge = build_judge(cfg.judge, cfg.run_dir)
    judge.score(prompts, responses)  # -> list[float], one per pair

Kinds (`judge.kind`):
  trained   prefdistill's own reward model (`TrainedRewardJudge`: frozen MiniLM + a small
            trained head), trained by the `reward` stage (`train_reward_model`; what it
            measures: see prefdistill.judges.reward)
  hf        any Hugging Face sequence-classification model with num_labels == 1
  callable  a Python function "package.module:function"(prompts, responses) -> floats

Two roles: `judge` is what training uses (the oracle of the win-rate methods, pair
relabelling and margins); `eval_judge` grades every row. By default the grader is a second
trained reward model that learned from the other half of the documents (`train_judges`).
"""
from prefdistill.judges.base import Judge
from prefdistill.judges.build import build_eval_judge, build_judge
from prefdistill.judges.callable_judge import CallableJudge
from prefdistill.judges.heldout import judges_current, judges_metrics, train_judges
from prefdistill.judges.hf import HFRewardJudge
from prefdistill.judges.negatives import NEGATIVE_KINDS, make_preference_pairs
from prefdistill.judges.reward import MEASURES, train_reward_model
from prefdistill.judges.reward_model import RewardHead, TrainedRewardJudge

__all__ = [
    "Judge",
    "HFRewardJudge",
    "TrainedRewardJudge",
    "RewardHead",
    "CallableJudge",
    "build_judge",
    "build_eval_judge",
    "train_judges",
    "judges_metrics",
    "judges_current",
    "make_preference_pairs",
    "NEGATIVE_KINDS",
    "train_reward_model",
    "MEASURES",
]
