"""`prefdistill bench CONFIG`: every method from one SFT student, one budget, settings chosen on validation.

    from prefdistill.bench.runner import Bench
    cfg, bench = load_bench_config("configs/bench.yaml")   # the run config, and its own `bench:` section
    results = Bench(cfg, bench).run()                      # -> RUN/bench/<report>/{results.json,report.md}

1. The shared stages (reward, sft) run once in the run folder, as in `prefdistill run`;
   each SFT (teacher and student) keeps the step a method would: the best
   `bench.select_metric` on the same validation prompts, by the same `choose`, among its
   `sft.ROLE.eval_every` evaluations and its last step (`Bench.sft_selection`).
2. The teacher and the SFT student answer the validation prompts; unless the teacher wins
   clearly more often (paired CI above 0 and a gap of at least `bench.gap_floor` points)
   the bench stops, since no distillation method could then show anything.
3. The pairs stage runs, and the calibration candidates are sampled, graded and scored by the
   base rows (`prefdistill.bench.calibration`); then every grid point of every method trains a copy of the SFT
   student on the first seed (same steps, batch size, pairs and prompts for all) and is
   scored on validation at `bench.checkpoints` and its last step. The best (setting,
   step) of each method is its choice (RUN/bench/<report>/selection.json).
4. The choice trains on the other seeds; every chosen (method, seed) generates on the test
   prompts from the chosen step's weights and is judged; the same weights score the calibration candidates.

A job is one (method, setting, seed, data share, relabel share): its training log, its
validation scores and costs land in RUN/bench/runs/KEY/result.json, test generations in
RUN/bench/runs/KEY/test_stepN/ (every path: `prefdistill.run.folder.BenchFolder`). Nothing
finished is redone and a crashed job resumes from its training state, so an interrupted
bench picks up where it stopped. A runner holds a job's claim file while it works on it
(`prefdistill.run.claims`), so plain runs, `--job` tasks and workers (`prefdistill.bench.units`)
can share one run folder.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prefdistill.bench import calibration
from prefdistill.bench.numbers import summarize
from prefdistill.bench.plan import (LR, SHARED, Job, apply_setting, as_setting, choose, judged_jobs, scored_steps, selection_jobs,
                                    subset)
from prefdistill.bench.records import Choice, Cost, JobResult, Scored, TestResult
from prefdistill.bench.resources import data_tokens, peak_memory, reset_peak_memory
from prefdistill.config.eval_rows import BASE_ROWS
from prefdistill.config.schema import BenchConfig, BenchMethod, RunConfig
from prefdistill.data.pairs import load_pairs, relabel
from prefdistill.errors import ConfigError, TeacherGapError
from prefdistill.evaluation.grading import score_all
from prefdistill.evaluation.metrics import paired_difference, pairwise_outcomes, resampled, rouge, word_count
from prefdistill.io import group_of, read_json, write_json, write_jsonl
from prefdistill.judges.scale import judge_scale
from prefdistill.judges.similarity import reference_similarity_if_available
from prefdistill.methods import ResolvedMethod, resolve
from prefdistill.methods.common import COUNT_PREFIX
from prefdistill.models.hf import pick_device
from prefdistill.models.vocab_map import tokenizer_label_or_none
from prefdistill.reporting.bench_report import console_summary, write_bench_report
from prefdistill.run.claims import DEFAULT_EXPIRY_S, Claim, hold
from prefdistill.run.folder import BenchFolder
from prefdistill.run.pipeline import Pipeline
from prefdistill.run.train_job import train_job
from prefdistill.training.best_checkpoint import Selection
from prefdistill.training.job import TrainingData, TrainJob
from prefdistill.training.loop import total_steps


def entry_method(entry: BenchMethod, setting: tuple = ()) -> tuple[ResolvedMethod, float | None]:
    """(the entry's method resolved at a grid point, the point's lr or None)."""
    params, _ = apply_setting(entry, setting, 0.0)
    return resolve(entry.method, params, f"bench.methods.{entry.name}.params"), dict(setting).get(LR)


@dataclass(frozen=True)
class BenchOptions:
    """How a Bench runs (not what it computes): the same in every worker process of one bench."""
    allow_config_change: bool = False
    ignore_gap: bool = False
    config_name: str | None = None
    claim_expiry_s: float = DEFAULT_EXPIRY_S


class Bench:
    def __init__(self, cfg: RunConfig, bench: BenchConfig, *, allow_config_change: bool = False, ignore_gap: bool = False,
                 config_name: str | None = None, claim_expiry_s: float = DEFAULT_EXPIRY_S):
        """`config_name`: the bench config's name (its file's stem, `_quick` added under --quick); the results are
        also written as RUN/bench/<report>/bench_<config_name>.json, the file benchmarks/results/ keeps.
        `claim_expiry_s`: a job's claim untouched this long is stale (its runner is gone) and taken over."""
        if not bench.methods:
            raise ConfigError("bench.methods: list the methods to compare (see configs/bench.yaml)")
        self.cfg, self.bench, self.ignore_gap, self.config_name = cfg, bench, ignore_gap, config_name or cfg.name
        self.options = BenchOptions(allow_config_change, ignore_gap, config_name, claim_expiry_s)
        self.entries: dict[str, BenchMethod] = {m.name: m for m in bench.methods}
        self.pipe = Pipeline(cfg, allow_config_change=allow_config_change, methods=[entry_method(m)[0] for m in bench.methods],
                             sft_selection=self.sft_selection())
        self.art = self.pipe.artifacts
        self.paths: BenchFolder = self.art.folder.bench_folder(bench.report)
        self._graders: dict | None = None
        self._val_refs: list[float] = []

    @property
    def graders(self) -> dict:
        """{"eval": the grader of every row, "training": the judge training used, when it is another one}."""
        if self._graders is None:
            self._graders = self.art.graders()
        return self._graders

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """The whole bench in this process (jobs another runner holds are waited for); its results. In parallel:
        `prefdistill.bench.units.run_parallel`, which ends with this."""
        t0 = time.time()
        gap, val_reference = self.prepare()
        chosen = self.select()
        jobs = judged_jobs(self.bench, {name: as_setting(c["setting"]) for name, c in chosen.items()})
        for i, job in enumerate(jobs):
            print(f"[prefdistill] bench job {i + 1}/{len(jobs)}: {job.key}", flush=True)
            self.test_result(job, chosen[job.entry]["step"])
        results = summarize(self.cfg, self.bench, self.scored(jobs, chosen, gap, val_reference))
        results["judges"] = self.art.judges_info()
        results["timings_s"] = self.art.folder.timings()
        results["wall_s"]["this_invocation"] = round(time.time() - t0, 1)
        results["config"] = self.config_name
        write_json(self.paths.report_file("results.json"), results)
        write_json(self.paths.report_file(f"bench_{self.config_name}.json"), results)
        report = write_bench_report(self.paths.report, results)
        print(console_summary(results), flush=True)
        print(f"[prefdistill] bench report: {report}", flush=True)
        return results

    def prepare(self) -> tuple[dict, dict]:
        """The shared stages every job starts from (reward, SFT, the gap check, pairs, the base rows' validation
        scores), once, under the claim `shared`; (gap, validation reference). REPORT/shared.json marks them done."""
        with self.claimed(SHARED):
            self.pipe.run(["reward", "sft"])
            gap = self.check_gap()
            self.pipe.run(["pairs"])
            timed = self.art.folder.timed  # each shared part's wall time in RUN/timings.json, as the stages'
            timed("calibration_candidates", lambda: calibration.prepare(self))  # sampled, graded, scored by the base rows
            write_json(self.paths.report_file("bench.json"), dataclasses.asdict(self.bench))  # the bench's own settings
            val_reference = timed("validation_reference", lambda: {row: self.val_scores(self.val_generations(row))
                                                                   for row in ("student_init", "student_sft")})
            write_json(self.paths.report_file("shared.json"), {"gap_validation": gap, "val_reference": val_reference})
        return gap, val_reference

    @contextmanager
    def claimed(self, name: str, *, wait: bool = True):
        """Hold the claim `name` (waiting for its live holder unless `wait` is off); yields whether it is ours."""
        if wait:
            with hold(self.paths.claim(name), expiry_s=self.options.claim_expiry_s):
                yield True
            return
        claim = Claim(self.paths.claim(name), expiry_s=self.options.claim_expiry_s)
        if not claim.acquire():
            yield False
            return
        try:
            yield True
        finally:
            claim.release()

    def measure_gap(self) -> dict:
        val = self.art.splits["validation"]  # all of it: the gap decides whether the bench runs at all
        wins = {row: self.val_wins(self.val_generations(row, val), val) for row in ("teacher", "student_sft")}
        groups = [group_of(e) for e in val]  # the interval resamples whole groups (a paper's prompts together)
        gap = paired_difference(wins["teacher"], wins["student_sft"], n_boot=self.cfg.eval.n_bootstrap, seed=self.cfg.seed,
                                groups=groups)
        return {**gap, "resampled": resampled(len(val), groups)}

    def check_gap(self) -> dict:
        """Teacher − SFT student on validation (paired win-rate difference, points); stop when it shows no real gap."""
        path = self.paths.gap
        if not path.is_file():
            self.art.folder.timed("gap_check", lambda: write_json(path, self.measure_gap()))
        gap = read_json(path)
        floor = self.bench.gap_floor
        passed = gap["ci"][0] > 0 and gap["diff"] >= floor
        unit = f" in {gap['groups']} groups" if "groups" in gap else " (resampled one by one: an old file)"
        print(f"[prefdistill] teacher − SFT student on {gap['n']} validation prompts{unit}: {gap['diff']:+.1f} points of win rate "
              f"[{gap['ci'][0]:.1f}, {gap['ci'][1]:.1f}] (floor {floor:g})", flush=True)
        if not passed and not self.ignore_gap:
            raise TeacherGapError(
                f"the teacher is not clearly better than the SFT student ({gap['diff']:+.1f} points [{gap['ci'][0]:.1f}, "
                f"{gap['ci'][1]:.1f}] on validation; the bench needs a CI above 0 and at least bench.gap_floor={floor:g}). "
                "No distillation method can show anything with this pair. Give the teacher more SFT (sft.teacher.steps, "
                "lr), use a stronger teacher or a weaker student, or pass --ignore-gap to run anyway. Everything computed "
                f"so far is kept in {self.art.folder.root}.")
        return {**gap, "floor": floor, "passed": passed, "ignored": not passed}

    # ------------------------------------------------------------------ validation
    def sft_selection(self) -> Selection:
        """The SFT baselines' step, chosen as every method's: bench.select_metric of `val_scores` on the same validation
        prompts, by `choose` (teacher and student, at each sft.ROLE.eval_every step and the last; under sft.select auto)."""
        metric = self.bench.select_metric
        return Selection(metric, lambda candidates: choose(candidates, metric), score=lambda lm: self.val_scores(self.val_generate(lm)),
                         rule={"val_prompts": self.bench.val_prompts})

    @property
    def val_examples(self):
        val = self.art.splits["validation"]
        return val[:self.bench.val_prompts] if self.bench.val_prompts else val

    def val_generations(self, row: str, examples=None) -> list[str]:
        """A base row's greedy generations on validation prompts (default: those that choose; cached in RUN/bench/val/ROW)."""
        role, ckpt = self.art.eval_model(row)
        examples = examples if examples is not None else self.val_examples
        result = self.art.sample(role, ckpt, examples, self.cfg.eval.sampling, self.paths.val(row), seed=self.cfg.seed,
                                  desc=f"validation {row}")
        result.require_all(f"validation {row}")
        return [result.samples[e.id][0] for e in examples]

    def val_generate(self, lm) -> list[str]:
        """`lm`'s generations (eval.sampling) on the validation prompts that choose: every candidate step of SFT and methods."""
        return [c[0] for c in lm.generate([e.prompt for e in self.val_examples], self.cfg.eval.sampling, seed=self.cfg.seed, desc="")]

    def val_wins(self, generations: list[str], examples=None) -> list[float]:
        """Win (1 / ½ / 0) of each generation against its validation reference, by the evaluation judge."""
        examples = examples if examples is not None else self.val_examples
        prompts = [e.prompt for e in examples]
        if len(self._val_refs) < len(examples):  # the references' scores, for the longest prefix asked so far
            self._val_refs = self.graders["eval"].score(prompts, [e.target for e in examples])
        return pairwise_outcomes(self.graders["eval"].score(prompts, generations), self._val_refs[:len(examples)])

    def val_scores(self, generations: list[str]) -> dict:
        wins = self.val_wins(generations)
        refs = [e.target for e in self.val_examples]
        return {"win_rate": 100 * sum(wins) / len(wins), "rougeL": rouge(generations, refs)["rougeL"],
                "word_count": sum(word_count(g) for g in generations) / len(generations)}

    # ------------------------------------------------------------------ choice
    def select(self) -> dict[str, dict]:
        """Every grid point of every entry on the first seed, scored on validation; the best (setting, step) per entry."""
        path = self.paths.report_file("selection.json")
        jobs = selection_jobs(self.bench)
        known = read_json(path) if path.is_file() else {}
        rule = {"select_metric": self.bench.select_metric, "val_prompts": len(self.val_examples)}
        if known.get("_rule", rule) != rule:
            raise ConfigError(f"{path} chose with {known['_rule']}, this config with {rule}: the jobs' validation scores "
                              "were made the old way. Use another bench.report (and run folder) or delete RUN/bench/runs.")
        if known and all(k in known for k in self.entries) and all(self.done(j) for j in jobs):
            return {k: v for k, v in known.items() if k in self.entries}
        for i, job in enumerate(jobs):
            print(f"[prefdistill] bench grid {i + 1}/{len(jobs)}: {job.key}", flush=True)
            self.run_job(job)
        chosen = {}
        for name in self.entries:
            candidates = [{"setting": j.setting, "step": int(step), "val": val, "job": j}
                          for j in jobs if j.entry == name for step, val in read_json(self.paths.result(j.key))["val"].items()]
            best = choose(candidates, self.bench.select_metric)
            chosen[name] = {"setting": dict(best["setting"]), "step": best["step"], "val": best["val"]}
            for j in jobs:  # only the chosen job's weights are still needed (for its test generations)
                if j.entry == name and j != best["job"]:
                    self.drop_weights(j)
        write_json(path, {"_rule": rule, **chosen})
        return chosen

    # ------------------------------------------------------------------ jobs
    def done(self, job: Job) -> bool:
        return self.paths.result(job.key).is_file()

    def job_data(self, job: Job, method: ResolvedMethod) -> TrainingData:
        data = self.art.training_data(method, self.pairs_file(job.relabel_share))
        return dataclasses.replace(data, rows=subset(data.rows, job.data_share, self.cfg.seed)) if job.data_share < 1.0 else data

    def pairs_file(self, relabel_share: float) -> Path:
        """The pairs, with a share of them ordered by the judge (written once per share, by one runner)."""
        base = self.art.folder.pairs
        if relabel_share == 0.0:
            return base
        path = self.paths.relabelled_pairs(relabel_share)
        if not path.is_file():
            with self.claimed(path.stem):
                if not path.is_file():
                    pairs = load_pairs(base)
                    relabel(pairs, self.art.training_judge(), relabel_share, self.cfg.seed)
                    write_jsonl(path, pairs)
        return path

    def run_job(self, job: Job) -> JobResult:
        """Train one job under its claim (waiting for a runner that holds it); its result.json."""
        if self.done(job):
            return JobResult.from_json(read_json(self.paths.result(job.key)))
        with self.claimed(job.key):
            return self.train(job)

    def train(self, job: Job) -> JobResult:
        """Train one job, scoring validation at its scored steps (weights of each kept as stepN/); its result.json.
        The caller holds the job's claim."""
        if self.done(job):
            return JobResult.from_json(read_json(self.paths.result(job.key)))
        entry = self.entries[job.entry]
        method, lr = entry_method(entry, job.setting)
        data = self.job_data(job, method)
        rows = data.rows
        train_cfg = self.cfg.distill.train if lr is None else dataclasses.replace(self.cfg.distill.train, lr=lr)
        steps = total_steps(train_cfg, len(rows))
        scored = scored_steps(self.bench, steps)
        reset_peak_memory()
        trained = train_job(TrainJob(method, data, train_cfg, self.paths.checkpoint(job.key), seed=job.seed, oracle=entry.oracle,
                                     on_step=self.val_hook(job.key, scored, steps)), self.art)
        log, train_s, memory = trained.log, trained.wall_s, peak_memory()
        val = {s: read_json(self.paths.val_scores(job.key, s))["scores"] for s in scored}
        counted = sorted({k for r in log for k in r if k.startswith(COUNT_PREFIX)})
        timed = {f"{phase}_wall_s": round(sum(r.get(f"{phase}_time_s", 0.0) for r in log), 1) for phase in ("sampling", "validation")}
        cost = Cost(len(rows), len(log), round(train_s, 1), round(memory["mb"], 1), memory["kind"],
                    data_tokens=data_tokens(self.cfg, method.needs, rows),
                    counts={k: sum(r.get(k, 0.0) for r in log) for k in counted}, **timed)
        oracle = (entry.oracle or self.cfg.oracle).label if "oracle" in method.needs else None
        result = JobResult(job, entry.method, entry.label or method.label, steps, val, cost, log[-1]["loss"] if log else None,
                           oracle)
        write_json(self.paths.result(job.key), result.to_json())
        return result

    def val_hook(self, key: str, scored: list[int], steps: int):
        """Score the weights on validation at each scored step (once: a resumed run finds the file); keep them as stepN/."""
        def hook(step, lm, snapshot):
            path = self.paths.val_scores(key, step)
            if step not in scored or path.is_file():
                return None
            t0 = time.time()
            gens = self.val_generate(lm)
            scores = self.val_scores(gens)
            spent = round(time.time() - t0, 3)  # the job's validation phase (the snapshot below counts as training)
            if step < steps:
                snapshot(self.paths.weights(key, step))
            write_json(path, {"scores": scores, "generations": gens})
            return {**{f"val_{k}": v for k, v in scores.items()}, "validation_time_s": spent}
        return hook

    def test_result(self, job: Job, step: int) -> TestResult:
        """The job's test generations from the weights at `step`, judged, under the job's claim."""
        path = self.paths.test(job.key, step)
        if path.is_file():
            self.drop_weights(job)  # a job retrained on resume (its result.json was lost) must not keep its weights
            return TestResult.from_json(read_json(path))
        with self.claimed(job.key):
            return self.test(job, step)

    def test(self, job: Job, step: int) -> TestResult:
        """Train the job if needed, then generate on the test prompts from its weights at `step` and judge them; the kept
        weights are then dropped. The caller holds the job's claim."""
        result = self.train(job)
        path = self.paths.test(job.key, step)
        if path.is_file():
            self.drop_weights(job)
            return TestResult.from_json(read_json(path))
        ckpt = self.paths.checkpoint(job.key) if step == result.steps else self.paths.weights(job.key, step)
        t0 = time.time()
        gens = self.art.test_generations("student", ckpt, self.paths.test_samples(job.key, step), desc=f"eval {job.key}")
        t1 = time.time()
        prompts = [e.prompt for e in self.art.splits["test"]]
        scores = {role: judge.score(prompts, gens) for role, judge in self.graders.items()}
        t2 = time.time()
        calibration_s = calibration.score_job(self, job, step, ckpt)  # from the same weights, before they are dropped
        test = TestResult(step, gens, scores["eval"], scores.get("training"), round(t2 - t0, 1), round(t1 - t0, 1), round(t2 - t1, 1),
                          calibration_s)
        write_json(path, test.to_json())
        self.drop_weights(job)
        return test

    def drop_weights(self, job: Job) -> None:
        if not self.bench.keep_checkpoints:
            for kept in self.paths.kept_weights(job.key):
                shutil.rmtree(kept, ignore_errors=True)

    # ------------------------------------------------------------------ what the numbers need
    def scored(self, jobs: list[Job], chosen: dict, gap: dict, val_reference: dict) -> Scored:
        """Everything `bench.numbers.summarize` needs, judged here: no model or judge runs there."""
        test = self.art.splits["test"]
        prompts, refs = [e.prompt for e in test], [e.target for e in test]
        base = self.art.folder.timed("base_test_rows", lambda: {row: self.art.row_generations(row) for row in BASE_ROWS})
        load = lambda j: JobResult.from_json(read_json(self.paths.result(j.key)))  # noqa: E731
        tests = {j.key: self.test_result(j, chosen[j.entry]["step"]) for j in jobs}  # trains a job whose result was lost
        runs = {j.key: load(j) for j in jobs}
        scores = score_all(self.graders, prompts, refs, base)
        similarity = reference_similarity_if_available(refs, {**base, **{k: t.generations for k, t in tests.items()}},
                                                       self.cfg.reward.encoder, str(pick_device("auto")))  # judge_check
        return Scored(references=refs, groups=[group_of(e) for e in test], jobs=jobs, runs=runs, tests=tests,
                      grid={j.key: load(j) for j in selection_jobs(self.bench)},
                      chosen={name: Choice.from_json(c) for name, c in chosen.items()}, base=base,
                      labels={r: self.art.row_label(r) for r in base}, eval_scores=scores["eval"],
                      training_scores=scores.get("training"), gap_validation=gap, val_reference=val_reference,
                      n_val=len(self.val_examples), sft_logs=self.art.sft_logs(), sft_choices=self.art.sft_choices(),
                      soft_scale=judge_scale(self.graders["eval"], self.art.splits["validation"], negatives=self.cfg.reward.negatives,
                                             seed=self.cfg.seed),
                      calibration=calibration.gather(self, jobs, chosen), prompts=prompts, similarity=similarity,
                      tokenizers={role: tokenizer_label_or_none(m) for role, m in (("teacher", self.cfg.teacher),
                                                                                    ("student", self.cfg.student))})
