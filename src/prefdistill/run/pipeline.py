"""The pipeline: the services every stage shares, over one run folder (`prefdistill.run.folder`).

    from prefdistill import Pipeline, load_config
    pipe = Pipeline(load_config("my.yaml", ["name=try1"]))
    pipe.run(["reward", "sft", "pairs"])     # any subset, in pipeline order (the stages: prefdistill.run.stages)
    metrics = pipe.run(["distill", "eval"])

Each stage writes its outputs into the run folder and is skipped when they already
exist, so re-running after a crash or with more stages reuses everything done. What the
data stage computes follows what the configured methods consume (`methods`: the run's
distillation method, or a bench's entries).
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from prefdistill import judges
from prefdistill.config.eval_rows import EVAL_ROWS
from prefdistill.config.schema import STAGES, RunConfig, resolved_eval_judge, to_dict, training_lora
from prefdistill.data.pairs import load_pairs
from prefdistill.data.sampling import SampleSet, sample_resumable
from prefdistill.data.splits import prepare_splits
from prefdistill.errors import ConfigError
from prefdistill.io import (Example, is_main_process, n_processes, read_examples, read_json, read_jsonl, write_examples, write_json,
                            write_jsonl)
from prefdistill.judges.oracles import build_oracle
from prefdistill.methods import get_method, method_params
from prefdistill.methods.common import attach_teacher_logps, student_side, teacher_side
from prefdistill.methods.registry import require_shared_vocabulary, requirements, text_only_teacher
from prefdistill.models.hf import pick_device
from prefdistill.reporting import run_report as report
from prefdistill.run.folder import RunFolder
from prefdistill.signal.fingerprint import teacher_fingerprint
from prefdistill.signal.served import recorded_teacher, require_topk_of_text
from prefdistill.signal.topk_cache import build_topk_cache
from prefdistill.training.best_checkpoint import LAST, VAL_LOSS, Selection, read_choice
from prefdistill.training.loop import LOG_FILE, is_done, seed_everything, total_steps, train

SPLITS = ("sft", "distill", "validation", "test")
# Stages that run under `accelerate launch` (many processes); the others run in one.
DISTRIBUTED_STAGES = ("sft", "pairs", "distill", "eval")  # the reward stage is small: run it plainly


class Pipeline:
    def __init__(self, cfg: RunConfig, *, allow_config_change: bool = False, methods: list[tuple] | None = None,
                 sft_selection: Selection | None = None):
        """`methods`: (spec, params) of every method that will train here (default: cfg.distill's); `sft_selection`: how
        the SFT stage keeps its step under sft.select auto (default: the lowest validation loss; the bench gives its own)."""
        self.cfg = cfg
        self._auto_selection = sft_selection or VAL_LOSS
        self.run_dir = cfg.run_dir
        self.folder = RunFolder(cfg.run_dir)
        self.methods = methods if methods is not None else [(get_method(cfg.distill.method), method_params(cfg))]
        self._splits: dict[str, list[Example]] | None = None
        self.folder.check_config(to_dict(cfg), allow_change=allow_config_change)

    def run(self, stages: list[str] | None = None) -> dict:
        """Run `stages` (default: the configured ones) in pipeline order; returns metrics (if any)."""
        from prefdistill.run.stages import STAGE_FUNCTIONS

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
                self.folder.timed(stage, lambda: STAGE_FUNCTIONS[stage](self))
        if self.folder.eval_file("rows.json").is_file() and is_main_process():
            self.finalize(show="eval" in wanted)
        return self.results()

    def finalize(self, show: bool = True) -> dict:
        """Gather metrics.json (with every stage's timing) and render report.md."""
        metrics = self.gather(read_json(self.folder.eval_file("rows.json")))
        write_json(self.folder.metrics, metrics)
        report.write_report(self.run_dir, metrics)
        if show:
            print(report.console_table(metrics), flush=True)
            print(report.verdict(metrics), flush=True)
        return metrics

    def results(self) -> dict:
        return read_json(self.folder.metrics) if self.folder.metrics.is_file() else {}

    # ------------------------------------------------------------------ data
    @property
    def splits(self) -> dict[str, list[Example]]:
        """The four splits, prepared once and then read back from the run folder."""
        if self._splits is None:
            if all(self.folder.split(s).is_file() for s in SPLITS):
                self._splits = {s: read_examples(self.folder.split(s)) for s in SPLITS}
            else:
                splits = prepare_splits(self.cfg.data, self.cfg.seed, tokenizer=self._student_tokenizer())
                self._splits = {s: getattr(splits, s) for s in SPLITS}
                for s in SPLITS:  # every process computes the same splits; one writes them
                    if is_main_process():
                        write_examples(self.folder.split(s), self._splits[s])
        return self._splits

    def _student_tokenizer(self):
        # Prompts are truncated once, with the student's tokenizer, so teacher and student see the same text.
        from transformers import AutoTokenizer

        from prefdistill.models.assets import resolve_model_path

        st = self.cfg.student
        return AutoTokenizer.from_pretrained(resolve_model_path(st.name_or_path, st.gguf_file), trust_remote_code=st.trust_remote_code)

    def consumed(self) -> set[str]:
        """What the configured methods read: targets, prompts, pairs (the data stage computes only these)."""
        return {requirements(spec, params)[0] for spec, params in self.methods}

    def distill_rows(self, spec, params, pairs_path: Path | None = None) -> list[dict]:
        """The training rows of a method: reference targets, distillation prompts, or the pairs."""
        consumes, needs = requirements(spec, params)
        if consumes == "targets":
            rows = [{"id": e.id, "prompt": e.prompt, "target": e.target} for e in self.splits["sft"]]
            if "teacher_topk" in needs:
                self.teacher_topk(rows, params)
            return rows
        if consumes == "prompts":
            return [{"id": e.id, "prompt": e.prompt} for e in self.splits["distill"]]
        rows = load_pairs(pairs_path or self.folder.pairs)
        if "teacher_pair_logps" in needs:
            attach_teacher_logps(rows, self.teacher_pair_logps(), spec.name)
        if "teacher_topk" in needs:  # the methods that read a cache train on the teacher's side of each pair
            self.teacher_topk(rows, params, text=teacher_side)
        return rows

    def teacher_pair_logps(self) -> dict[str, dict]:
        """log p(y|x) of the teacher's and the student's sample of every pair, under the (frozen) teacher.

        Computed once into RUN/pairs/teacher_logps.jsonl, keyed by pair id and by which
        model wrote the text, so relabelled copies of the pairs reuse it and training
        never holds the teacher in memory.
        """
        path = self.folder.pairs_file("teacher_logps.jsonl")
        if path.is_file():
            return {r["id"]: r for r in read_jsonl(path)}
        pairs = load_pairs(self.folder.pairs)
        teacher = self.load("teacher", self.sft_checkpoint("teacher"))
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

    def teacher_topk(self, rows: list[dict], params, text: str | Callable[[dict], str] = "target") -> dict:
        """The teacher's top-k log-probs at every completion position of `rows` (the completion: `text`, a row's key or a
        function of the row), cached once in RUN/teacher_signal/topk_k{K}.bin.

        Keyed by the teacher's weights, the method's k / temperature / topk_dtype and each row's
        prompt and token ids, so a rerun reuses it and training never holds the teacher in
        memory; sets each row's `teacher_topk_key` / `teacher_topk_path` (prefdistill.signal.topk_cache).
        A vLLM teacher gives the top-k from its engine (prompt log-probs) where the engine can: at
        temperature 1 and k up to vLLM's default max_logprobs; otherwise it is loaded through transformers.
        A teacher behind an API (backend: openai) gives it from its echoed top_logprobs (`APILM.completion_topk`,
        after the correctness probe), at temperature 1.
        """
        from prefdistill.models.vllm_backend import VLLM_MAX_LOGPROBS, release_engine

        ckpt, cfg = self.sft_checkpoint("teacher"), self.cfg.teacher
        teacher_id = teacher_fingerprint(cfg, ckpt)  # a hash of its weights and rendered prompt format, not its path
        path = self.run_dir / "teacher_signal" / f"topk_k{params.k}.bin"
        engine = cfg.backend == "vllm" and params.temperature == 1.0 and params.k <= VLLM_MAX_LOGPROBS
        stats = build_topk_cache(lambda: self.load("teacher", ckpt, in_loop=not engine), rows, params.k, path,
                                 tokenizer=self._student_tokenizer(), teacher_id=teacher_id, temperature=params.temperature,
                                 dtype=params.topk_dtype, text_key=text, desc=f"teacher top-{params.k}",
                                 max_failed_fraction=self.cfg.distill.signal_max_failed_fraction,
                                 retry_failed=self.cfg.distill.signal_retry_failed)
        if engine:
            release_engine()  # the engine holds gpu_memory_utilization of the GPU; training comes next
        return stats

    # ------------------------------------------------------------------ models
    def load(self, role: str, checkpoint: Path | None = None, for_training: bool = False, in_loop: bool = False):
        from prefdistill.models import load_model

        cfg = getattr(self.cfg, role)
        if in_loop and cfg.backend == "vllm":  # in the loop a model must give logits: load it through transformers
            cfg = replace(cfg, backend="hf")
        return load_model(cfg, checkpoint=checkpoint, for_training=for_training)

    def sft_selection(self) -> Selection:
        """How each SFT keeps its step: sft.select, with auto resolved (the bench's rule under the bench, else val_loss)."""
        return {"auto": self._auto_selection, "val_loss": VAL_LOSS, "last": LAST}[self.cfg.sft.select]

    def sft_choices(self) -> dict[str, dict]:
        """{role: the kept step, the budget, the criterion and the curve} of each SFT checkpoint here (best_checkpoint.Choice)."""
        choices = {role: read_choice(self.folder.checkpoint(f"{role}_sft")) for role in ("teacher", "student")}
        return {role: asdict(c) for role, c in choices.items() if c is not None}

    def sft_checkpoint(self, role: str) -> Path | None:
        """The SFT checkpoint of `role`, or None when its SFT is disabled (the base model stands in)."""
        if not getattr(self.cfg.sft, role).enabled:
            return None
        if not self.folder.is_done(f"{role}_sft"):
            raise FileNotFoundError(f"{self.folder.checkpoint(f'{role}_sft')} is missing: run the sft stage first")
        return self.folder.checkpoint(f"{role}_sft")

    def eval_model(self, row: str) -> tuple[str, Path | None]:
        """(role, checkpoint) of an evaluation row (prefdistill.config.eval_rows.EVAL_ROWS)."""
        spec = EVAL_ROWS[row]
        if spec.checkpoint is None:
            return spec.role, None
        if spec.checkpoint.endswith("_sft"):
            return spec.role, self.sft_checkpoint(spec.role)
        return spec.role, self.folder.checkpoint(spec.checkpoint)

    def row_label(self, row: str) -> str:
        if row == "teacher" and not self.cfg.sft.teacher.enabled:
            return "Teacher"  # as given (an API teacher, or SFT switched off)
        return EVAL_ROWS[row].label.format(method=get_method(self.cfg.distill.method).label)

    def train_student(self, spec, params, rows: list[dict], out: Path, *, seed: int, train_cfg=None, on_step=None) -> list[dict]:
        """Train a copy of the SFT student into `out` (distill.train unless `train_cfg`); the teacher joins when the method
        needs it. `on_step`: see `prefdistill.training.loop.train`."""
        _, needs = requirements(spec, params)
        parent = self.sft_checkpoint("student")
        if is_done(out):
            return read_jsonl(out / LOG_FILE)
        extras = self._extras(needs)
        train_cfg = train_cfg or self.cfg.distill.train
        if "served_teacher" in extras:  # a row it cannot give is listed beside the checkpoint, left out, and limited
            scored = total_steps(train_cfg, len(rows)) * train_cfg.batch_size * train_cfg.grad_accum
            d = self.cfg.distill
            extras["served_teacher"] = recorded_teacher(extras["served_teacher"], out, scored, retry_failed=d.signal_retry_failed,
                                                        max_failed_fraction=d.signal_max_failed_fraction)
        lm = self.load("student", parent, for_training=True)
        for role in ("teacher", "served_teacher"):  # a server has no tokenizer here: api_topk checks its tokens row by row
            if hasattr(extras.get(role), "tokenizer"):
                require_shared_vocabulary(spec, lm, extras[role])
        return train(lm, spec, params, rows, train_cfg, training_lora(self.cfg.student, train_cfg), out_dir=out, parent=parent,
                     seed=seed, desc=f"distill {spec.name}", extras=extras, on_step=on_step)

    @staticmethod
    def distill_steps(train_cfg, n_rows: int) -> int:
        return total_steps(train_cfg, n_rows)

    def sft_logs(self) -> dict[str, list[dict]]:
        """{role: its SFT training log, to the budget's last step} for each model fine-tuned here (val_loss lines when
        sft.ROLE.eval_every is set); the step it kept: `sft_choices`."""
        return {role: read_jsonl(self.folder.checkpoint(f"{role}_sft") / LOG_FILE) for role in ("teacher", "student")
                if (self.folder.checkpoint(f"{role}_sft") / LOG_FILE).is_file()}

    def _extras(self, needs) -> dict:
        """What a method's loss gets besides the student, one provider per need it declares."""
        providers = {
            "teacher": lambda: self.load("teacher", self.sft_checkpoint("teacher"), in_loop=True),
            "served_teacher": self._served_teacher,
            "reference": lambda: self.load("student", self.sft_checkpoint("student"), in_loop=True),
            "oracle": lambda: build_oracle(self.cfg.oracle, self.training_judge),
            "state": dict,
        }
        return {name: make() for name, make in providers.items() if name in needs}

    def _served_teacher(self):
        """The teacher on its own backend (a server, a vLLM engine; hf loads it locally), never converted to transformers.

        A server whose echoed log-probs fail the correctness probe is refused now, with the
        probe's reason, before the student loads and any step is taken (`prefdistill.signal.served`).
        """
        teacher = self.load("teacher", self.sft_checkpoint("teacher"))
        require_topk_of_text(teacher)
        return teacher

    def sample(self, role: str, ckpt: Path | None, examples: list[Example], sampling, folder: Path, *, seed: int,
               desc: str) -> SampleSet:
        """Resumable sampling by `role`'s weights (loaded only if a chunk is missing).

        The samples are tagged with the weights' id, relative to the run folder so the
        folder can move; samples made by other weights are refused.
        """
        model_id = f"{role}:{getattr(self.cfg, role).name_or_path}:{self.folder.relative(ckpt)}"
        return sample_resumable(lambda: self.load(role, ckpt), examples, sampling, folder,
                                chunk_size=self.cfg.pairs.chunk_size, seed=seed, desc=desc, model_name=model_id)

    def test_generations(self, role: str, ckpt: Path | None, folder: Path, *, desc: str) -> list[str]:
        """One generation per test prompt (eval sampling settings), cached in `folder`."""
        test = self.splits["test"]
        result = self.sample(role, ckpt, test, self.cfg.eval.sampling, folder, seed=self.cfg.seed, desc=desc)
        result.require_all(f"{desc} ({folder})")
        return [result.samples[e.id][0] for e in test]

    def row_generations(self, row: str) -> list[str]:
        """An evaluation row's test generations, shared by `prefdistill run` and the bench."""
        role, ckpt = self.eval_model(row)
        return self.test_generations(role, ckpt, self.folder.eval_samples(row), desc=f"eval {row}")

    # ------------------------------------------------------------------ judges
    def training_judge(self):
        """The judge training uses: the oracle's scores, pair relabelling and margins."""
        # On the GPU when there is one: a large reward model is slow on the CPU.
        return judges.build_judge(self.cfg.judge, self.run_dir, device=str(pick_device("auto")))

    def eval_judge(self):
        """The judge that grades every row (`eval_judge`); by default held out from what training optimised."""
        return judges.build_eval_judge(self.cfg, device=str(pick_device("auto")))

    @property
    def separate_eval_judge(self) -> bool:
        return resolved_eval_judge(self.cfg) != "same"

    def graders(self) -> dict:
        """{"eval": the grader, "training": the training judge when it is another one}."""
        return {"eval": self.eval_judge(), **({"training": self.training_judge()} if self.separate_eval_judge else {})}

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

    # ------------------------------------------------------------------ metrics
    def gather(self, evaluated: dict) -> dict:
        cfg, folder = self.cfg, self.folder
        metrics = {"task": cfg.data.source, "teacher": cfg.teacher.name_or_path, "student": cfg.student.name_or_path,
                   "method": cfg.distill.method, "n_test": len(self.splits["test"]), **evaluated}
        metrics["judges"] = self.judges_info()
        metrics["judge"] = metrics["judges"]["eval"]  # the grader (older readers look here)
        training = {}
        for name in ("teacher_sft", "student_sft", "student_distill"):
            log = folder.checkpoint(name) / LOG_FILE
            if log.is_file():
                training["distill" if name == "student_distill" else f"sft_{name.split('_')[0]}"] = read_jsonl(log)
        metrics["training"] = training
        metrics["sft"] = self.sft_choices()
        if folder.pairs_file("summary.json").is_file():
            metrics["pairs"] = read_json(folder.pairs_file("summary.json"))
        timings = folder.timings()
        metrics["timings_s"] = {**timings, "total": round(sum(timings.values()), 1)}
        return metrics


def run_stages(cfg: RunConfig, stages: list[str] | None = None, **kwargs) -> dict:
    seed_everything(cfg.seed)
    return Pipeline(cfg, **kwargs).run(stages)
