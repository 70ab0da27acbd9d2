"""The run configuration's schema: nested dataclasses, each field documented once with its rule.

    from prefdistill import load_config            # parsing: prefdistill.config.files; checks: prefdistill.config.checks
    cfg = load_config("configs/demo.yaml", ["distill.train.lr=5e-5", "seed=1"])

`opt(default, doc, rule)` puts a field's documentation and allowed range next to it;
`prefdistill.config.typed.check_fields` enforces every rule, naming the dotted key. Rules that
span several fields live in `prefdistill.config.checks`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union

from prefdistill.config.eval_rows import EVAL_ROWS
from prefdistill.config.typed import (AT_LEAST_1, AT_LEAST_2, HELD_OUT_SHARE, NON_NEGATIVE, OPEN_SHARE, POSITIVE, SHARE, from_dict,  # noqa: F401
                               opt, to_dict)
from prefdistill.errors import ConfigError  # noqa: F401  (re-exported: `from prefdistill.config.schema import ConfigError`)

STAGES = ("reward", "sft", "pairs", "distill", "eval")
# Positions whose logits exist at once (`prefdistill.losses.chunked`). Their memory is positions × V × 4 bytes ×
# copies (a divergence holds ~6: both logits, both log-probs, the terms, the gradient): 512 positions are ~0.6 GB
# at SmolLM's V = 49,152 and ~3 GB at Gemma-3's 262,144, where a batch of 8 × 256 completion tokens would need 4× that;
# each chunk's (512, H) × (H, V) product is still large enough to keep a GPU's matrix units busy.
LOGITS_CHUNK = 512
SEED_RANGE = ("must lie in [0, 2**32)", lambda v: 0 <= v < 2**32)  # numpy's seed range


@dataclass
class LoraConfig:
    enabled: bool = opt(True, "train LoRA adapters instead of all weights")
    r: int = opt(8, "LoRA rank (PLaD paper: 8)", AT_LEAST_1)
    alpha: int = opt(32, "LoRA scaling alpha (PLaD paper: 32)", POSITIVE)
    dropout: float = opt(0.1, "dropout on the LoRA input (PLaD paper: 0.1)", HELD_OUT_SHARE)
    target_modules: Union[str, list[str]] = opt("all-linear", "peft target_modules: a name pattern or a list")


@dataclass
class ApiConfig:
    """An OpenAI-compatible server: a teacher (backend: openai) or the LLM-judge oracle."""

    base_url: str = opt("", "the server, e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1")
    api_key_env: str | None = opt("OPENAI_API_KEY", "environment variable holding the key; never logged or stored")
    endpoint: Literal["completions", "chat"] = opt("chat", "/v1/completions (plain prompt) or /v1/chat/completions")
    max_concurrency: int = opt(8, "requests in flight at once", AT_LEAST_1)
    timeout_s: float = opt(60.0, "hard limit on one request, connection to last byte", POSITIVE)
    max_retries: int = opt(5, "retries after a timeout, a dropped connection, 429, 5xx or a malformed reply", NON_NEGATIVE)
    backoff_s: float = opt(1.0, "the first retry waits up to this (exponential backoff, full jitter)", NON_NEGATIVE)
    backoff_max_s: float = opt(30.0, "cap on one wait; a longer Retry-After is still honoured", NON_NEGATIVE)
    logprobs: Literal["auto", "on", "off"] = opt(
        "auto", "log-probs of given text (echo + logprobs on /v1/completions); auto: probe the server once, else text only")


@dataclass
class VLLMConfig:
    """Options of the vLLM engine (backend: vllm; `pip install prefdistill[vllm]`, needs a GPU)."""

    gpu_memory_utilization: float = opt(0.85, "share of GPU memory vLLM may take", OPEN_SHARE)
    tensor_parallel_size: int = opt(1, "GPUs one model is split over", AT_LEAST_1)
    max_model_len: int | None = opt(None, "context length to reserve (None: the model's)", AT_LEAST_1)
    enforce_eager: bool = opt(False, "skip CUDA graphs (faster start, slower decoding)")


@dataclass
class ModelConfig:
    name_or_path: str = opt("", "a Hugging Face name, a folder, a .gguf file, or builtin:NAME (prefdistill.models.assets)")
    gguf_file: str | None = opt(None, "GGUF file name inside a folder or hub repository")
    backend: Literal["hf", "vllm", "openai"] = opt(
        "hf", "hf: local transformers weights; vllm: the same weights in a vLLM engine for sampling and scoring; "
              "openai: a server behind an OpenAI-compatible API (see api)")
    prompt_format: Literal["auto", "chat", "plain"] = opt("auto", "auto: the chat template if the tokenizer has one")
    dtype: Literal["float32", "bfloat16", "float16"] = opt("float32", "weights' dtype when loaded")
    device: str = opt("auto", "auto: cuda when available, else cpu")
    max_context: int | None = opt(None, "override the model's context length (tokens)", AT_LEAST_1)
    trust_remote_code: bool = opt(False, "allow the model folder's own Python code")
    lora: LoraConfig = opt(None, "how this model is fine-tuned", factory=LoraConfig)
    api: ApiConfig = opt(None, "the server, when backend is openai", factory=ApiConfig)
    vllm: VLLMConfig = opt(None, "the engine, when backend is vllm", factory=VLLMConfig)


@dataclass
class SamplingConfig:
    max_new_tokens: int = opt(64, "tokens generated per completion at most", AT_LEAST_1)
    do_sample: bool = opt(True, "sample (true) or decode greedily (false)")
    temperature: float = opt(0.7, "softmax temperature when sampling", NON_NEGATIVE)
    top_p: float = opt(0.9, "nucleus sampling mass", OPEN_SHARE)
    num_samples: int = opt(1, "completions per prompt", AT_LEAST_1)
    batch_size: int = opt(8, "prompts per generate() call", AT_LEAST_1)


@dataclass
class ColumnMap:
    prompt: str = opt("prompt", "column holding the model input (or read by data.template)")
    target: str = opt("target", "column holding the reference output")
    id: str | None = opt(None, "optional column of stable row ids")
    group: str | None = opt(None, "column tying rows together (a paper, a conversation): whole groups stay on one side of "
                                  "every split, judge half and bootstrap draw; None: the column `group` when present")


@dataclass
class SplitNames:
    train: str = opt("train", "the source's training split")
    validation: str | None = opt("validation", "its validation split; None: carve data.val_fraction out of train")
    test: str | None = opt("test", "its test split; None: carve data.test_fraction out of train")


@dataclass
class DataConfig:
    source: str = opt("builtin:aclsum", "builtin:aclsum, builtin:chitchat, a datasets hub name, or a local "
                                        ".jsonl / .json / .parquet / .csv file or folder")
    subset: str | None = opt(None, "the datasets configuration name")
    splits: SplitNames = opt(None, "which of the source's splits play which role", factory=SplitNames)
    columns: ColumnMap = opt(None, "which columns hold prompt, target and id", factory=ColumnMap)
    template: str = opt("{prompt}", "Python format string over the row's columns giving the prompt text")
    max_prompt_tokens: int = opt(512, "prompt length cap in student tokens, before any chat template", AT_LEAST_1)
    truncation: Literal["right", "left", "error"] = opt(
        "right", "over the cap: right keeps the first tokens, left the last ones, error refuses the row")
    val_fraction: float = opt(0.1, "share of train carved out as validation when the source has none", HELD_OUT_SHARE)
    test_fraction: float = opt(0.1, "share of train carved out as test when the source has none", HELD_OUT_SHARE)
    max_train: int | None = opt(None, "cap on training rows before the halving (None: all)", NON_NEGATIVE)
    max_val: int | None = opt(None, "cap on validation rows (None: all)", NON_NEGATIVE)
    max_test: int | None = opt(None, "cap on test rows (None: all)", NON_NEGATIVE)
    distill_fraction: float = opt(1.0, "share of the distillation half used for pairs", OPEN_SHARE)
    held_out_overlap: Literal["error", "drop_from_validation"] = opt(
        "error", "official validation and test splits sharing a prompt or group: error stops, naming them; "
                 "drop_from_validation removes the shared rows from validation with a logged warning")


@dataclass
class TrainConfig:
    enabled: bool = opt(True, "false skips this training (SFT: the base model stands in)")
    steps: int | None = opt(None, "optimizer steps; None: `epochs` over the data", AT_LEAST_1)
    epochs: float = opt(1.0, "passes over the data when steps is None", POSITIVE)
    batch_size: int = opt(4, "rows per micro-batch, all processes together (the global batch; see docs/distributed.md)",
                          AT_LEAST_1)
    grad_accum: int = opt(1, "micro-batches per optimizer step", AT_LEAST_1)
    lr: float = opt(1e-4, "peak learning rate (linear warm-up, then linear decay to 0)", POSITIVE)
    weight_decay: float = opt(0.0, "AdamW weight decay", NON_NEGATIVE)
    warmup_ratio: float = opt(0.0, "share of the steps spent warming the learning rate up", SHARE)
    max_grad_norm: float = opt(1.0, "gradient-norm clip", POSITIVE)
    mixed_precision: Literal["no", "bf16", "fp16"] = opt("no", "accelerate's mixed precision")
    save_every: int = opt(25, "steps between resumable training-state saves", AT_LEAST_1)
    log_every: int = opt(5, "steps between printed log lines", AT_LEAST_1)
    max_nonfinite_in_a_row: int = opt(5, "NaN/inf steps (skipped) in a row before training stops, saving the last good "
                                         "state", AT_LEAST_1)
    eval_every: int | None = opt(None, "SFT: steps between validation-loss measurements, logged as val_loss (None: none)",
                                 AT_LEAST_1)
    logits_chunk: int = opt(LOGITS_CHUNK, "positions whose logits are computed at once by the LM head and the loss (and "
                                          "recomputed in the backward pass): the whole batch's (B, C, V) logits are never "
                                          "held; 0: the whole batch at once", NON_NEGATIVE)
    full_weights: bool = opt(False, "train every weight even when the model's lora is enabled (e.g. the SFT of a student "
                                    "cut from a larger model, which LoRA cannot repair); later training uses LoRA on top")


@dataclass
class SFTConfig:
    teacher: TrainConfig = opt(None, "supervised fine-tuning of the teacher on the supervised half", factory=TrainConfig)
    student: TrainConfig = opt(None, "supervised fine-tuning of the student (the SFT row)", factory=TrainConfig)
    select: Literal["auto", "val_loss", "last"] = opt(
        "auto", "which evaluation's weights each SFT keeps (early stopping), among every sft.ROLE.eval_every steps and the "
                "last (no eval_every: the last): val_loss: the lowest validation loss; last: the last step; auto: val_loss "
                "under `prefdistill run`, and under `prefdistill bench` bench.select_metric on bench.val_prompts, as for "
                "every method. Later stages and methods all start from the kept weights")


@dataclass
class PairsConfig:
    teacher_sampling: SamplingConfig = opt(None, "how the teacher samples the distillation prompts", factory=SamplingConfig)
    student_sampling: SamplingConfig = opt(None, "how the SFT student samples them", factory=SamplingConfig)
    chunk_size: int = opt(16, "prompts sampled per call by local models (chunk k is seeded with seed + k)", AT_LEAST_1)
    max_failed_fraction: float = opt(0.05, "share of prompts an API teacher may fail on (listed in pairs/failures.jsonl) "
                                           "before the stage stops", SHARE)
    relabel_fraction: float = opt(0.0, "share of pairs the training judge orders (PLaD's 'real preference pairs')", SHARE)
    score: Literal["none", "rouge", "judge"] = opt("none", "scores stored with each side, for margin calibration")


@dataclass
class DistillConfig:
    method: str = opt("plad", "a registered method (`prefdistill methods`)")
    params: dict[str, Any] = opt(None, "the method's parameters, checked by its params class", factory=dict)
    train: TrainConfig = opt(None, "the distillation training run", factory=TrainConfig)
    signal_max_failed_fraction: float = opt(
        0.05, "signal topk / served: share of the rows (cached, or scored in the run) whose teacher top-k cannot be had "
              "(a server's tokens that do not line up with the student's) before the run stops naming them; each is "
              "listed with its reason (teacher_signal/topk_kK.failures.jsonl, CHECKPOINT.signal_failures.jsonl) and left "
              "out of the distillation term", SHARE)
    signal_retry_failed: bool = opt(False, "ask the teacher again for rows listed as failed (else a rerun keeps the record; "
                                           "deleting the file does the same)")


@dataclass
class JudgeSource:
    """Where a judge's weights or function come from (kinds hf and callable), and how it batches."""

    name_or_path: str | None = opt(None, "kind hf: the reward model")
    callable: str | None = opt(None, "kind callable: 'module:function'")
    batch_size: int = opt(32, "(prompt, response) pairs scored per batch", AT_LEAST_1)
    max_length: int = opt(512, "kind hf: tokens per (prompt, response)", AT_LEAST_1)


@dataclass
class JudgeConfig(JudgeSource):
    """The training judge: the oracle's scores, pair relabelling and margins."""

    kind: Literal["trained", "hf", "callable"] = opt(
        "trained", "trained: the reward stage's model; hf: a sequence-classification reward model; "
                   "callable: 'module:function'(prompts, responses) -> floats")


@dataclass
class EvalJudgeConfig(JudgeSource):
    """The judge that grades every row, independent of what any method optimised (prefdistill.judges.heldout)."""

    kind: Literal["auto", "heldout", "same", "hf", "callable"] = opt(
        "auto", "auto: heldout under a trained judge, else same; heldout: a second reward model trained on the other "
                "half of the documents; same: the training judge itself (not independent); hf / callable: as for judge")
    seed_offset: int = opt(1, "kind heldout: trained with seed + seed_offset (its own negatives and initialisation)",
                           AT_LEAST_1)


@dataclass
class OracleConfig:
    """The preference oracle of the win-rate methods (WIND, SPPO, BOND, J-BOND): P(y ≻ y' | x)."""

    kind: Literal["judge", "teacher", "api"] = opt(
        "judge", "judge: Bradley–Terry over the training judge, σ((r(y) − r(y'))/temperature); teacher: Bradley–Terry "
                 "over the teacher's mean per-token log-prob of y (a teacher that scores text: local, vLLM, or a server "
                 "whose echo passes the probe; docs/derivations.md); api: a pairwise LLM judge, asked in both orders (a "
                 "chat model, the teacher's too, as the judge)")
    temperature: float = opt(1.0, "Bradley–Terry temperature: over judge scores (judge), over mean per-token log-probs in "
                                  "nats (teacher: a gap of 1 nat gives σ(1/temperature))", POSITIVE)
    model: str | None = opt(None, "kind api: the judge model's name on the server")
    api: ApiConfig = opt(None, "kind api: the server (base_url, key, concurrency, timeouts, retries)", factory=ApiConfig)

    @property
    def label(self) -> str:
        """What a results row names it by: the kind and its temperature, or the LLM judge's model."""
        return f"api ({self.model})" if self.kind == "api" else f"{self.kind} (τ={self.temperature:g})"


@dataclass
class RewardConfig:
    """Training of the trained judges (the `reward` stage)."""

    encoder: str = opt("builtin:minilm", "frozen encoder the reward head reads (never trained)")
    prompt_max_length: int = opt(128, "prompt tokens mean-pooled into the prompt's embedding", AT_LEAST_2)
    prompt_opening_length: int = opt(16, "its first tokens pooled apart too: the instruction sits there", AT_LEAST_2)
    response_max_length: int = opt(64, "response tokens the head reads (longer ones are cut)", AT_LEAST_2)
    head_dim: int = opt(128, "width of the trained head (~0.35M parameters at 128 over MiniLM)", AT_LEAST_1)
    steps: int = opt(300, "AdamW steps of the head", AT_LEAST_1)
    batch_size: int = opt(64, "preference pairs per step", AT_LEAST_1)
    lr: float = opt(1.0e-3, "peak learning rate, linear decay to 0", POSITIVE)
    weight_decay: float = opt(0.01, "AdamW weight decay", NON_NEGATIVE)
    extra_reference_draws: int = opt(2, "extra draws of the other-reference negatives (free: already encoded)",
                                     NON_NEGATIVE)
    # template, loop and student_init joined the default after a judge tuned on corrupted references alone ranked
    # generic phrases and loops of model text above the reference (issue 26 item 8): changing the list changes every
    # judge, and a judge trained with another list is trained again (`judges.reward.stale_fields`).
    negatives: list[str] = opt(None, "kinds of rejected text built from each reference (prefdistill.judges.negatives); "
                                     "student_init: the reward stage samples the untrained student on the reward data",
                               factory=lambda: ["mismatched", "sibling", "truncated", "shuffled", "repeated", "copied",
                                                "template", "loop", "student_init"])


@dataclass
class EvalConfig:
    sampling: SamplingConfig = opt(None, "how every row generates on the test prompts",
                                   factory=lambda: SamplingConfig(do_sample=False, max_new_tokens=64))
    rows: list[str] = opt(None, f"rows of the table, among {', '.join(EVAL_ROWS)}", factory=lambda: list(EVAL_ROWS))
    n_bootstrap: int = opt(1000, "bootstrap resamples of every interval", AT_LEAST_1)
    length_buckets: list[int] = opt(None, "word-count edges of the length buckets", factory=lambda: [15, 25, 35])


@dataclass
class BenchMethod:
    name: str = opt("", "the row's key in the bench results, unique (e.g. fdistill_js)")
    method: str = opt("", "a registered method")
    params: dict[str, Any] = opt(None, "the method's parameters", factory=dict)
    label: str | None = opt(None, "display name; default: the method's label")
    seeds: list[int] | None = opt(None, "this entry's training seeds (None: bench.seeds)")
    grid: dict[str, list[Any]] = opt(None, "this entry's grid, added to bench.grid (its keys win): a method parameter, or lr, "
                                      "to a list of values, e.g. {beta: [0.1, 0.5]}", factory=dict)
    oracle: OracleConfig | None = opt(None, "this entry's preference oracle (a win-rate method), e.g. {kind: teacher, "
                                            "temperature: 0.3}; None: the run's oracle")


@dataclass
class CalibrationConfig:
    """The calibration measure (PLaD's claim): K candidates per test prompt, sampled once from the teacher and the SFT
    student and graded once by the evaluation judge, ranked by every row's length-normalised log-likelihood."""

    enabled: bool = opt(True, "build the candidate set and score it by every row (teacher, initial and SFT students, each "
                              "tested job)")
    teacher_samples: int = opt(4, "candidates sampled from the teacher per test prompt", AT_LEAST_1)
    student_samples: int = opt(4, "candidates sampled from the SFT student per test prompt", AT_LEAST_1)
    temperature: float = opt(0.7, "sampling temperature of the candidates (max_new_tokens and batch_size: eval.sampling's)",
                             POSITIVE)
    top_p: float = opt(0.9, "nucleus mass of the candidates' sampling", OPEN_SHARE)


@dataclass
class BenchConfig:
    """`prefdistill bench`'s own section: many methods from one SFT student, one set of pairs, one budget."""

    methods: list[BenchMethod] = opt(None, "the rows to train and compare", factory=list)
    seeds: list[int] = opt(None, "training seeds of every method row; the grid runs on the first, the chosen setting on "
                                 "all", factory=lambda: [0, 1, 2])
    grid: dict[str, list[Any]] = opt(None, "every entry's grid: lr (distill.train.lr) and / or method parameters to lists of "
                                      "values, e.g. {lr: [1.0e-4, 3.0e-4]}; each point is scored on validation",
                                factory=dict)
    checkpoints: list[int] = opt(None, "steps (besides the last) at which each run is scored on validation, so an early "
                                       "checkpoint can be chosen and a collapse shows", factory=list)
    select_metric: Literal["win_rate", "rougeL"] = opt("win_rate", "what the choice maximises on validation (the "
                                                                   "evaluation judge's win rate vs the references, or ROUGE-L)")
    val_prompts: int | None = opt(None, "validation prompts used to choose (the first N; None: all)", AT_LEAST_1)
    gap_floor: float = opt(10.0, "smallest teacher − SFT-student win-rate gap (points, validation) the bench runs with; "
                                 "below it, or when its CI includes 0, the bench stops (--ignore-gap goes on)",
                           NON_NEGATIVE)
    seqkd_entry: str | None = opt("seqkd", "the entry every row is also compared with (the budget-matched control; None: "
                                           "no such comparison)")
    quick: list[str] = opt(None, "dotted overrides `--quick` applies (a smaller bench of the same design, in its own "
                                 "run folder NAME-quick)", factory=list)
    data_shares: list[float] = opt(None, "Figure 4: shares of the distillation data (first seed only)", factory=list)
    data_share_methods: list[str] | None = opt(None, "bench entries in the data sweep (None: all)")
    relabel_shares: list[float] = opt(None, "Figure 2: shares of judge-relabelled pairs (first seed only)", factory=list)
    relabel_method: str = opt("plad", "the bench entry the relabel sweep trains")
    keep_checkpoints: bool = opt(False, "keep each trained student (else only its samples and results)")
    report: str = opt("main", "the report's folder RUN/bench/<report>/, so benches sharing a run folder keep "
                              "separate reports")
    calibration: CalibrationConfig = opt(None, "the candidate set every row's likelihood ranks (PLaD's calibration "
                                               "claim)", factory=CalibrationConfig)


@dataclass
class RunConfig:
    name: str = opt("run", "the run folder's name: output_dir/name")
    output_dir: str = opt("runs", "where run folders go")
    seed: int = opt(0, "the run's seed (splits, sampling, training)", SEED_RANGE)
    stages: list[str] = opt(None, f"stages `prefdistill run` runs, in order: {', '.join(STAGES)}", factory=lambda: list(STAGES))
    teacher: ModelConfig = opt(None, "the teacher", factory=ModelConfig)
    student: ModelConfig = opt(None, "the student", factory=ModelConfig)
    data: DataConfig = opt(None, "the task's data", factory=DataConfig)
    sft: SFTConfig = opt(None, "supervised warm-up of both models", factory=SFTConfig)
    pairs: PairsConfig = opt(None, "teacher and student samples, and the pairs built from them", factory=PairsConfig)
    distill: DistillConfig = opt(None, "the distillation method and its training", factory=DistillConfig)
    judge: JudgeConfig = opt(None, "the training judge", factory=JudgeConfig)
    eval_judge: EvalJudgeConfig = opt(None, "the grading judge", factory=EvalJudgeConfig)
    oracle: OracleConfig = opt(None, "the win-rate methods' preference oracle", factory=OracleConfig)
    reward: RewardConfig = opt(None, "training of the trained judges", factory=RewardConfig)
    eval: EvalConfig = opt(None, "evaluation on the test split", factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def training_lora(model: ModelConfig, train: TrainConfig) -> LoraConfig:
    """The LoRA settings one training run uses: the model's, unless this run trains every weight."""
    return replace(model.lora, enabled=False) if train.full_weights else model.lora


def resolved_eval_judge(cfg: RunConfig) -> str:
    """eval_judge.kind with 'auto' resolved: 'heldout' under a trained judge, else 'same'."""
    kind = cfg.eval_judge.kind
    if kind == "auto":
        return "heldout" if cfg.judge.kind == "trained" else "same"
    return kind
