"""`build_judge` / `build_eval_judge`: the training judge and the evaluation judge a run's config asks for."""
from __future__ import annotations

from pathlib import Path

from prefdistill.config.schema import JudgeConfig, RunConfig, resolved_eval_judge
from prefdistill.judges.base import Judge
from prefdistill.judges.callable_judge import CallableJudge
from prefdistill.judges.hf import HFRewardJudge
from prefdistill.judges.reward_model import CONFIG_FILE, TrainedRewardJudge
from prefdistill.run.folder import HELDOUT, RunFolder


def build_eval_judge(cfg: RunConfig, device: str = "cpu") -> Judge:
    """The judge that grades (`eval_judge`): the held-out reward model, the training judge itself, or a given one."""
    kind, e = resolved_eval_judge(cfg), cfg.eval_judge
    if kind == "same":
        return build_judge(cfg.judge, cfg.run_dir, device)
    if kind == "heldout":
        path = RunFolder(cfg.run_dir).judge_model(HELDOUT)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"no held-out judge at {path}: run the `reward` stage first "
                                    "(`prefdistill run CONFIG --stages reward`), which trains both judges")
        return TrainedRewardJudge(path, batch_size=e.batch_size, device=device, name="heldout")
    as_judge = JudgeConfig(kind=kind, name_or_path=e.name_or_path, callable=e.callable, batch_size=e.batch_size, max_length=e.max_length)
    return build_judge(as_judge, cfg.run_dir, device)


def build_judge(cfg: JudgeConfig, run_dir: Path, device: str = "cpu") -> Judge:
    """kind "trained": the `reward` stage's model in run_dir; "hf": a reward model; "callable": a function."""
    if cfg.kind == "trained":
        path = RunFolder(run_dir).judge_model()
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"no trained judge at {path}: run the `reward` stage first "
                "(`prefdistill run CONFIG --stages reward`), or set judge.kind to 'hf' "
                "(judge.name_or_path) or 'callable' (judge.callable)"
            )
        return TrainedRewardJudge(path, batch_size=cfg.batch_size, device=device)
    if cfg.kind == "hf":  # name_or_path / callable presence: checked with the config (prefdistill.config.checks)
        return HFRewardJudge(cfg.name_or_path, batch_size=cfg.batch_size, max_length=cfg.max_length, device=device)
    if cfg.kind == "callable":
        return CallableJudge(cfg.callable)
    raise ValueError(f"judge.kind: unknown kind {cfg.kind!r}; choose from ['trained', 'hf', 'callable']")
