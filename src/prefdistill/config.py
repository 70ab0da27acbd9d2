"""Typed run configuration: YAML -> nested dataclasses, with dotted CLI overrides.

    cfg = load_config("configs/demo.yaml", ["distill.train.lr=5e-5", "seed=1"])

Every field is documented once, here. Unknown keys and wrong types raise
`ConfigError` naming the dotted key, before any model is loaded.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


# ----------------------------------------------------------------------------- schema


@dataclass
class LoraConfig:
    enabled: bool = True  # train LoRA adapters instead of all weights
    r: int = 8  # PLaD paper default
    alpha: int = 32  # PLaD paper default
    dropout: float = 0.1  # PLaD paper default
    target_modules: Union[str, list[str]] = "all-linear"  # peft target_modules


@dataclass
class ApiConfig:
    """An OpenAI-compatible server (backend: openai); `name_or_path` is the model's name there."""

    base_url: str = ""  # e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1
    api_key_env: str | None = "OPENAI_API_KEY"  # environment variable holding the key; never logged or stored
    endpoint: Literal["completions", "chat"] = "chat"  # /v1/completions (plain prompt) or /v1/chat/completions
    max_concurrency: int = 8  # requests in flight at once
    timeout_s: float = 60.0  # hard limit on one request, connection to last byte
    max_retries: int = 5  # retries of one request after a timeout, a dropped connection, 429, 5xx or a malformed reply
    backoff_s: float = 1.0  # first retry waits up to this (exponential backoff, full jitter)
    backoff_max_s: float = 30.0  # cap on one wait; a longer Retry-After is still honoured
    # Log-probabilities of given text (DPKD's teacher log p(y|x)) come from /v1/completions with
    # echo + logprobs. auto: probe the server once and fall back to text-only with a clear reason.
    logprobs: Literal["auto", "on", "off"] = "auto"


@dataclass
class VLLMConfig:
    """Options of the vLLM engine (backend: vllm; `pip install prefdistill[vllm]`, needs a GPU)."""

    gpu_memory_utilization: float = 0.85  # share of GPU memory vLLM may take
    tensor_parallel_size: int = 1  # GPUs one model is split over
    max_model_len: int | None = None  # context length to reserve (None: the model's)
    enforce_eager: bool = False  # skip CUDA graphs (faster start, slower decoding)


@dataclass
class ModelConfig:
    # A Hugging Face model name, a local folder, a .gguf file, or a builtin asset
    # ("builtin:smollm2-135m-instruct", "builtin:gemma3-270m"; see prefdistill.assets).
    name_or_path: str = ""
    gguf_file: str | None = None  # GGUF file name inside a folder / hub repo
    # hf: local transformers weights (train, generate, score); vllm: the same weights served by a
    # vLLM engine for sampling and scoring; openai: a server behind an OpenAI-compatible API (see api).
    backend: Literal["hf", "vllm", "openai"] = "hf"
    prompt_format: Literal["auto", "chat", "plain"] = "auto"  # auto: chat template if the tokenizer has one
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # "auto" picks cuda when available, else cpu
    max_context: int | None = None  # override the model's context length
    trust_remote_code: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    num_samples: int = 1  # completions per prompt
    batch_size: int = 8  # prompts per generate() call


@dataclass
class ColumnMap:
    prompt: str = "prompt"  # column holding the model input (or used by `template`)
    target: str = "target"  # column holding the reference output
    id: str | None = None  # optional stable row id column


@dataclass
class SplitNames:
    train: str = "train"
    validation: str | None = "validation"  # None: carve `val_fraction` out of train
    test: str | None = "test"  # None: carve `test_fraction` out of train


@dataclass
class DataConfig:
    # "builtin:aclsum", "builtin:chitchat", a `datasets` hub name, or a local
    # .jsonl / .json / .parquet / .csv file (or a folder of them).
    source: str = "builtin:aclsum"
    subset: str | None = None  # `datasets` configuration name
    splits: SplitNames = field(default_factory=SplitNames)
    columns: ColumnMap = field(default_factory=ColumnMap)
    # Python format string over the row's columns giving the prompt text; the default
    # uses the mapped prompt column as is.
    template: str = "{prompt}"
    # Prompt length rule (tokens of the student's tokenizer, before any chat template):
    # "right" keeps the first `max_prompt_tokens` tokens, "left" keeps the last ones,
    # "error" refuses the row.
    max_prompt_tokens: int = 512
    truncation: Literal["right", "left", "error"] = "right"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_train: int | None = None  # cap on training rows before the halving (None: all)
    max_val: int | None = None
    max_test: int | None = None
    distill_fraction: float = 1.0  # share of the distillation half used for pairs


@dataclass
class TrainConfig:
    enabled: bool = True
    steps: int | None = None  # optimizer steps; None: `epochs` over the data
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    save_every: int = 25  # steps between resumable training-state saves
    log_every: int = 5
    max_nonfinite_in_a_row: int = 5  # NaN/inf steps (skipped) in a row before training stops, saving the last good state


@dataclass
class SFTConfig:
    teacher: TrainConfig = field(default_factory=TrainConfig)
    student: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class PairsConfig:
    teacher_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    student_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    chunk_size: int = 16  # prompts sampled per call (local models; chunk k is seeded with seed + k)
    # Prompts an API teacher could not answer (after its retries) are listed in pairs/failures.jsonl
    # and left out; the stage stops instead when more than this share of the prompts failed.
    max_failed_fraction: float = 0.05
    # Share of pairs relabelled by the judge (swap when the judge prefers the student
    # side): the PLaD paper's "real preference pairs" ratio.
    relabel_fraction: float = 0.0
    # Scores stored with each side, used by margin calibration: none, rouge (against the
    # reference) or judge.
    score: Literal["none", "rouge", "judge"] = "none"


@dataclass
class DistillConfig:
    method: str = "plad"  # a registered method (prefdistill.methods.METHODS)
    params: dict[str, Any] = field(default_factory=dict)  # validated by the method
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class JudgeConfig:
    # trained: prefdistill's own reward model from the `reward` stage;
    # hf: a sequence-classification reward model (name_or_path);
    # callable: "module:function" taking (prompts, responses) -> list of floats.
    kind: Literal["trained", "hf", "callable"] = "trained"
    name_or_path: str | None = None
    callable: str | None = None
    batch_size: int = 32
    max_length: int = 512  # tokens per (prompt, response) for kind hf


@dataclass
class EvalJudgeConfig:
    """The judge that grades every evaluated row: independent of what any method optimised.

    A method that optimises a judge (WIND, SPPO, BOND, J-BOND through the oracle; PLaD with
    judge relabelling or judge margins) must not be graded only by that judge. `judge` is the
    one training uses; this one grades, and the report shows both.
    """

    # auto: heldout when judge.kind is trained, else same;
    # heldout: a second reward model from the `reward` stage, trained on the documents the training
    #          judge never saw (the reward data is split in two by document), with its own seed;
    # same: grade with `judge` itself (then not independent of methods that optimised it);
    # hf / callable: as for `judge`.
    kind: Literal["auto", "heldout", "same", "hf", "callable"] = "auto"
    name_or_path: str | None = None
    callable: str | None = None
    batch_size: int = 32
    max_length: int = 512  # tokens per (prompt, response) for kind hf
    seed_offset: int = 1  # heldout: trained with seed + seed_offset (its own negatives and initialisation)


@dataclass
class OracleConfig:
    """The preference oracle of win-rate methods (WIND, SPPO, BOND, J-BOND): P(y ≻ y' | x)."""

    # judge: Bradley–Terry over the run's judge, σ((r(y) − r(y'))/temperature);
    # api: a pairwise LLM judge behind an OpenAI-compatible endpoint, asked in both orders.
    kind: Literal["judge", "api"] = "judge"
    temperature: float = 1.0  # Bradley–Terry temperature over judge scores
    base_url: str | None = None  # api: e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # api: the judge model's name on that server
    api_key_env: str | None = "OPENAI_API_KEY"  # api: environment variable holding the key (none needed locally)
    max_workers: int = 8  # api: concurrent requests


@dataclass
class RewardConfig:
    """Training of the default judge (the `reward` stage)."""

    encoder: str = "builtin:minilm"  # frozen encoder the reward head reads (never trained)
    prompt_max_length: int = 128  # prompt tokens mean-pooled into the prompt's embedding
    prompt_opening_length: int = 16  # its first tokens pooled apart too: the instruction sits there
    response_max_length: int = 64  # response tokens the head reads (longer ones are cut)
    head_dim: int = 128  # width of the trained head (~0.35M parameters at 128 over MiniLM)
    steps: int = 300  # AdamW steps of the head
    batch_size: int = 64  # preference pairs per step
    lr: float = 1.0e-3  # peak learning rate, linear decay to 0
    weight_decay: float = 0.01  # AdamW weight decay
    # Extra draws per training example of the negatives that are other references
    # ("mismatched", "sibling"): already encoded, so free; they curb overfitting on relevance.
    extra_reference_draws: int = 2
    # Kinds of rejected text built from each reference (see prefdistill.judges.negatives).
    negatives: list[str] = field(
        default_factory=lambda: ["mismatched", "sibling", "truncated", "shuffled", "repeated", "copied"]
    )


@dataclass
class EvalConfig:
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(do_sample=False, max_new_tokens=64)
    )
    rows: list[str] = field(
        default_factory=lambda: ["teacher", "student_init", "student_sft", "student_distill"]
    )
    n_bootstrap: int = 1000
    length_buckets: list[int] = field(default_factory=lambda: [15, 25, 35])  # word-count edges


@dataclass
class BenchMethod:
    name: str = ""  # the row's key in the bench results, unique (e.g. "fdistill_js")
    method: str = ""  # a registered method (prefdistill.methods.METHODS)
    params: dict[str, Any] = field(default_factory=dict)  # validated by the method
    label: str | None = None  # display name; default: the method's label
    seeds: list[int] | None = None  # this entry's training seeds (None: bench.seeds), e.g. fewer for ablations


@dataclass
class BenchConfig:
    """`prefdistill bench`: many methods from one SFT student, one set of pairs, one budget."""

    methods: list[BenchMethod] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # training seeds of every method row
    # Figure 4: shares of the distillation data; each method is also trained on these
    # (first seed only). The full-data runs come from the main table.
    data_shares: list[float] = field(default_factory=list)
    data_share_methods: list[str] | None = None  # bench entries in the data sweep (None: all)
    # Figure 2: shares of judge-relabelled ("real") pairs for `relabel_method` (first seed only).
    relabel_shares: list[float] = field(default_factory=list)
    relabel_method: str = "plad"  # the bench entry (name) the relabel sweep trains
    keep_checkpoints: bool = False  # keep each trained student (else only its samples and results)
    # The report's folder, RUN/bench/<report>/: benches sharing a run folder (and its cached
    # jobs) with different method lists keep separate reports.
    report: str = "main"


STAGES = ("reward", "sft", "pairs", "distill", "eval")
EVAL_ROWS = ("teacher", "student_init", "student_sft", "student_distill")  # models `eval.rows` may name


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"  # the run folder is output_dir/name
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    teacher: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    eval_judge: EvalJudgeConfig = field(default_factory=EvalJudgeConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# ----------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting where lossless."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported annotation {tp}")  # pragma: no cover


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys by name."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{dotted}'{hint}; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """"a.b=1e-5" -> (["a", "b"], 1e-05); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
        node[path[-1]] = value
    return data


def load_config(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (or a dict), apply dotted overrides and validate everything."""
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = copy.deepcopy(source)  # overrides must not leak into the caller's dict
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    data = _with_base(data, Path(source).parent if isinstance(source, (str, Path)) else Path.cwd())
    data = apply_overrides(data, list(overrides or []))
    cfg = from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def _with_base(data: dict, folder: Path, seen: tuple[str, ...] = ()) -> dict:
    """Resolve `base: OTHER` (a YAML path relative to this file, or a packaged config name):
    this file's keys are merged over OTHER's, mappings key by key, anything else replaced."""
    base = data.pop("base", None)
    if base is None:
        return data
    path = folder / base
    if not path.is_file():
        packaged = Path(__file__).parent / "configs" / f"{base}.yaml"
        if not packaged.is_file():
            raise ConfigError(f"base: {base!r} is neither a file next to this config nor a packaged config")
        path = packaged
    if str(path.resolve()) in seen:
        raise ConfigError(f"base: {base!r} includes itself")
    parent = yaml.safe_load(path.read_text()) or {}
    parent = _with_base(parent, path.parent, seen + (str(path.resolve()),))
    return _merge(parent, data)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------- ranges

# What the types cannot say: the allowed values of numeric fields, checked on every
# instance wherever it sits in the tree (sft.student.lr and distill.train.lr alike).
# None always passes: it means "default" or "no cap" where a field allows it.
AT_LEAST_1 = ("must be >= 1", lambda v: v >= 1)
NON_NEGATIVE = ("must be >= 0", lambda v: v >= 0)
POSITIVE = ("must be > 0", lambda v: v > 0)
SHARE = ("must lie in [0, 1]", lambda v: 0 <= v <= 1)
OPEN_SHARE = ("must lie in (0, 1]", lambda v: 0 < v <= 1)
HELD_OUT_SHARE = ("must lie in [0, 1)", lambda v: 0 <= v < 1)
RANGES: dict[type, dict[str, tuple[str, Any]]] = {
    RunConfig: {"seed": ("must lie in [0, 2**32)", lambda v: 0 <= v < 2**32)},  # numpy's seed range
    ModelConfig: {"max_context": AT_LEAST_1},
    LoraConfig: {"r": AT_LEAST_1, "alpha": POSITIVE, "dropout": HELD_OUT_SHARE},
    ApiConfig: {"max_concurrency": AT_LEAST_1, "timeout_s": POSITIVE, "max_retries": NON_NEGATIVE,
                "backoff_s": NON_NEGATIVE, "backoff_max_s": NON_NEGATIVE},
    VLLMConfig: {"gpu_memory_utilization": OPEN_SHARE, "tensor_parallel_size": AT_LEAST_1, "max_model_len": AT_LEAST_1},
    SamplingConfig: {"max_new_tokens": AT_LEAST_1, "temperature": NON_NEGATIVE, "top_p": OPEN_SHARE,
                     "num_samples": AT_LEAST_1, "batch_size": AT_LEAST_1},
    DataConfig: {"max_prompt_tokens": AT_LEAST_1, "val_fraction": HELD_OUT_SHARE, "test_fraction": HELD_OUT_SHARE,
                 "max_train": NON_NEGATIVE, "max_val": NON_NEGATIVE, "max_test": NON_NEGATIVE,
                 "distill_fraction": OPEN_SHARE},
    TrainConfig: {"steps": AT_LEAST_1, "epochs": POSITIVE, "batch_size": AT_LEAST_1, "grad_accum": AT_LEAST_1,
                  "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "warmup_ratio": SHARE, "max_grad_norm": POSITIVE,
                  "save_every": AT_LEAST_1, "log_every": AT_LEAST_1, "max_nonfinite_in_a_row": AT_LEAST_1},
    PairsConfig: {"chunk_size": AT_LEAST_1, "max_failed_fraction": SHARE, "relabel_fraction": SHARE},
    JudgeConfig: {"batch_size": AT_LEAST_1, "max_length": AT_LEAST_1},
    EvalJudgeConfig: {"batch_size": AT_LEAST_1, "max_length": AT_LEAST_1, "seed_offset": AT_LEAST_1},
    OracleConfig: {"temperature": POSITIVE, "max_workers": AT_LEAST_1},
    RewardConfig: {"prompt_max_length": ("must be >= 2", lambda v: v >= 2), "prompt_opening_length": ("must be >= 2", lambda v: v >= 2),
                   "response_max_length": ("must be >= 2", lambda v: v >= 2), "head_dim": AT_LEAST_1, "steps": AT_LEAST_1,
                   "batch_size": AT_LEAST_1, "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "extra_reference_draws": NON_NEGATIVE},
    EvalConfig: {"n_bootstrap": AT_LEAST_1},
}


def check_ranges(node: Any, prefix: str = "") -> None:
    """Raise ConfigError naming the dotted key of the first value outside its range in RANGES."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_ranges(item, f"{prefix}[{i}]")
        return
    if not dataclasses.is_dataclass(node):
        return
    rules = RANGES.get(type(node), {})
    for f in dataclasses.fields(node):
        key, value = f"{prefix}.{f.name}" if prefix else f.name, getattr(node, f.name)
        if f.name in rules and value is not None:
            rule, ok = rules[f.name]
            if not math.isfinite(value) or not ok(value):  # YAML reads .nan / .inf as floats
                raise ConfigError(f"{key}: {rule}, got {value!r}")
        check_ranges(value, key)


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that the types alone cannot express."""
    check_ranges(cfg)
    if not cfg.name.strip() or any(c in cfg.name for c in "/\\") or cfg.name in (".", ".."):
        # The run folder is output_dir/name: a path here would write into (or over) another folder.
        raise ConfigError(f"name: {cfg.name!r} must be a plain folder name (no '/', not '.' or '..'); "
                          "put the parent folder in output_dir")
    for stage in cfg.stages:
        if stage not in STAGES:
            raise ConfigError(f"stages: unknown stage {stage!r}; choose from {list(STAGES)}")
    unknown_rows = [r for r in cfg.eval.rows if r not in EVAL_ROWS]
    if unknown_rows:
        raise ConfigError(f"eval.rows: unknown row(s) {unknown_rows}; choose from {list(EVAL_ROWS)}")
    for role in ("teacher", "student"):
        if not getattr(cfg, role).name_or_path:
            raise ConfigError(f"{role}.name_or_path: required (a model name, a folder or a .gguf file)")
    _validate_backends(cfg)
    _validate_chat_templates(cfg)
    _validate_data(cfg)
    _validate_lengths(cfg)
    if cfg.judge.kind == "hf" and not cfg.judge.name_or_path:
        raise ConfigError("judge.name_or_path: required when judge.kind is 'hf'")
    if cfg.oracle.kind == "api" and not (cfg.oracle.base_url and cfg.oracle.model):
        raise ConfigError("oracle.base_url and oracle.model: required when oracle.kind is 'api'")
    if cfg.judge.kind == "callable" and not cfg.judge.callable:
        raise ConfigError("judge.callable: required when judge.kind is 'callable' (module:function)")
    _validate_eval_judge(cfg)
    from prefdistill.methods import validate_method  # registry lives with the methods

    validate_method(cfg)
    validate_bench(cfg)


def _validate_eval_judge(cfg: RunConfig) -> None:
    e = cfg.eval_judge
    if e.kind == "heldout" and cfg.judge.kind != "trained":
        raise ConfigError(f"eval_judge.kind: 'heldout' is the second reward model of the reward stage, which runs only with "
                          f"judge.kind 'trained' (here {cfg.judge.kind!r}); set eval_judge.kind to hf, callable or same")
    if e.kind == "hf" and not e.name_or_path:
        raise ConfigError("eval_judge.name_or_path: required when eval_judge.kind is 'hf'")
    if e.kind == "callable" and not e.callable:
        raise ConfigError("eval_judge.callable: required when eval_judge.kind is 'callable' (module:function)")


def resolved_eval_judge(cfg: RunConfig) -> str:
    """eval_judge.kind with 'auto' resolved: 'heldout' under a trained judge, else 'same'."""
    kind = cfg.eval_judge.kind
    if kind == "auto":
        return "heldout" if cfg.judge.kind == "trained" else "same"
    return kind


def _validate_data(cfg: RunConfig) -> None:
    """Options of `data` that contradict each other."""
    d = cfg.data
    if d.val_fraction + d.test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction: {d.val_fraction} + {d.test_fraction} leaves no "
                          "training rows; keep the sum below 1")
    named = [("data.splits.train", d.splits.train), ("data.splits.validation", d.splits.validation),
             ("data.splits.test", d.splits.test)]
    for i, (key_a, a) in enumerate(named):
        for key_b, b in named[i + 1:]:
            if a is not None and a == b:
                raise ConfigError(f"{key_a} and {key_b}: both name the split {a!r}; the model would be evaluated "
                                  "on the rows it was trained or selected on")
    if "{prompt}" in d.template and d.columns.prompt == d.columns.target:
        raise ConfigError(f"data.columns.prompt and data.columns.target: both name the column {d.columns.prompt!r}; "
                          "the target would be the prompt itself")


def _validate_lengths(cfg: RunConfig) -> None:
    """Sampling settings that contradict themselves or a configured context length."""
    samplings = [("pairs.teacher_sampling", cfg.pairs.teacher_sampling, "teacher"),
                 ("pairs.student_sampling", cfg.pairs.student_sampling, "student"),
                 ("eval.sampling", cfg.eval.sampling, None)]
    for key, sampling, role in samplings:
        if sampling.do_sample and sampling.temperature == 0:
            raise ConfigError(f"{key}.temperature: 0 with {key}.do_sample=true; set do_sample to false for greedy decoding")
        for r in [role] if role else ["teacher", "student"]:
            context = getattr(cfg, r).max_context
            if context is not None and cfg.data.max_prompt_tokens + sampling.max_new_tokens > context:
                raise ConfigError(f"{r}.max_context: {context} tokens cannot hold data.max_prompt_tokens "
                                  f"({cfg.data.max_prompt_tokens}) plus {key}.max_new_tokens ({sampling.max_new_tokens})")


def _validate_chat_templates(cfg: RunConfig) -> None:
    """prompt_format 'chat' needs a tokenizer with a chat template; checked now for local folders
    (cheap to read), and again by every backend when the model loads."""
    for role in ("teacher", "student"):
        m = getattr(cfg, role)
        if m.prompt_format != "chat" or m.backend == "openai" or m.gguf_file or not Path(m.name_or_path).expanduser().is_dir():
            continue
        from prefdistill.models import load_tokenizer

        if not getattr(load_tokenizer(m), "chat_template", None):
            raise ConfigError(f"{role}.prompt_format: 'chat', but the tokenizer of {m.name_or_path} has no chat template; "
                              "use 'plain' (or 'auto')")


def _validate_backends(cfg: RunConfig) -> None:
    """What a model behind an API can and cannot do, said before anything runs."""
    if cfg.student.backend == "openai":
        raise ConfigError("student.backend: the student is trained here, so it must be local (hf or vllm), not openai")
    t = cfg.teacher
    if t.backend != "openai":
        return
    if not t.api.base_url:
        raise ConfigError("teacher.api.base_url: required when teacher.backend is 'openai' (e.g. http://127.0.0.1:8000/v1)")
    if cfg.sft.teacher.enabled:
        raise ConfigError("sft.teacher.enabled: a teacher behind an API cannot be fine-tuned here; set it to false")


def validate_bench(cfg: RunConfig) -> None:
    """Every bench entry names a registered method whose params and needs check out."""
    from prefdistill.methods import validate_method

    b = cfg.bench
    names = [m.name for m in b.methods]
    for i, m in enumerate(b.methods):
        if not m.name or not m.method:
            raise ConfigError(f"bench.methods[{i}]: name and method are both required")
        if names.count(m.name) > 1:
            raise ConfigError(f"bench.methods[{i}]: name {m.name!r} is used twice")
        variant = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, method=m.method, params=m.params))
        try:
            validate_method(variant)
        except ConfigError as e:
            raise ConfigError(f"bench.methods[{i}] ({m.name}): {e}") from None
    for key, shares, low_open in (("data_shares", b.data_shares, True), ("relabel_shares", b.relabel_shares, False)):
        for x in shares:
            if not ((0 < x <= 1) if low_open else (0 <= x <= 1)):
                raise ConfigError(f"bench.{key}: {x} is outside {'(0, 1]' if low_open else '[0, 1]'}")
    for name in (b.data_share_methods or []) + ([b.relabel_method] if b.relabel_shares else []):
        if name not in names:
            raise ConfigError(f"bench: {name!r} is not one of bench.methods ({', '.join(names) or 'none'})")
    if b.relabel_shares and cfg.pairs.relabel_fraction > 0:
        raise ConfigError("bench.relabel_shares relabels the pairs itself: set pairs.relabel_fraction to 0")
    for i, m in enumerate(b.methods):
        if m.seeds is not None and not m.seeds:
            raise ConfigError(f"bench.methods[{i}].seeds: give at least one seed, or leave it out for bench.seeds")
    if not b.report or "/" in b.report or b.report in ("runs", "pairs", ".", ".."):
        raise ConfigError(f"bench.report: {b.report!r} must be a plain folder name (not runs or pairs)")
    if b.methods and not b.seeds:
        raise ConfigError("bench.seeds: give at least one seed")
