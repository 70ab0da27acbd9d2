"""The method registry: a training method is one file with one decorated loss function.

    @register("plad", consumes="pairs", params=PLaDParams)
    def plad(policy, rows, params):       # -> (scalar loss, {stat: float})
        ...

What a method consumes and needs are data on its entry, read by the pipeline, which
computes only what the configured methods declare; the training loop never branches on
a method's name. Rows a method trains on (`consumes`):
  targets   prompt + reference rows of the supervised half
  prompts   prompts of the distillation half only (the method samples for itself)
  pairs     prompt / chosen / rejected rows from the teacher's and the student's samples A method that keeps a
moving anchor registers `after_step=fn`: the loop calls fn(policy, params, **extras) once
after every applied optimizer step (never per micro-batch, never after a skipped step).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from prefdistill.config.typed import check_fields, from_dict
from prefdistill.data.rows import training_rows
from prefdistill.errors import ConfigError
from prefdistill.models.common import tokenizer_mismatch, vocabulary_mismatch

CONSUMES = ("targets", "prompts", "pairs")
NEEDS = {
    "teacher": "the teacher model inside the training loop (token-level: needs one vocabulary)",
    "teacher_samples": "the teacher's samples on the distillation prompts (the pairs file)",
    "student_samples": "the SFT student's samples on the distillation prompts (the pairs file)",
    "pair_scores": "scores of both sides of each pair (pairs.score)",
    "teacher_pair_logps": "the teacher's log-likelihoods of both samples of each pair, computed once and stored",
    "teacher_topk": "the teacher's top-k ids and log-probs at each position the method trains on (the reference targets, or the "
                    "teacher's samples of the pairs), cached once (params signal: topk, k, temperature, topk_dtype)",
    "served_teacher": "the teacher behind its backend (a server, a vLLM engine), asked at every step for its top-k log-probs of "
                      "the text trained on, fresh student samples included; never in training memory (params signal: served, k)",
    "reference": "a frozen copy of the starting (SFT) student, π_ref",
    "oracle": "a preference oracle P(y ≻ y' | x) (oracle config)",
    "state": "a dict kept across the steps of one training run (anchors, moving averages)",
}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    consumes: Literal["targets", "prompts", "pairs"]
    params_cls: type
    loss: Callable[..., tuple[Any, dict[str, float]]]
    needs: frozenset[str] = field(default_factory=frozenset)  # keys of NEEDS
    summary: str = ""
    label: str = ""  # display name in reports, e.g. "PLaD"
    after_step: Callable[..., None] | None = None  # called after each applied optimizer step


METHODS: dict[str, MethodSpec] = {}


def register(name: str, *, consumes: str, params: type, needs: tuple[str, ...] = (), summary: str = "", label: str = "",
             after_step: Callable[..., None] | None = None):
    if consumes not in CONSUMES:
        raise ValueError(f"method {name!r}: consumes must be one of {CONSUMES}")
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"method {name!r}: unknown needs {sorted(unknown)}; choose from {sorted(NEEDS)}")
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"method {name!r}: params must be a dataclass")

    def decorator(fn):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        loss = typed_rows(fn)  # the module's name for it too: a direct call gets records like the loop's
        METHODS[name] = MethodSpec(name, consumes, params, loss, frozenset(needs), summary or (doc[0] if doc else ""),
                                   label or name.upper(), after_step)
        return loss

    return decorator


def typed_rows(fn: Callable) -> Callable:
    """`fn` reading its rows as records (`prefdistill.data.rows`): dicts are checked and converted, records pass through."""
    @functools.wraps(fn)
    def loss(policy, rows, params, **extras):
        return fn(policy, training_rows(rows), params, **extras)
    return loss


def requirements(spec: MethodSpec, params) -> tuple[str, frozenset[str]]:
    """(consumes, needs) of a method under `params`.

    A params class with a `requirements()` method refines its entry's (a mode that reads
    other data, e.g. DPKD's token-argmax mode); otherwise the entry's own apply.
    """
    refine = getattr(params, "requirements", None)
    if refine is None:
        return spec.consumes, spec.needs
    consumes, needs = refine()
    if consumes not in CONSUMES or set(needs) - set(NEEDS):
        raise ValueError(f"method {spec.name!r}: bad requirements {consumes!r}, {sorted(needs)}")
    return consumes, frozenset(needs)


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_params(cfg) -> Any:
    """The typed hyperparameters of cfg.distill.method, from cfg.distill.params, every field's rule checked."""
    return build_params(get_method(cfg.distill.method), cfg.distill.params, "distill.params")


def build_params(spec: MethodSpec, params: dict, prefix: str) -> Any:
    """A method's params class from plain data: types, unknown keys and each field's rule (prefdistill.config.typed)."""
    if isinstance(params, dict) and "signal" in params and params["signal"] not in signal_options(spec):
        refuse_signal(spec, params["signal"], prefix)
    out = from_dict(spec.params_cls, params, prefix=prefix)
    check_fields(out, prefix)
    return out


def refuse_signal(spec: MethodSpec, value, prefix: str) -> None:
    """A `signal` the method does not take, refused naming the methods that take topk and served (other values: typed's error)."""
    options = signal_options(spec)
    if options and value not in ("topk", "served"):
        return
    if not options:
        why = ("it needs the teacher itself in the training loop" if "teacher" in spec.needs
               else "it does not read the teacher's token distributions")
        head = f"{prefix}.signal: {spec.name} has no signal option ({why})"
    else:  # takes live and served, not topk: what it trains on is drawn during training
        head = (f"{prefix}.signal: {spec.name} takes {' or '.join(options)}, not {value}: it trains on samples the student "
                "draws during training, which no cache made before training holds")
    raise ConfigError(f"{head}. Methods that ask a served teacher during training (signal: served): "
                      f"{', '.join(signal_methods('served'))}; that train from a cached teacher top-k (signal: topk): "
                      f"{', '.join(signal_methods('topk'))}")


def validate_method(cfg) -> None:
    """Config-time checks: the method exists, its params type-check, its needs are met."""
    try:
        spec = get_method(cfg.distill.method)
    except KeyError as e:
        raise ConfigError(f"distill.method: {e.args[0]}") from None
    params = method_params(cfg)
    check = getattr(params, "check", None)
    if check is not None:
        check(cfg)
    _, needs = requirements(spec, params)
    if "pair_scores" in needs and cfg.pairs.score == "none":
        raise ConfigError(f"distill.method={spec.name} needs pair scores: set pairs.score to rouge or judge")
    if "teacher" in needs and cfg.teacher.backend == "openai":
        raise api_teacher_error(spec)
    if {"teacher_topk", "served_teacher"} & needs:
        check_teacher_signal(cfg, params, "served_teacher" in needs)
    if {"teacher", "teacher_topk", "served_teacher"} & needs and cfg.teacher.backend != "openai":
        check_shared_vocabulary(cfg, spec)  # a server's tokens are checked against the student's row by row (api_topk)


def api_teacher_error(spec: MethodSpec) -> ConfigError:
    """Why a teacher behind an API cannot run in the training loop, and what the method takes instead."""
    ways = {"served": "signal: served (a server that returns top-k log-probs of given text, asked at every step)",
            "topk": "signal: topk (a cache of them, built from the server before training)"}
    ways = [w for o, w in ways.items() if o in signal_options(spec)]
    instead = f"; set distill.params.{' or '.join(ways)}" if ways else ""
    return ConfigError(f"distill.method={spec.name} reads the teacher's next-token distributions, which a teacher behind "
                       f"an API (teacher.backend=openai) cannot give in the training loop{instead}. Methods that need only "
                       f"its text: {', '.join(text_only_teacher())}.")


def check_teacher_signal(cfg, params, served: bool) -> None:
    """What a teacher's backend can give as top-k: a server and vLLM, log-probs at temperature 1; vLLM, at most max_logprobs."""
    from prefdistill.models.vllm_backend import VLLM_MAX_LOGPROBS

    backend = cfg.teacher.backend
    if params.temperature != 1.0 and (backend == "openai" or (served and backend == "vllm")):
        raise ConfigError(f"distill.params.temperature: {params.temperature:g} with signal: {params.signal}, but a teacher "
                          f"served by {backend} gives log-probs at temperature 1 only (tempering needs its whole "
                          "distribution); set temperature: 1, or teacher.backend: hf")
    if served and backend == "vllm" and params.k > VLLM_MAX_LOGPROBS:
        raise ConfigError(f"distill.params.k: {params.k} with signal: served, but a vLLM engine gives at most "
                          f"{VLLM_MAX_LOGPROBS} log-probs per position (its max_logprobs); set k ≤ {VLLM_MAX_LOGPROBS}")


def across_tokenizers() -> list[str]:
    """Methods that never compare token distributions, so teacher and student may tokenise differently.

    The one list: error messages, `prefdistill methods` and the README (checked by tests/test_readme.py) use it.
    """
    return sorted(n for n, s in METHODS.items() if "teacher" not in s.needs)


def signal_options(spec: MethodSpec) -> tuple[str, ...]:
    """The values of the method's `signal` parameter (live, topk, served), or () when it has none."""
    import typing

    field_types = typing.get_type_hints(spec.params_cls)
    return typing.get_args(field_types["signal"]) if "signal" in field_types else ()


def signal_methods(value: str) -> list[str]:
    """Methods whose `signal` takes `value`: topk (train from a cached teacher top-k), served (ask a served teacher)."""
    return sorted(n for n, s in METHODS.items() if value in signal_options(s))


def text_only_teacher() -> list[str]:
    """Methods that need nothing of the teacher but its text (no logits, no log-probabilities of given text)."""
    return sorted(n for n, s in METHODS.items() if not {"teacher", "teacher_pair_logps"} & s.needs)


def check_shared_vocabulary(cfg, spec: MethodSpec) -> None:
    """Refuse a token-level method when teacher and student tokenise differently.

    When the tokenizers cannot be loaded now (a hub model on an offline machine), the
    check is deferred with a warning: `require_shared_vocabulary` repeats it on the
    loaded models before any training step.
    """
    import warnings

    try:
        why = vocabulary_mismatch(cfg.teacher, cfg.student)
    except (OSError, ValueError) as e:
        warnings.warn(f"distill.method={spec.name}: could not load the tokenizers to check that teacher and student share "
                      f"one vocabulary ({e}); it is checked again when the models load", stacklevel=2)
        return
    if why:
        raise vocabulary_error(spec, why)


def require_shared_vocabulary(spec: MethodSpec, student, teacher) -> None:
    """The same check on loaded models (LocalLM-like objects with a `tokenizer` and a `name`)."""
    why = tokenizer_mismatch(teacher.tokenizer, student.tokenizer, teacher.name, student.name)
    if why:
        raise vocabulary_error(spec, why)


def vocabulary_error(spec: MethodSpec, why: str):
    return ConfigError(
        f"distill.method={spec.name} compares teacher and student next-token distributions, so both need one vocabulary, "
        f"but they tokenise differently ({why}). Use a teacher and student from one model family, or a sequence-level "
        f"method, which works across tokenizers: {', '.join(across_tokenizers())}."
    )
