"""Early stopping for the SFT stage: keep the best of a training run's evaluations, not its last step.

    keeper = BestCheckpoint(folder.checkpoint("student_sft"), VAL_LOSS, budget=steps)
    log = train(..., out_dir=keeper.last_dir, on_step=hook)   # the hook calls keeper.consider(step, val, snapshot)
    choice = keeper.install(log)      # student_sft/: the kept step's weights, the whole log, choice.json

An evaluation is a candidate {"step", "val"} (val: {"loss": validation loss, and the bench's
"win_rate", "rougeL", "word_count" when it scores generations}). `Selection.pick` keeps the
better of the best so far and the new one, so one set of weights is on disk besides the
training state: NAME.best/, written atomically and replaced only when beaten. The last
step's weights are the training run's own final checkpoint, NAME.last/. `install` then
builds NAME/ atomically from the winner (NAME/ alone marks the stage done) and drops both.

A crash anywhere resumes: the training state replays the steps after its last save and
re-evaluates them (on the CPU bitwise: the same candidates), NAME.best/ and its record
survive as they were, and an install cut short is redone from NAME.last/ and NAME.best/.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from prefdistill.errors import ConfigError
from prefdistill.io import atomic_dir, is_main_process, read_json, write_json, write_jsonl
from prefdistill.io import wait_for_everyone
from prefdistill.training.loop import LOG_FILE, SNAPSHOT_RECORD, is_done, state_file

CHOICE_FILE = "choice.json"  # in the kept checkpoint: which step, of what budget, chosen how, and the curve
INITIAL = "val_loss_initial"  # the untrained model's validation loss, logged on step 1 (no candidate: no SFT at all)


@dataclass(frozen=True)
class Selection:
    """How a training run's evaluations choose the weights it keeps."""

    criterion: str  # "val_loss", a bench select_metric ("win_rate", "rougeL"), or "last"
    pick: Callable[[list[dict]], dict] | None  # the best of candidates given in step order, the earliest on ties; None: last
    score: Callable[..., dict] | None = None  # lm -> more validation scores at each evaluation (the bench's win rate, ...)
    rule: dict = field(default_factory=dict)  # what else defines the choice (the bench's validation prompts)

    def record(self) -> dict:
        return {"criterion": self.criterion, **self.rule}


def lowest_loss(candidates: list[dict]) -> dict:
    """The candidate of lowest validation loss, the earliest step on ties."""
    return min(candidates, key=lambda c: (c["val"]["loss"], c["step"]))


VAL_LOSS = Selection("val_loss", lowest_loss)
LAST = Selection("last", None)


@dataclass
class Choice:
    """Which step's weights a training run kept (NAME/choice.json)."""

    criterion: str
    step: int  # the kept weights' step
    budget: int  # the steps trained
    curve: list[dict]  # every evaluation {"step", "val"}, in step order (empty without evaluations)
    rule: dict = field(default_factory=dict)


def log_fields(val: dict) -> dict:
    """An evaluation as training-log keys: val_loss, val_win_rate, ..."""
    return {f"val_{k}": v for k, v in val.items()}


def curve_of(log: list[dict]) -> list[dict]:
    """The candidates a training log holds: the steps with a validation loss."""
    return [{"step": line["step"], "val": {k[len("val_"):]: v for k, v in line.items() if k.startswith("val_") and k != INITIAL}}
            for line in log if "val_loss" in line]


def read_choice(checkpoint: Path) -> Choice | None:
    path = Path(checkpoint) / CHOICE_FILE
    return Choice(**read_json(path)) if path.is_file() else None


def require_rule(checkpoint: Path, selection: Selection) -> None:
    """Refuse a finished checkpoint that was kept by another rule (one from before early stopping counts as 'last')."""
    choice = read_choice(checkpoint)
    recorded = {"criterion": choice.criterion, **choice.rule} if choice else LAST.record()
    if recorded != selection.record():
        raise ConfigError(f"{checkpoint} kept its step by {recorded}, this run chooses by {selection.record()} (sft.select; "
                          f"under the bench, bench.select_metric and bench.val_prompts). Delete {checkpoint} to train it "
                          "again, or use another run folder.")


class BestCheckpoint:
    """The best evaluation's weights of one training run so far (NAME.best/), and the kept checkpoint NAME/."""

    def __init__(self, out_dir: Path, selection: Selection, budget: int):
        self.out, self.selection, self.budget = Path(out_dir), selection, budget
        self.last_dir = self.out.with_name(self.out.name + ".last")
        self.best_dir = self.out.with_name(self.out.name + ".best")
        fresh = not state_file(self.last_dir).is_file() and not is_done(self.last_dir)
        if fresh and is_main_process():  # left by a run of another config (--allow-config-change)
            shutil.rmtree(self.best_dir, ignore_errors=True)
        self.best = None if fresh else self._saved_best()

    def _saved_best(self) -> dict | None:
        path = self.best_dir / SNAPSHOT_RECORD
        return read_json(path) if is_done(self.best_dir) and path.is_file() else None

    def consider(self, step: int, val: dict, snapshot) -> None:
        """A new evaluation: snapshot its weights when it beats the best so far (the last step's are saved anyway)."""
        if self.selection.pick is None or step >= self.budget:
            return
        candidate = {"step": step, "val": val}
        if self.best is None or self.selection.pick([self.best, candidate]) is candidate:
            snapshot(self.best_dir, record=candidate)
            self.best = candidate

    def install(self, log: list[dict]) -> Choice:
        """Build NAME/ from the winner of the best snapshot and the last step, with the whole log; drop the rest."""
        curve = curve_of(log)
        last = next((c for c in curve if c["step"] == self.budget), None)
        best = self._saved_best()
        pool = [c for c in (best, last) if c is not None]
        winner = self.selection.pick(pool) if self.selection.pick and pool else None
        step = winner["step"] if winner else self.budget
        choice = Choice(self.selection.criterion, step, self.budget, curve, self.selection.rule)
        if is_main_process():
            with atomic_dir(self.out) as tmp:
                _link_files(self.best_dir if step < self.budget else self.last_dir, tmp)
                write_jsonl(tmp / LOG_FILE, log)  # the whole run's log: the curve after the kept step shows too
                write_json(tmp / CHOICE_FILE, asdict(choice))
            for kept in (self.best_dir, self.last_dir):
                shutil.rmtree(kept, ignore_errors=True)
        wait_for_everyone()
        return choice


def _link_files(src: Path, dst: Path) -> None:
    """The checkpoint files of `src` into `dst`: hard links (no copy of the weights) where the filesystem allows."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if rel.name in (LOG_FILE, SNAPSHOT_RECORD) and len(rel.parts) == 1:
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
