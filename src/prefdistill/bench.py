"""`prefdistill bench CONFIG`: every method from one SFT student, one set of pairs, one budget.

    from prefdistill.bench import Bench
    cfg, bench = load_bench_config("configs/bench.yaml")   # the run config, and its own `bench:` section
    results = Bench(cfg, bench).run()                      # -> RUN/bench/main/{results.json,report.md}

The shared stages (reward, sft, pairs) run once in the run folder, exactly as in
`prefdistill run`. Then each job — a bench entry × training seed × data share × relabel
share — trains a copy of the SFT student with `distill.train` (same steps, same batch
size for all), generates on the test split and is judged. A job's result lands in
RUN/bench/runs/KEY/result.json; a finished job is never redone and a crashed one resumes
from its training state, so an interrupted bench picks up where it stopped.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prefdistill.config import BenchConfig, BenchMethod, RunConfig
from prefdistill.errors import ConfigError
from prefdistill.evaluation import score_all
from prefdistill.io import read_json, write_json, write_jsonl
from prefdistill.methods import get_method
from prefdistill.methods.common import COUNT_PREFIX, student_side, teacher_side
from prefdistill.methods.registry import build_params, requirements
from prefdistill.models import load_tokenizer
from prefdistill.pairs import load_pairs, relabel
from prefdistill.pipeline import Pipeline
from prefdistill.rows import BASE_ROWS


@dataclass(frozen=True)
class Job:
    entry: str  # BenchMethod.name
    seed: int
    data_share: float = 1.0
    relabel_share: float = 0.0
    settings: str = ""  # short hash of the entry's method and params: edited params make a new job

    @property
    def key(self) -> str:
        return f"{self.entry}-{self.settings}-seed{self.seed}-data{self.data_share:g}-relabel{self.relabel_share:g}"

    @property
    def is_main(self) -> bool:
        return self.data_share == 1.0 and self.relabel_share == 0.0


def plan(b: BenchConfig) -> list[Job]:
    """Main table (every entry × seed), then the data-share and relabel sweeps (first seed)."""
    h = {m.name: settings_hash(m) for m in b.methods}
    seeds = {m.name: m.seeds or b.seeds for m in b.methods}
    jobs = [Job(m.name, s, settings=h[m.name]) for m in b.methods for s in seeds[m.name]]
    swept = b.data_share_methods if b.data_share_methods is not None else [m.name for m in b.methods]
    jobs += [Job(name, seeds[name][0], share, settings=h[name]) for name in swept for share in b.data_shares if share != 1.0]
    jobs += [Job(b.relabel_method, seeds[b.relabel_method][0], relabel_share=r, settings=h[b.relabel_method])
             for r in b.relabel_shares if r != 0.0]
    return list(dict.fromkeys(jobs))


def settings_hash(entry: BenchMethod) -> str:
    text = json.dumps({"method": entry.method, "params": entry.params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def subset(rows: list[dict], share: float, seed: int) -> list[dict]:
    """The first ⌈share·n⌉ rows of one seeded permutation: smaller shares are nested in larger ones."""
    order = np.random.default_rng(seed).permutation(len(rows))
    keep = max(1, math.ceil(share * len(rows)))
    return [rows[i] for i in sorted(order[:keep])]


# ----------------------------------------------------------------------------- memory


def reset_peak_memory() -> None:
    """Start a new peak-memory window (CUDA allocator, or Linux's VmHWM via clear_refs)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: ru_maxrss (the whole process's peak) is reported instead


def peak_memory() -> dict:
    """{"mb": peak since reset_peak_memory, "kind": what was measured}."""
    if torch.cuda.is_available():
        return {"mb": torch.cuda.max_memory_allocated() / 2**20, "kind": "GPU allocated"}
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"mb": int(line.split()[1]) / 1024, "kind": "process RSS"}
    except OSError:
        pass
    return {"mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "kind": "process RSS (whole run)"}


# ----------------------------------------------------------------------------- the bench


def entry_params(entry: BenchMethod):
    spec = get_method(entry.method)
    return spec, build_params(spec, entry.params, f"bench.methods.{entry.name}.params")


class Bench:
    def __init__(self, cfg: RunConfig, bench: BenchConfig, *, allow_config_change: bool = False):
        if not bench.methods:
            raise ConfigError("bench.methods: list the methods to compare (see configs/bench.yaml)")
        self.cfg, self.bench = cfg, bench
        self.entries: dict[str, BenchMethod] = {m.name: m for m in bench.methods}
        self.pipe = Pipeline(cfg, allow_config_change=allow_config_change, methods=[entry_params(m) for m in bench.methods])
        self.dir = self.pipe.folder.bench
        self._graders: dict | None = None

    @property
    def graders(self) -> dict:
        """{"eval": the grader of every row, "training": the judge training used, when it is another one}."""
        if self._graders is None:
            self._graders = self.pipe.graders()
        return self._graders

    def run(self) -> dict:
        self.pipe.run(["reward", "sft", "pairs"])
        write_json(self.dir / self.bench.report / "bench.json", dataclasses.asdict(self.bench))  # the bench's own settings
        base = {row: self.pipe.row_generations(row) for row in BASE_ROWS}
        jobs = plan(self.bench)
        t0 = time.time()
        for i, job in enumerate(jobs):
            print(f"[prefdistill] bench job {i + 1}/{len(jobs)}: {job.key}", flush=True)
            self.run_job(job)
        from prefdistill.bench_report import console_summary, summarize, write_bench_report

        results = summarize(self.cfg, self.bench, self.scored(base, jobs))
        results["judges"] = self.pipe.judges_info()
        results["timings_s"] = self.pipe.folder.timings()
        results["wall_s"]["this_invocation"] = round(time.time() - t0, 1)
        out = self.dir / self.bench.report
        write_json(out / "results.json", results)
        report = write_bench_report(out, results)
        print(console_summary(results), flush=True)
        print(f"[prefdistill] bench report: {report}", flush=True)
        return results

    def scored(self, base: dict[str, list[str]], jobs) -> dict:
        """Everything the report needs, judged here: test references, base rows and job results with every judge's scores."""
        test = self.pipe.splits["test"]
        prompts, refs = [e.prompt for e in test], [e.target for e in test]
        done = {j.key: read_json(self.dir / "runs" / j.key / "result.json") for j in jobs}
        for r in done.values():  # results from before the training judge was graded with too
            if "training" in self.graders and not r.get("training_judge_scores"):
                r["training_judge_scores"] = self.graders["training"].score(prompts, r["generations"])
        return {"references": refs, "jobs": jobs, "done": done, "base": base, "labels": {r: self.pipe.row_label(r) for r in base},
                "scores": score_all(self.graders, prompts, refs, base)}

    # ------------------------------------------------------------------ pieces
    def pairs_file(self, relabel_share: float) -> Path:
        """The pairs, with a share of them ordered by the judge (written once per share)."""
        base = self.pipe.folder.pairs
        if relabel_share == 0.0:
            return base
        path = self.dir / "pairs" / f"relabel{relabel_share:g}.jsonl"
        if not path.is_file():
            pairs = load_pairs(base)
            relabel(pairs, self.pipe.training_judge(), relabel_share, self.cfg.seed)
            write_jsonl(path, pairs)
        return path

    def job_rows(self, job: Job, spec, params) -> list[dict]:
        rows = self.pipe.distill_rows(spec, params, self.pairs_file(job.relabel_share))
        return subset(rows, job.data_share, self.cfg.seed) if job.data_share < 1.0 else rows

    def run_job(self, job: Job) -> dict:
        folder = self.dir / "runs" / job.key
        done = folder / "result.json"
        if done.is_file():
            return read_json(done)
        entry = self.entries[job.entry]
        spec, params = entry_params(entry)
        rows = self.job_rows(job, spec, params)
        ckpt = folder / "checkpoint"
        reset_peak_memory()
        t0 = time.time()
        log = self.pipe.train_student(spec, params, rows, ckpt, seed=job.seed)
        train_s, memory = time.time() - t0, peak_memory()
        t1 = time.time()
        generations = self.pipe.test_generations("student", ckpt, folder / "samples", desc=f"eval {job.key}")
        prompts = [e.prompt for e in self.pipe.splits["test"]]
        scores = {role: judge.score(prompts, generations) for role, judge in self.graders.items()}
        result = {
            "job": dataclasses.asdict(job), "method": entry.method, "label": entry.label or spec.label,
            "generations": generations, "judge_scores": scores["eval"], "training_judge_scores": scores.get("training"),
            "cost": {"rows": len(rows), "steps": len(log), "train_wall_s": round(train_s, 1),
                     "eval_wall_s": round(time.time() - t1, 1), "peak_memory_mb": round(memory["mb"], 1),
                     "memory_kind": memory["kind"], **self.data_tokens(requirements(spec, params)[1], rows),
                     **{k: sum(r.get(k, 0.0) for r in log) for k in {k for r in log for k in r if k.startswith(COUNT_PREFIX)}}},
            "final_loss": log[-1]["loss"] if log else None,
        }
        write_json(done, result)
        if not self.bench.keep_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)
        return result

    def data_tokens(self, needs: frozenset[str], rows: list[dict]) -> dict:
        """Tokens the method's training rows cost to make: the samples it reads, the teacher scores stored with them."""
        def count(cfg, texts):
            tok = load_tokenizer(cfg)
            return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

        out = {}
        if "teacher_samples" in needs:
            out["data_teacher_generated"] = count(self.cfg.teacher, [teacher_side(r) for r in rows])
        if "student_samples" in needs:
            out["data_student_generated"] = count(self.cfg.student, [student_side(r) for r in rows])
        if "teacher_pair_logps" in needs:
            out["data_teacher_scored"] = count(self.cfg.teacher, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
        return out
