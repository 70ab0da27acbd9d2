"""The run folder's public face: where every stage's output lives, and the bookkeeping they share.

    run = RunFolder(cfg.run_dir)
    run.checkpoint("student_sft"); run.samples("teacher"); run.pairs; run.eval_samples("teacher")
    run.check_config(to_dict(cfg), allow_change=False)     # one folder, one configuration
    run.timed("pairs", fn)                                  # adds fn's wall time to timings.json

    RUN/config.yaml                 the resolved configuration
    RUN/data/{sft,distill,validation,test}.jsonl   the splits (the training set halved)
    RUN/reward/{model,metrics.json} the trained training judge and its accuracy
    RUN/reward/heldout/             the held-out judge that grades (eval_judge.kind heldout)
    RUN/checkpoints/{teacher_sft,student_sft,student_distill}/
    RUN/samples/{teacher,student}/  resumable samples on the distillation half (one line per prompt)
    RUN/samples/student_init/       the untrained student's answers to the reward data (reward.negatives: student_init)
    RUN/pairs/pairs.jsonl           pseudo-preference pairs (prompt / chosen / rejected)
    RUN/pairs/failures.jsonl        prompts a teacher or student could not answer (an API that kept failing)
    RUN/pairs/teacher_logps.jsonl   the teacher's log-likelihood of both sides of every pair (DPKD)
    RUN/teacher_signal/topk_kK.bin  the teacher's cached top-k (prefdistill.signal.topk_cache)
    RUN/eval/samples/ROW/           generations on the test split
    RUN/metrics.json, RUN/report.md, RUN/plots/*.png
    RUN/bench/                      `prefdistill bench`: its own config, jobs and reports (`BenchFolder`)
"""
from __future__ import annotations

import time
from pathlib import Path

import yaml

from prefdistill.errors import ConfigError
from prefdistill.io import atomic_write_text, is_main_process, read_json, write_json
from prefdistill.models.hf import CHECKPOINT_META

LOG_FILE = "train_log.jsonl"  # beside a checkpoint: one line per optimizer step
HELDOUT = "heldout"  # RUN/reward/heldout/: the held-out judge


def judge_files(judge_dir: Path) -> tuple[Path, Path]:
    """(model/, metrics.json) of a trained judge's folder: RUN/reward, RUN/reward/heldout, or any folder a user trains into."""
    return Path(judge_dir) / "model", Path(judge_dir) / "metrics.json"


def checkpoint_done(out_dir: Path) -> bool:
    """A checkpoint folder is finished once its metadata file is written (the training loop writes it last)."""
    return (Path(out_dir) / CHECKPOINT_META).is_file()


class RunFolder:
    def __init__(self, root: Path):
        self.root = Path(root)

    # ------------------------------------------------------------------ where things are
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def split(self, name: str) -> Path:
        return self.root / "data" / f"{name}.jsonl"

    @property
    def reward(self) -> Path:
        return self.root / "reward"

    def judge_dir(self, which: str = "training") -> Path:
        """RUN/reward (the training judge) or RUN/reward/heldout (the held-out grader): a model/ and metrics.json each."""
        if which not in ("training", HELDOUT):
            raise ValueError(f"which: 'training' or {HELDOUT!r}, got {which!r}")
        return self.reward if which == "training" else self.reward / HELDOUT

    def judge_model(self, which: str = "training") -> Path:
        return judge_files(self.judge_dir(which))[0]

    def judge_metrics(self, which: str = "training") -> Path:
        return judge_files(self.judge_dir(which))[1]

    def topk_cache(self, k: int) -> Path:
        """The teacher's top-k cache at k (one file for every method and row set: its records are keyed by content)."""
        return self.root / "teacher_signal" / f"topk_k{k}.bin"

    def checkpoint(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def train_log(self, name: str) -> Path:
        return self.checkpoint(name) / LOG_FILE

    def samples(self, role: str) -> Path:
        return self.root / "samples" / role

    @property
    def pairs(self) -> Path:
        return self.root / "pairs" / "pairs.jsonl"

    def pairs_file(self, name: str) -> Path:
        """Files beside the pairs: summary.json, failures.jsonl, teacher_logps.jsonl."""
        return self.root / "pairs" / name

    def eval_file(self, name: str) -> Path:
        """eval/rows.json, eval/judge_scores.json, eval/generations.jsonl, ..."""
        return self.root / "eval" / name

    def eval_samples(self, row: str) -> Path:
        return self.root / "eval" / "samples" / row

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    def bench_folder(self, report: str) -> BenchFolder:
        """The bench's paths, its report (bench.report) in RUN/bench/REPORT/."""
        return BenchFolder(self.bench, report)

    def relative(self, path: Path | None) -> str:
        """A path inside the run folder as text relative to it ('base' for None), so the folder can move."""
        return Path(path).relative_to(self.root).as_posix() if path else "base"

    def is_done(self, checkpoint: str) -> bool:
        return checkpoint_done(self.checkpoint(checkpoint))

    # ------------------------------------------------------------------ bookkeeping
    def check_config(self, current: dict, *, allow_change: bool) -> None:
        """Refuse to mix outputs of different configurations in one folder; then record this one."""
        if self.config.is_file() and not allow_change:
            stored = yaml.safe_load(self.config.read_text()) or {}
            stored.pop("bench", None)  # folders made before the bench had its own section
            diff = sorted(d for d in diff_keys(stored, current) if d != "stages")
            if diff:
                raise ConfigError(
                    f"{self.root} was made with another configuration (differs in: {', '.join(diff[:8])}). "
                    "Use a new name=..., or pass --allow-config-change to reuse its outputs anyway."
                )
        if is_main_process():
            atomic_write_text(self.config, yaml.safe_dump(current, sort_keys=False))

    def timed(self, stage: str, fn):
        """Run fn and return what it returned; add its wall time to timings.json unless it found its output and did
        nothing (returned False).

        Times add up over attempts, so a stage resumed after a crash reports all it cost.
        """
        t0 = time.time()
        result = fn()
        if result is False:
            print(f"[prefdistill] {stage}: output exists, skipped", flush=True)
            return result
        if is_main_process():
            timings = self.timings()
            timings[stage] = round(timings.get(stage, 0.0) + time.time() - t0, 1)
            write_json(self.root / "timings.json", timings)
        return result

    def timings(self) -> dict[str, float]:
        path = self.root / "timings.json"
        return read_json(path) if path.is_file() else {}


def diff_keys(a, b, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for k in set(a) | set(b):
            out |= diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return set() if a == b else {prefix}


class BenchFolder:
    """Where `prefdistill bench` keeps things, under RUN/bench/:

        gap_validation.json             teacher − SFT student on validation
        val/ROW/                        a base row's validation generations
        pairs/relabel{SHARE}.jsonl      the pairs with a share ordered by the judge
        calibration/                    the calibration candidates: samples/ROW/, candidates.json, ROW.json (a base row's scores)
        runs/KEY/                       one job: result.json, val_stepN.json, checkpoint/, stepN/, test_stepN(.json),
                                        calibration_stepN.json (its scores of the calibration candidates)
        claims/KEY.claim                the runner working on a job now (`prefdistill.run.claims`)
        REPORT/                         shared.json, selection.json, bench.json, results.json, report.md, plots/
    """

    def __init__(self, root: Path, report: str):
        self.root, self.report = Path(root), Path(root) / report

    @property
    def gap(self) -> Path:
        return self.root / "gap_validation.json"

    def val(self, row: str) -> Path:
        return self.root / "val" / row

    def relabelled_pairs(self, share: float) -> Path:
        return self.root / "pairs" / f"relabel{share:g}.jsonl"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def job(self, key: str) -> Path:
        return self.runs / key

    def result(self, key: str) -> Path:
        return self.job(key) / "result.json"

    def checkpoint(self, key: str) -> Path:
        """The job's training state and final weights."""
        return self.job(key) / "checkpoint"

    def weights(self, key: str, step: int) -> Path:
        """The weights kept at a scored step before the last."""
        return self.job(key) / f"step{step}"

    def kept_weights(self, key: str) -> list[Path]:
        return [self.checkpoint(key), *self.job(key).glob("step*")]

    def val_scores(self, key: str, step: int) -> Path:
        return self.job(key) / f"val_step{step}.json"

    def test_samples(self, key: str, step: int) -> Path:
        return self.job(key) / f"test_step{step}"

    def test(self, key: str, step: int) -> Path:
        return self.job(key) / f"test_step{step}.json"

    def calibration(self, key: str, step: int) -> Path:
        """A tested job's scores of the calibration candidates, from the weights at `step`."""
        return self.job(key) / f"calibration_step{step}.json"

    def calibration_file(self, name: str) -> Path:
        """RUN/bench/calibration/NAME: candidates.json, or ROW.json (a base row's scores of them)."""
        return self.root / "calibration" / name

    def calibration_samples(self, row: str) -> Path:
        """The calibration candidates a base row sampled (resumable)."""
        return self.root / "calibration" / "samples" / row

    def claim(self, name: str) -> Path:
        return self.root / "claims" / f"{name}.claim"

    def report_file(self, name: str) -> Path:
        """REPORT/NAME: shared.json (the shared stages are done), selection.json, bench.json, results.json, ..."""
        return self.report / name
