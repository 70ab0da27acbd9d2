"""What flows from a bench job to the bench's numbers: typed records, and their JSON files.

    result = JobResult.from_json(read_json(RUN / "bench/runs/KEY/result.json"))   # result.val[step]["win_rate"]
    test = TestResult.from_json(read_json(RUN / "bench/runs/KEY/test_stepN.json"))
    cands = CandidateSet.from_json(read_json(RUN / "bench/calibration/candidates.json"))   # and CandidateScores
    results = summarize(cfg, bench, Scored(...))                                 # prefdistill.bench.numbers

`to_json()` writes, and `from_json()` reads, the layout the bench's run folders hold
(result.json, test_stepN.json, selection.json's entries), so folders written before these
records existed still load: `from_json(d).to_json() == d`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from prefdistill.bench.plan import Job, as_setting
from prefdistill.evaluation.judge_check import RowOutputs

COST_FIELDS = ("rows", "steps", "train_wall_s", "peak_memory_mb", "memory_kind")  # every job's; the rest are counters
TEST_TIMED = ("generation_wall_s", "grading_wall_s", "calibration_wall_s")  # a test file's timers, absent from older ones
TIMED_FIELDS = ("sampling_wall_s", "validation_wall_s")  # parts of train_wall_s, absent from jobs trained before they were timed
PHASES = ("training", "sampling", "validation", "test_generation", "grading", "calibration")  # a job's wall time, by phase
PHASE_TOTALS = ("train_wall", "test_wall")  # what the phases add up to: train_wall_s, and the test stage's eval_wall_s


@dataclass(frozen=True)
class Cost:
    """What one job's training cost: rows, steps, wall time, peak memory, and the tokens and calls it counted."""

    rows: int
    steps: int  # steps logged (the budget, or fewer when training stopped early)
    train_wall_s: float
    peak_memory_mb: float
    memory_kind: str  # what was measured: "GPU allocated", "process RSS", ...
    data_tokens: dict[str, int] = dataclasses.field(default_factory=dict)  # data_*: tokens the training rows cost to make
    counts: dict[str, float] = dataclasses.field(default_factory=dict)  # tokens_* / count_*: summed over the training log
    sampling_wall_s: float | None = None  # of train_wall_s: inside the in-loop sampler (rollout), summed over the steps
    validation_wall_s: float | None = None  # of train_wall_s: validation generations and their scores at the scored steps

    def numbers(self) -> dict[str, float]:
        """Every numeric cost by its result.json name (all but memory_kind)."""
        return {k: v for k, v in self.to_json().items() if k != "memory_kind"}

    def to_json(self) -> dict:
        timed = {k: getattr(self, k) for k in TIMED_FIELDS if getattr(self, k) is not None}
        return {"rows": self.rows, "steps": self.steps, "train_wall_s": self.train_wall_s, "peak_memory_mb": self.peak_memory_mb,
                "memory_kind": self.memory_kind, **timed, **self.data_tokens, **self.counts}

    @classmethod
    def from_json(cls, d: dict) -> "Cost":
        extra = {k: v for k, v in d.items() if k not in COST_FIELDS + TIMED_FIELDS}
        return cls(*(d[k] for k in COST_FIELDS), data_tokens={k: v for k, v in extra.items() if k.startswith("data_")},
                   counts={k: v for k, v in extra.items() if not k.startswith("data_")}, **{k: d[k] for k in TIMED_FIELDS if k in d})


def job_to_json(job: Job) -> dict:
    """A job as result.json names it: its fields, the setting as a {key: value} dict."""
    return {**dataclasses.asdict(job), "setting": dict(job.setting)}


def job_from_json(d: dict) -> Job:
    return Job(d["entry"], d["seed"], as_setting(d.get("setting") or {}), d.get("data_share", 1.0), d.get("relabel_share", 0.0),
               settings=d.get("settings", ""))


@dataclass(frozen=True)
class JobResult:
    """One trained job (RUN/bench/runs/KEY/result.json): its validation scores at each scored step, and its cost."""

    job: Job
    method: str  # the registered method's name
    label: str  # the row's label in tables
    steps: int  # the training budget in steps
    val: dict[int, dict[str, float]]  # scored step -> validation scores ("win_rate", "rougeL", "word_count")
    cost: Cost
    final_loss: float | None  # the last step's loss (None when nothing was logged)
    oracle: str | None = None  # the preference oracle it trained with (OracleConfig.label; None: its method asks none)

    def val_json(self) -> dict[str, dict[str, float]]:
        """The validation scores keyed by str(step), as JSON holds them."""
        return {str(step): scores for step, scores in self.val.items()}

    def to_json(self) -> dict:
        return {"job": job_to_json(self.job), "method": self.method, "label": self.label, "steps": self.steps,
                "val": self.val_json(), "cost": self.cost.to_json(), "final_loss": self.final_loss,
                **({"oracle": self.oracle} if self.oracle is not None else {})}

    @classmethod
    def from_json(cls, d: dict) -> "JobResult":
        return cls(job_from_json(d["job"]), d["method"], d["label"], d["steps"], {int(s): v for s, v in d["val"].items()},
                   Cost.from_json(d["cost"]), d.get("final_loss"), d.get("oracle"))


@dataclass(frozen=True)
class TestResult:
    """A job's test generations from one step's weights, judged (RUN/bench/runs/KEY/test_stepN.json)."""

    __test__ = False  # not a pytest test class

    step: int
    generations: list[str]  # one per test prompt, in split order
    judge_scores: list[float]  # the evaluation judge's, per generation
    training_judge_scores: list[float] | None  # the training judge's, when it is another judge
    eval_wall_s: float  # generating and grading
    generation_wall_s: float | None = None  # of eval_wall_s: the test generations (None in files written before it was timed)
    grading_wall_s: float | None = None  # of eval_wall_s: the judges' scores
    calibration_wall_s: float | None = None  # apart from eval_wall_s: scoring the calibration candidates (None: not scored)

    def to_json(self) -> dict:
        timed = {k: getattr(self, k) for k in TEST_TIMED if getattr(self, k) is not None}
        return {"step": self.step, "generations": self.generations, "judge_scores": self.judge_scores,
                "training_judge_scores": self.training_judge_scores, "eval_wall_s": self.eval_wall_s, **timed}

    @classmethod
    def from_json(cls, d: dict) -> "TestResult":
        return cls(d["step"], d["generations"], d["judge_scores"], d.get("training_judge_scores"), d["eval_wall_s"],
                   *(d.get(k) for k in TEST_TIMED))


def phases(result: JobResult, test: TestResult | None) -> dict[str, float | None]:
    """A job's wall seconds by phase (PHASES) and their totals (PHASE_TOTALS); None where its files predate a timer.

    training: train_wall_s less in-loop sampling and validation (model loading, backward passes,
    optimizer steps and checkpoint writes included); sampling: inside the in-loop sampler;
    validation: validation generations and scores; test_generation and grading: the test stage; calibration: scoring
    the calibration candidates from the tested weights (loading them included), outside the test stage's total.
    """
    c = result.cost
    timed = c.sampling_wall_s is not None and c.validation_wall_s is not None
    return {"train_wall": c.train_wall_s, "test_wall": test.eval_wall_s if test else None,
            "training": round(c.train_wall_s - c.sampling_wall_s - c.validation_wall_s, 1) if timed else None,
            "sampling": c.sampling_wall_s, "validation": c.validation_wall_s,
            "test_generation": test.generation_wall_s if test else None, "grading": test.grading_wall_s if test else None,
            "calibration": test.calibration_wall_s if test else None}


@dataclass(frozen=True)
class Choice:
    """An entry's chosen (setting, step) on validation (one entry of RUN/bench/<report>/selection.json)."""

    setting: dict  # the grid point {key: value}
    step: int
    val: dict[str, float]  # its validation scores

    def to_json(self) -> dict:
        return {"setting": self.setting, "step": self.step, "val": self.val}

    @classmethod
    def from_json(cls, d: dict) -> "Choice":
        return cls(dict(d["setting"]), d["step"], d["val"])


class FlatRecord:
    """A dataclass whose JSON file is its fields as they are: `to_json` is `dataclasses.asdict`, `from_json` its inverse."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict):
        return cls(**d)


@dataclass(frozen=True)
class CandidateSet(FlatRecord):
    """The calibration candidates (RUN/bench/calibration/candidates.json): per test prompt, the teacher's and the SFT
    student's samples, empty and repeated ones dropped, graded once by the evaluation judge (`bench.calibration`)."""

    id: str  # a hash of the settings and the candidates: every row's scores name the set they rank
    settings: dict  # what the set was made with (bench.calibration, the length, the seed): another config is refused
    ids: list[str]  # the test examples' ids, in split order
    candidates: list[list[str]]  # per prompt, its K_i candidates (teacher's first)
    sources: list[list[str]]  # per candidate, whose sample it is: "teacher" or "student"
    judge_scores: list[list[float]]  # per candidate, the evaluation judge's score
    reference_scores: list[float]  # per prompt, the evaluation judge's score of its reference


@dataclass(frozen=True)
class CandidateScores(FlatRecord):
    """One model's length-normalised log-likelihood of every candidate: RUN/bench/calibration/ROW.json for a base row,
    RUN/bench/runs/KEY/calibration_stepN.json for a tested job."""

    candidates: str  # the CandidateSet.id it scored
    scores: list[list[float]] | None  # per prompt, per candidate: log q(y|x) / |y| (None: the model cannot score text)
    wall_s: float  # loading the model and scoring
    unavailable: str | None = None  # why `scores` is None


@dataclass(frozen=True)
class Calibration:
    """What the calibration numbers need (`Scored.calibration`): the candidate set and every row's scores of it."""

    candidates: CandidateSet
    base: dict[str, CandidateScores]  # base row (teacher, student_init, student_sft) -> its scores
    jobs: dict[str, CandidateScores]  # Job.key -> its scores from the tested weights, for the tested jobs that have them


@dataclass(frozen=True)
class Scored:
    """Everything the bench's numbers need, judged by `Bench.scored`: no model or judge runs after it."""

    references: list[str]  # the test split's references, in split order
    groups: list  # io.group_of of each test example: what the intervals resample
    jobs: list[Job]  # every job that produced test generations
    runs: dict[str, JobResult]  # Job.key -> its result, for `jobs`
    tests: dict[str, TestResult]  # Job.key -> its test result at the chosen step, for `jobs`
    grid: dict[str, JobResult]  # Job.key -> result of every selection job (every grid point, first seed)
    chosen: dict[str, Choice]  # entry name -> its choice on validation
    base: dict[str, list[str]]  # base row (teacher, student_init, student_sft) -> its test generations
    labels: dict[str, str]  # base row -> its label
    eval_scores: dict[str, list[float]]  # "reference" and each base row -> the evaluation judge's scores
    training_scores: dict[str, list[float]] | None  # the same by the training judge, when it is another judge
    gap_validation: dict  # Bench.check_gap's result: teacher − SFT student on validation
    val_reference: dict[str, dict[str, float]]  # student_init / student_sft -> validation scores
    n_val: int  # validation prompts that choose
    sft_logs: dict[str, list[dict]]  # role -> its SFT training log
    sft_choices: dict[str, dict]  # role -> its SFT choice.json (prefdistill.training.best_checkpoint)
    soft_scale: dict | None = None  # {"scale", "how"}: the evaluation judge's Bradley–Terry scale (judges.scale); None: 1
    calibration: Calibration | None = None  # the calibration candidates and their scores (None: off, or an older bench)
    prompts: list[str] | None = None  # the test split's prompts, in split order (the judge check's hand sample)
    similarity: dict[str, list[float]] | None = None  # base row or Job.key -> each output's cosine to its reference
    tokenizers: dict[str, str] | None = None  # "teacher" / "student" -> the tokenizer's label (`tokenizer_label`)

    def row_outputs(self, entries) -> dict[str, RowOutputs]:
        """Every base row and every entry's main runs (one list per seed), as `evaluation.judge_check` reads them."""
        sim = self.similarity
        out = {row: RowOutputs(self.labels[row], [gens], [self.eval_scores[row]], [sim[row]] if sim else None)
               for row, gens in self.base.items()}
        for entry in entries:
            jobs = [j for j in self.jobs if j.entry == entry.name and j.is_main]
            if jobs:
                out[entry.name] = RowOutputs(self.runs[jobs[0].key].label, [self.tests[j.key].generations for j in jobs],
                                             [self.tests[j.key].judge_scores for j in jobs],
                                             [sim[j.key] for j in jobs] if sim else None)
        return out

    def main_runs(self, entry: str) -> list[tuple[JobResult, TestResult]]:
        """(result, test) of the entry's main jobs (all the data, none relabelled), one per seed, in job order."""
        return [(self.runs[j.key], self.tests[j.key]) for j in self.jobs if j.entry == entry and j.is_main]
