"""The PLaD pipeline as stages over one run folder.

    from prefdistill import Pipeline, load_config
    pipe = Pipeline(load_config("my.yaml", ["name=try1"]))
    pipe.run(["reward", "sft", "pairs"])     # any subset, in pipeline order
    metrics = pipe.run(["distill", "eval"])

Each stage writes its outputs into the run folder and is skipped when they already
exist, so re-running after a crash or with more stages reuses everything done:

    RUN/config.yaml                 the resolved configuration
    RUN/data/{sft,distill,validation,test}.jsonl   the splits (the training set halved)
    RUN/reward/                     the trained judges (training, and heldout/ for grading) and their accuracy
    RUN/checkpoints/{teacher_sft,student_sft,student_distill}/
    RUN/samples/{teacher,student}/  resumable samples on the distillation half (one line per prompt)
    RUN/pairs/pairs.jsonl           pseudo-preference pairs (prompt / chosen / rejected)
    RUN/pairs/failures.jsonl        prompts a teacher or student could not answer (an API that kept failing)
    RUN/eval/samples/ROW/           generations on the test split
    RUN/metrics.json, RUN/report.md, RUN/plots/*.png
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import yaml

from prefdistill import judges, report
from prefdistill.config import STAGES, ConfigError, RunConfig, resolved_eval_judge, to_dict
from prefdistill.data import prepare_splits
from prefdistill.io import (Example, atomic_write_text, is_main_process, n_processes, read_examples, read_json, read_jsonl,
                            write_examples, write_json, write_jsonl)
from prefdistill.methods import get_method, method_params
from prefdistill.methods.common import attach_teacher_logps, student_side, teacher_side
from prefdistill.methods.registry import require_shared_vocabulary, requirements, text_only_teacher
from prefdistill.metrics import compare_rows, summarize_generations
from prefdistill.models.hf import pick_device
from prefdistill.oracles import build_oracle
from prefdistill.pairs import attach_scores, build_pairs, load_pairs, record_failures, relabel
from prefdistill.sampling import SampleSet, sample_resumable, wait_for_everyone
from prefdistill.train import LOG_FILE, is_done, seed_everything, train

SPLITS = ("sft", "distill", "validation", "test")
# Stages that run under `accelerate launch` (many processes); the others run in one.
DISTRIBUTED_STAGES = ("sft", "pairs", "distill", "eval")  # the reward stage is small: run it plainly
ROW_LABELS = {"teacher": "Teacher (SFT)", "student_init": "Initial student", "student_sft": "SFT student"}


class Pipeline:
    def __init__(self, cfg: RunConfig, *, allow_config_change: bool = False):
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.ckpt = self.run_dir / "checkpoints"
        self._splits: dict[str, list[Example]] | None = None
        self._check_config(allow_config_change)

    # ------------------------------------------------------------------ bookkeeping
    def _check_config(self, allow_change: bool) -> None:
        """Refuse to mix outputs of different configurations in one run folder."""
        path = self.run_dir / "config.yaml"
        current = to_dict(self.cfg)
        if path.is_file() and not allow_change:
            stored = yaml.safe_load(path.read_text()) or {}
            # The bench list may grow between invocations: its jobs are keyed by their own settings.
            diff = sorted(d for d in _diff_keys(stored, current) - {"stages"} if d.split(".")[0] != "bench")
            if diff:
                raise ConfigError(
                    f"{self.run_dir} was made with another configuration (differs in: {', '.join(diff[:8])}). "
                    "Use a new name=..., or pass --allow-config-change to reuse its outputs anyway."
                )
        if is_main_process():
            atomic_write_text(path, yaml.safe_dump(current, sort_keys=False))

    def _timed(self, stage: str, fn) -> None:
        """Add the stage's wall time to timings.json, unless it found its output and did nothing.

        Times add up over attempts, so a stage resumed after a crash reports all it cost.
        """
        path = self.run_dir / "timings.json"
        t0 = time.time()
        if fn() is False:
            print(f"[prefdistill] {stage}: output exists, skipped", flush=True)
            return
        if not is_main_process():
            return
        timings = read_json(path) if path.is_file() else {}
        timings[stage] = round(timings.get(stage, 0.0) + time.time() - t0, 1)
        write_json(path, timings)

    def run(self, stages: list[str] | None = None) -> dict:
        """Run `stages` (default: the configured ones) in pipeline order; returns metrics (if any)."""
        wanted = list(stages or self.cfg.stages)
        for s in wanted:
            if s not in STAGES:
                raise ConfigError(f"unknown stage {s!r}; choose from {list(STAGES)}")
            if n_processes() > 1 and s not in DISTRIBUTED_STAGES:
                raise ConfigError(f"stage {s!r} runs in one process; under accelerate launch ({n_processes()} processes) "
                                  f"run only --stages {','.join(DISTRIBUTED_STAGES)} (see docs/distributed.md)")
        for stage in STAGES:
            if stage in wanted:
                print(f"[prefdistill] stage {stage}", flush=True)
                self._timed(stage, getattr(self, f"stage_{stage}"))
        if (self.run_dir / "eval" / "rows.json").is_file() and is_main_process():
            self.finalize(show="eval" in wanted)
        return self.results()

    def finalize(self, show: bool = True) -> dict:
        """Gather metrics.json (with every stage's timing) and render report.md."""
        metrics = self._gather(read_json(self.run_dir / "eval" / "rows.json"))
        write_json(self.run_dir / "metrics.json", metrics)
        report.write_report(self.run_dir, metrics)
        if show:
            print(report.console_table(metrics), flush=True)
            print(report.verdict(metrics), flush=True)
        return metrics

    def results(self) -> dict:
        path = self.run_dir / "metrics.json"
        return read_json(path) if path.is_file() else {}

    @property
    def splits(self) -> dict[str, list[Example]]:
        """The four splits, prepared once and then read back from the run folder."""
        if self._splits is None:
            folder = self.run_dir / "data"
            if all((folder / f"{s}.jsonl").is_file() for s in SPLITS):
                self._splits = {s: read_examples(folder / f"{s}.jsonl") for s in SPLITS}
            else:
                splits = prepare_splits(self.cfg.data, self.cfg.seed, tokenizer=self._student_tokenizer())
                self._splits = {s: getattr(splits, s) for s in SPLITS}
                for s in SPLITS:  # every process computes the same splits; one writes them
                    if is_main_process():
                        write_examples(folder / f"{s}.jsonl", self._splits[s])
        return self._splits

    def _student_tokenizer(self):
        # Prompts are truncated once, with the student's tokenizer, so teacher and student see the same text.
        from transformers import AutoTokenizer

        from prefdistill.assets import resolve_model_path

        st = self.cfg.student
        return AutoTokenizer.from_pretrained(resolve_model_path(st.name_or_path, st.gguf_file), trust_remote_code=st.trust_remote_code)

    def _load(self, role: str, checkpoint: Path | None = None, for_training: bool = False, in_loop: bool = False):
        from prefdistill.models import load_model

        cfg = getattr(self.cfg, role)
        if in_loop and cfg.backend == "vllm":
            cfg = replace(cfg, backend="hf")
        return load_model(cfg, checkpoint=checkpoint, for_training=for_training)

    def _sft_checkpoint(self, role: str) -> Path | None:
        """The SFT checkpoint of `role`, or None when its SFT is disabled (the base model stands in)."""
        if not getattr(self.cfg.sft, role).enabled:
            return None
        path = self.ckpt / f"{role}_sft"
        if not is_done(path):
            raise FileNotFoundError(f"{path} is missing: run the sft stage first")
        return path

    def _judge(self):
        """The training judge: the oracle's scores, pair relabelling and margins."""
        # On the GPU when there is one: a large reward model is slow on the CPU.
        return judges.build_judge(self.cfg.judge, self.run_dir, device=str(pick_device("auto")))

    def _eval_judge(self):
        """The judge that grades every row (`eval_judge`); by default held out from what training optimised."""
        return judges.build_eval_judge(self.cfg, device=str(pick_device("auto")))

    @property
    def separate_eval_judge(self) -> bool:
        return resolved_eval_judge(self.cfg) != "same"

    # ------------------------------------------------------------------ stages
    def stage_reward(self) -> bool:
        """Train prefdistill's own reward models on the task's references: the training judge and,
        on the other half of the documents, the held-out judge that grades (eval_judge.kind heldout)."""
        if self.cfg.judge.kind != "trained":
            print("[prefdistill] reward: judge.kind is not 'trained'; nothing to train", flush=True)
            return False
        heldout = resolved_eval_judge(self.cfg) == "heldout"
        done = self.run_dir / "reward" / ("heldout/metrics.json" if heldout else "metrics.json")
        if done.is_file() and (self.run_dir / "reward" / "metrics.json").is_file():
            return False
        s, device = self.splits, str(pick_device("auto"))
        if heldout:
            judges.train_judges(s["sft"] + s["distill"], s["validation"], self.cfg.reward, self.run_dir / "reward",
                                seed=self.cfg.seed, heldout_seed=self.cfg.seed + self.cfg.eval_judge.seed_offset, device=device)
        else:
            judges.train_reward_model(s["sft"] + s["distill"], s["validation"], self.cfg.reward, self.run_dir / "reward",
                                      self.cfg.seed, device=device)
        return True

    def stage_sft(self) -> bool:
        """Supervised fine-tuning of teacher and student on the supervised half."""
        todo = [r for r in ("teacher", "student") if getattr(self.cfg.sft, r).enabled and not is_done(self.ckpt / f"{r}_sft")]
        if not todo:
            return False
        rows = [{"prompt": e.prompt, "target": e.target} for e in self.splits["sft"]]
        spec = get_method("sft")
        for role in todo:
            tcfg, out = getattr(self.cfg.sft, role), self.ckpt / f"{role}_sft"
            lm = self._load(role, for_training=True)
            train(lm, spec, spec.params_cls(), rows, tcfg, getattr(self.cfg, role).lora,
                  out_dir=out, parent=None, seed=self.cfg.seed, desc=f"sft {role}")
            del lm
        return True

    def stage_pairs(self) -> bool:
        """Sample teacher and student on the distillation half; write the pairs."""
        out = self.run_dir / "pairs" / "pairs.jsonl"
        if out.is_file():
            return False
        cfg, examples = self.cfg, self.splits["distill"]
        sampled: dict[str, SampleSet] = {}
        # Independent sampling streams per role (a model distilled into itself must not echo its own samples).
        streams = {"teacher": (cfg.pairs.teacher_sampling, cfg.seed), "student": (cfg.pairs.student_sampling, cfg.seed + 104_729)}
        for role, (sampling, seed) in streams.items():
            sampled[role] = self._sample(role, self._sft_checkpoint(role), examples, sampling, self.run_dir / "samples" / role,
                                         seed=seed, desc=f"sample {role}")
        if is_main_process():  # every process sampled its share; one writes the pairs
            self._write_pairs(examples, sampled, out)
        wait_for_everyone()
        return True

    def _write_pairs(self, examples: list[Example], sampled: dict[str, SampleSet], out: Path) -> None:
        cfg = self.cfg
        failed = record_failures({role: r.failures for role, r in sampled.items()}, len(examples),
                                 self.run_dir / "pairs" / "failures.jsonl", cfg.pairs.max_failed_fraction)
        answered = [e for e in examples if all(e.id in s.samples for s in sampled.values())]
        samples = {role: s.samples for role, s in sampled.items()}
        meta = {"teacher_model": cfg.teacher.name_or_path, "student_model": cfg.student.name_or_path,
                "teacher_sampling": asdict(cfg.pairs.teacher_sampling), "student_sampling": asdict(cfg.pairs.student_sampling)}
        pairs, skipped = build_pairs(answered, samples["teacher"], samples["student"], meta)
        if not pairs:
            raise ValueError(f"no usable pairs: skipped {skipped}; check the sampling settings")
        needs_judge = cfg.pairs.relabel_fraction > 0 or cfg.pairs.score == "judge"
        judge = self._judge() if needs_judge else None
        swaps = relabel(pairs, judge, cfg.pairs.relabel_fraction, cfg.seed)
        attach_scores(pairs, cfg.pairs.score, judge)
        write_json(out.parent / "summary.json", {"n": len(pairs), "skipped_empty": skipped["empty"], "skipped_identical": skipped["identical"],
                                                 "failed_prompts": failed, "swapped": swaps,
                                                 "relabelled": sum(p["relabelled"] for p in pairs)})
        write_jsonl(out, pairs)

    def stage_distill(self) -> bool:
        """Train the SFT student with the configured method."""
        out = self.ckpt / "student_distill"
        if is_done(out):
            return False
        spec, params = get_method(self.cfg.distill.method), method_params(self.cfg)
        self.train_student(spec, params, self.distill_rows(spec, params), out, seed=self.cfg.seed)
        return True

    def distill_rows(self, spec, params, pairs_path: Path | None = None) -> list[dict]:
        """The training rows of a method: the pairs, or prompt + reference of the supervised half."""
        consumes, needs = requirements(spec, params)
        if consumes == "targets":
            return [{"prompt": e.prompt, "target": e.target} for e in self.splits["sft"]]
        rows = load_pairs(pairs_path or self.run_dir / "pairs" / "pairs.jsonl")
        if "teacher_pair_logps" in needs:
            attach_teacher_logps(rows, self.teacher_pair_logps(), spec.name)
        return rows

    def teacher_pair_logps(self) -> dict[str, dict]:
        """log p(y|x) of the teacher's and the student's sample of every pair, under the (frozen) teacher.

        Computed once into RUN/pairs/teacher_logps.jsonl, keyed by pair id and by which
        model wrote the text, so relabelled copies of the pairs reuse it and training
        never holds the teacher in memory.
        """
        path = self.run_dir / "pairs" / "teacher_logps.jsonl"
        if path.is_file():
            return {r["id"]: r for r in read_jsonl(path)}
        pairs = load_pairs(self.run_dir / "pairs" / "pairs.jsonl")
        teacher = self._load("teacher", self._sft_checkpoint("teacher"))
        if not getattr(teacher, "can_score", False):
            why = getattr(teacher, "score_unavailable", None)
            raise ValueError(f"teacher {self.cfg.teacher.name_or_path!r} returns text only{f' ({why})' if why else ''}, but this "
                             "method needs a scoring teacher (log-probabilities of given text). Use a local or vLLM teacher, "
                             f"a server that echoes log-probs, or a text-only method: {', '.join(text_only_teacher())}.")
        prompts = [p["prompt"] for p in pairs]
        # Text, not token ids: a teacher with another tokenizer re-tokenises the student's samples its own way.
        by_teacher = teacher.score(prompts, [teacher_side(p) for p in pairs], normalize=False)
        by_student = teacher.score(prompts, [student_side(p) for p in pairs], normalize=False)
        table = [{"id": p["id"], "teacher_sample": a, "student_sample": b} for p, a, b in zip(pairs, by_teacher, by_student)]
        write_jsonl(path, table)
        return {r["id"]: r for r in table}

    def train_student(self, spec, params, rows: list[dict], out: Path, *, seed: int) -> list[dict]:
        """Train a copy of the SFT student into `out`; the teacher joins when the method needs it."""
        _, needs = requirements(spec, params)
        parent = self._sft_checkpoint("student")
        extras = self._extras(needs)
        lm = self._load("student", parent, for_training=True)
        if "teacher" in extras:
            require_shared_vocabulary(spec, lm, extras["teacher"])
        return train(lm, spec, params, rows, self.cfg.distill.train, self.cfg.student.lora,
                     out_dir=out, parent=parent, seed=seed, desc=f"distill {spec.name}", extras=extras)

    def _extras(self, needs) -> dict:
        """What a method's loss gets besides the student, one provider per need it declares."""
        # In the loop a model must give logits: a vLLM-configured one is loaded through transformers.
        providers = {
            "teacher": lambda: self._load("teacher", self._sft_checkpoint("teacher"), in_loop=True),
            "reference": lambda: self._load("student", self._sft_checkpoint("student"), in_loop=True),
            "oracle": lambda: build_oracle(self.cfg.oracle, self._judge),
            "state": dict,
        }
        return {name: make() for name, make in providers.items() if name in needs}

    def _eval_models(self) -> dict[str, tuple[str, Path | None]]:
        return {
            "teacher": ("teacher", self._sft_checkpoint("teacher")),
            "student_init": ("student", None),
            "student_sft": ("student", self._sft_checkpoint("student")),
            "student_distill": ("student", self.ckpt / "student_distill"),
        }

    def stage_eval(self) -> bool:
        """Generate on the test split with every row's model; judge and score (eval/rows.json)."""
        if (self.run_dir / "eval" / "rows.json").is_file():
            return False
        cfg, test = self.cfg, self.splits["test"]
        models = self._eval_models()
        unknown = [r for r in cfg.eval.rows if r not in models]
        if unknown:
            raise ConfigError(f"eval.rows: unknown row(s) {unknown}; choose from {list(models)}")
        generations = {}
        for row in cfg.eval.rows:
            role, ckpt = models[row]
            generations[row] = self.test_generations(role, ckpt, self.run_dir / "eval" / "samples" / row, desc=f"eval {row}")
        if is_main_process():  # every process generated its share of each row; one judges and writes
            self._judge_and_write(generations)
        wait_for_everyone()
        return True

    def _judge_and_write(self, generations: dict[str, list[str]]) -> None:
        cfg, test = self.cfg, self.splits["test"]
        prompts, refs = [e.prompt for e in test], [e.target for e in test]
        graders = {"eval": self._eval_judge()}
        if self.separate_eval_judge:
            graders["training"] = self._judge()
        scored = {}
        for role, judge in graders.items():
            scored[role] = {"reference": judge.score(prompts, refs), **{row: judge.score(prompts, g) for row, g in generations.items()}}
        write_json(self.run_dir / "eval" / "judge_scores.json", scored["eval"])
        if "training" in scored:
            write_json(self.run_dir / "eval" / "training_judge_scores.json", scored["training"])
        rows = {}
        for row, gens in generations.items():
            rows[row] = {"label": self._row_label(row), **self._summarize_row(row, gens, refs, scored["eval"])}
            if "training" in scored:
                by_training = self._summarize_row(row, gens, refs, scored["training"])
                rows[row]["training_judge_win_rate"] = by_training["win_rate"]
                rows[row]["training_judge_win_rate_ci"] = by_training["win_rate_ci"]
        write_jsonl(self.run_dir / "eval" / "generations.jsonl",
                    [{"id": e.id, "prompt": e.prompt, "reference": e.target, **{r: generations[r][i] for r in generations}}
                     for i, e in enumerate(test)])
        result = {"rows": rows}
        method, baseline = "student_distill", "student_sft"
        if method in generations and baseline in generations:
            for role, scores in scored.items():
                sides = [{"generations": generations[r], "references": refs, "judge_scores": scores[r], "reference_scores": scores["reference"]}
                         for r in (method, baseline)]
                paired = {"method_row": method, "baseline_row": baseline, **compare_rows(*sides, n_boot=cfg.eval.n_bootstrap, seed=cfg.seed)}
                result["comparison" if role == "eval" else "training_judge_comparison"] = paired
        write_json(self.run_dir / "eval" / "rows.json", result)

    def _summarize_row(self, row: str, gens: list[str], refs: list[str], scores: dict[str, list[float]]) -> dict:
        opponent = scores["teacher"] if "teacher" in scores and row != "teacher" else None
        e = self.cfg.eval
        return summarize_generations(gens, refs, scores[row], scores["reference"], opponent_scores=opponent,
                                     n_boot=e.n_bootstrap, seed=self.cfg.seed, length_edges=e.length_buckets)

    def test_generations(self, role: str, ckpt: Path | None, folder: Path, *, desc: str) -> list[str]:
        """One generation per test prompt (eval sampling settings), cached in `folder`."""
        test = self.splits["test"]
        result = self._sample(role, ckpt, test, self.cfg.eval.sampling, folder, seed=self.cfg.seed, desc=desc)
        result.require_all(f"{desc} ({folder})")
        return [result.samples[e.id][0] for e in test]

    def _sample(self, role: str, ckpt: Path | None, examples: list[Example], sampling, folder: Path, *, seed: int,
                desc: str) -> SampleSet:
        """Resumable sampling by `role`'s weights (loaded only if a chunk is missing).

        The samples are tagged with the weights' id, relative to the run folder so the
        folder can move; samples made by other weights are refused.
        """
        model_id = f"{role}:{getattr(self.cfg, role).name_or_path}:{ckpt.relative_to(self.run_dir).as_posix() if ckpt else 'base'}"
        return sample_resumable(lambda: self._load(role, ckpt), examples, sampling, folder,
                                chunk_size=self.cfg.pairs.chunk_size, seed=seed, desc=desc, model_name=model_id)

    def _row_label(self, row: str) -> str:
        if row == "student_distill":
            return f"{get_method(self.cfg.distill.method).label} student"
        if row == "teacher" and not self.cfg.sft.teacher.enabled:
            return "Teacher"  # as given (an API teacher, or SFT switched off)
        return ROW_LABELS[row]

    def _gather(self, evaluated: dict) -> dict:
        cfg, run = self.cfg, self.run_dir
        metrics = {"task": cfg.data.source, "teacher": cfg.teacher.name_or_path, "student": cfg.student.name_or_path,
                   "method": cfg.distill.method, "n_test": len(self.splits["test"]), **evaluated}
        metrics["judges"] = self.judges_info()
        metrics["judge"] = metrics["judges"]["eval"]  # the grader (older readers look here)
        training = {}
        for name in ("teacher_sft", "student_sft", "student_distill"):
            log = self.ckpt / name / LOG_FILE
            if log.is_file():
                training["distill" if name == "student_distill" else f"sft_{name.split('_')[0]}"] = read_jsonl(log)
        metrics["training"] = training
        if (run / "pairs" / "summary.json").is_file():
            metrics["pairs"] = read_json(run / "pairs" / "summary.json")
        timings = read_json(run / "timings.json") if (run / "timings.json").is_file() else {}
        metrics["timings_s"] = {**timings, "total": round(sum(timings.values()), 1)}
        return metrics


    def judges_info(self) -> dict[str, dict]:
        """{"eval": the grader, "training": the judge training used}, each with its name and, if trained here, its metrics."""
        cfg, trained = self.cfg, judges.judges_metrics(self.run_dir)
        training = ({"name": "trained", **trained["training"]} if cfg.judge.kind == "trained" and "training" in trained
                    else {"name": cfg.judge.name_or_path or cfg.judge.callable or cfg.judge.kind})
        kind = resolved_eval_judge(cfg)
        if kind == "same":
            grader = {**training, "same_as_training": True}
        elif kind == "heldout":
            grader = {"name": "heldout", **trained.get("heldout", {})}
        else:
            grader = {"name": cfg.eval_judge.name_or_path or cfg.eval_judge.callable or kind}
        oracle = {"kind": cfg.oracle.kind, "model": cfg.oracle.model} if cfg.oracle.kind == "api" else {"kind": "judge (the training judge)"}
        return {"eval": grader, "training": {**training, "oracle": oracle}}


def _diff_keys(a, b, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return set() if a == b else {prefix}


def run_stages(cfg: RunConfig, stages: list[str] | None = None, **kwargs) -> dict:
    seed_everything(cfg.seed)
    return Pipeline(cfg, **kwargs).run(stages)
