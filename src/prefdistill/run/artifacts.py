"""The artifacts of one run, with typed accessors: splits, judges, SFT checkpoints, samples, pairs, teacher caches.

    art = Artifacts(cfg)                      # over RunFolder(cfg.run_dir)
    art.splits["test"]; art.sft_checkpoint("student"); art.training_data(method)
    art.sample("teacher", ckpt, examples, cfg.pairs.teacher_sampling, folder, seed=0, desc="sample teacher")

Each accessor reads what a stage wrote into the run folder (`prefdistill.run.folder`), or makes
it once when it is derived (the splits, the teacher's log-probs of the pairs, a top-k cache).
The stages (`prefdistill.run.stages`), a training job (`prefdistill.run.train_job`) and the bench
read a run through this class; the `Pipeline` only orders the stages and gathers the metrics.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from prefdistill import judges
from prefdistill.config.eval_rows import EVAL_ROWS
from prefdistill.config.schema import RunConfig, resolved_eval_judge
from prefdistill.data.pairs import load_pairs
from prefdistill.data.sampling import SampleSet, sample_resumable
from prefdistill.data.splits import prepare_splits
from prefdistill.io import Example, is_main_process, read_examples, read_jsonl, write_examples, write_jsonl
from prefdistill.methods import ResolvedMethod, resolve_method
from prefdistill.methods.common import attach_teacher_logps, student_side, teacher_side
from prefdistill.methods.registry import text_only_teacher
from prefdistill.models.common import vocabulary_mismatch
from prefdistill.models.hf import pick_device
from prefdistill.run.folder import RunFolder
from prefdistill.signal.fingerprint import teacher_fingerprint
from prefdistill.signal.topk_cache import TopkSignal, build_topk_cache
from prefdistill.training.best_checkpoint import LAST, VAL_LOSS, Selection, read_choice
from prefdistill.training.job import TrainingData

SPLITS = ("sft", "distill", "validation", "test")
ORACLE_KINDS = {"judge": "judge (the training judge)", "teacher": "teacher (its mean per-token log-prob)"}  # judges_info's names


class Artifacts:
    def __init__(self, cfg: RunConfig, *, methods: list[ResolvedMethod] | None = None, sft_selection: Selection | None = None):
        """`methods`: every method that will train here (default: cfg.distill's); `sft_selection`: how
        the SFT stage keeps its step under sft.select auto (default: the lowest validation loss; the bench gives its own)."""
        self.cfg = cfg
        self.folder = RunFolder(cfg.run_dir)
        self.methods = methods if methods is not None else [resolve_method(cfg)]
        self._auto_selection = sft_selection or VAL_LOSS
        self._splits: dict[str, list[Example]] | None = None

    # ------------------------------------------------------------------ data
    @property
    def splits(self) -> dict[str, list[Example]]:
        """The four splits, prepared once and then read back from the run folder."""
        if self._splits is None:
            if all(self.folder.split(s).is_file() for s in SPLITS):
                self._splits = {s: read_examples(self.folder.split(s)) for s in SPLITS}
            else:
                splits = prepare_splits(self.cfg.data, self.cfg.seed, tokenizer=self.student_tokenizer())
                self._splits = {s: getattr(splits, s) for s in SPLITS}
                for s in SPLITS:  # every process computes the same splits; one writes them
                    if is_main_process():
                        write_examples(self.folder.split(s), self._splits[s])
        return self._splits

    def student_tokenizer(self):
        # Prompts are truncated once, with the student's tokenizer, so teacher and student see the same text.
        from transformers import AutoTokenizer

        from prefdistill.models.assets import resolve_model_path

        st = self.cfg.student
        return AutoTokenizer.from_pretrained(resolve_model_path(st.name_or_path, st.gguf_file), trust_remote_code=st.trust_remote_code)

    def consumed(self) -> set[str]:
        """What the configured methods read: targets, prompts, pairs (the data stage computes only these)."""
        return {m.consumes for m in self.methods}

    def training_data(self, method: ResolvedMethod, pairs_path: Path | None = None) -> TrainingData:
        """A method's training rows (reference targets, distillation prompts, or the pairs: `pairs_path`, default the
        run's) and, when it reads a cached teacher top-k, the `TopkSignal` of those rows."""
        consumes, needs, params = method.consumes, method.needs, method.params
        if consumes == "targets":
            rows = [{"id": e.id, "prompt": e.prompt, "target": e.target} for e in self.splits["sft"]]
            return TrainingData(rows, self.teacher_topk(rows, params) if "teacher_topk" in needs else None)
        if consumes == "prompts":
            return TrainingData([{"id": e.id, "prompt": e.prompt} for e in self.splits["distill"]])
        rows = load_pairs(pairs_path or self.folder.pairs)
        if "teacher_pair_logps" in needs:
            attach_teacher_logps(rows, self.teacher_pair_logps(), method.name)
        # the methods that read a cache train on the teacher's side of each pair
        return TrainingData(rows, self.teacher_topk(rows, params, text=teacher_side) if "teacher_topk" in needs else None)

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
        teacher = self.scoring_teacher("this method", instead=f"a text-only method: {', '.join(text_only_teacher())}")
        prompts = [p["prompt"] for p in pairs]
        # Text, not token ids: a teacher with another tokenizer re-tokenises the student's samples its own way.
        by_teacher = teacher.score(prompts, [teacher_side(p) for p in pairs], normalize=False)
        by_student = teacher.score(prompts, [student_side(p) for p in pairs], normalize=False)
        table = [{"id": p["id"], "teacher_sample": a, "student_sample": b} for p, a, b in zip(pairs, by_teacher, by_student)]
        write_jsonl(path, table)
        return {r["id"]: r for r in table}

    def teacher_topk(self, rows: list[dict], params, text: str | Callable[[dict], str] = "target") -> TopkSignal:
        """The teacher's top-k log-probs at every completion position of `rows` (the completion: `text`, a row's key or a
        function of the row), cached once in RUN/teacher_signal/topk_k{K}.bin.

        Keyed by the teacher's weights, the method's k / temperature / topk_dtype and each row's
        prompt and token ids, so a rerun reuses it and training never holds the teacher in
        memory; returns the cache's `TopkSignal` (prefdistill.signal.topk_cache), which the loss is handed.
        The teacher's backend gives the top-k itself where its declared capabilities allow (`topk_source`:
        a vLLM engine's prompt log-probs at temperature 1 and k up to its max_logprobs; a server's echoed
        top_logprobs, after the correctness probe, at temperature 1); otherwise the weights load through
        the backend that gives logits in the loop (transformers).
        """
        from prefdistill.models.backends import release, topk_source

        ckpt, cfg = self.sft_checkpoint("teacher"), self.cfg.teacher
        teacher_id = teacher_fingerprint(cfg, ckpt)  # a hash of its weights and rendered prompt format, not its path
        path = self.folder.topk_cache(params.k)
        aligned = getattr(params, "vocabulary", "shared") == "aligned" or self.teacher_tokenizes_otherwise()
        own = topk_source(cfg.backend, params.k, params.temperature, served=False) == cfg.backend and not aligned
        signal = build_topk_cache(lambda: self.load("teacher", ckpt, in_loop=not own), rows, params.k, path, aligned=aligned,
                                  tokenizer=self.student_tokenizer(), teacher_id=teacher_id, temperature=params.temperature,
                                  dtype=params.topk_dtype, text_key=text, desc=f"teacher top-{params.k}",
                                  max_failed_fraction=self.cfg.distill.signal_max_failed_fraction,
                                  retry_failed=self.cfg.distill.signal_retry_failed)
        if own:
            release(cfg.backend)  # what loading held (a vLLM engine: gpu_memory_utilization of the GPU); training comes next
        return signal

    def teacher_tokenizes_otherwise(self) -> bool:
        """Whether a local teacher's tokenizer differs from the student's (then token-level signals are aligned); a server
        or a tokenizer that cannot be loaded here: False (a server's top-k is checked row by row against the student's)."""
        from prefdistill.models.backends import capabilities

        if not capabilities(self.cfg.teacher.backend).local:
            return False
        try:
            return vocabulary_mismatch(self.cfg.teacher, self.cfg.student) is not None
        except (OSError, ValueError):
            return False

    # ------------------------------------------------------------------ models
    def scoring_teacher(self, what: str, *, instead: str):
        """The teacher as served (its SFT weights; no autograd, eval mode), when it gives log-probabilities of given text;
        else a ValueError saying why (a server's echo probe: its reason), that `what` needs them, and `instead`."""
        teacher = self.load("teacher", self.sft_checkpoint("teacher"))
        if not getattr(teacher, "can_score", False):
            why = getattr(teacher, "score_unavailable", None)
            raise ValueError(f"teacher {self.cfg.teacher.name_or_path!r} returns text only{f' ({why})' if why else ''}, but "
                             f"{what} needs a scoring teacher (log-probabilities of given text). Use a local or vLLM teacher, "
                             f"a server that echoes log-probs, or {instead}.")
        return teacher

    def load(self, role: str, checkpoint: Path | None = None, for_training: bool = False, in_loop: bool = False,
             dtype: str | None = None):
        """`role`'s model (`dtype`: its weights' dtype instead of the configured one)."""
        from prefdistill.models import load_model
        from prefdistill.models.backends import loaded_as

        cfg = loaded_as(getattr(self.cfg, role), in_loop=in_loop)  # in the loop a model must give logits (vllm: through hf)
        cfg = replace(cfg, dtype=dtype) if dtype else cfg
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
        return EVAL_ROWS[row].label.format(method=resolve_method(self.cfg).label)

    def sft_logs(self) -> dict[str, list[dict]]:
        """{role: its SFT training log, to the budget's last step} for each model fine-tuned here (val_loss lines when
        sft.ROLE.eval_every is set); the step it kept: `sft_choices`."""
        logs = {role: self.folder.train_log(f"{role}_sft") for role in ("teacher", "student")}
        return {role: read_jsonl(path) for role, path in logs.items() if path.is_file()}

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
        return judges.build_judge(self.cfg.judge, self.folder.root, device=str(pick_device("auto")))

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
        cfg, trained = self.cfg, judges.judges_metrics(self.folder)
        training = ({"name": "trained", **trained["training"]} if cfg.judge.kind == "trained" and "training" in trained
                    else {"name": cfg.judge.name_or_path or cfg.judge.callable or cfg.judge.kind})
        kind = resolved_eval_judge(cfg)
        if kind == "same":
            grader = {**training, "same_as_training": True}
        elif kind == "heldout":
            grader = {"name": "heldout", **trained.get("heldout", {})}
        else:
            grader = {"name": cfg.eval_judge.name_or_path or cfg.eval_judge.callable or kind}
        o = cfg.oracle  # the run's; a bench entry's own oracle is named on its row
        oracle = ({"kind": o.kind, "model": o.model} if o.kind == "api"
                  else {"kind": ORACLE_KINDS[o.kind], "temperature": o.temperature})
        return {"eval": grader, "training": {**training, "oracle": oracle}}
