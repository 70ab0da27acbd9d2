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
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from prefdistill.errors import ConfigError
from prefdistill.models.common import tokenizer_mismatch, vocabulary_mismatch
from prefdistill.typed import check_fields, from_dict

CONSUMES = ("targets", "prompts", "pairs")
NEEDS = {
    "teacher": "the teacher model inside the training loop (token-level: needs one vocabulary)",
    "teacher_samples": "the teacher's samples on the distillation prompts (the pairs file)",
    "student_samples": "the SFT student's samples on the distillation prompts (the pairs file)",
    "pair_scores": "scores of both sides of each pair (pairs.score)",
    "teacher_pair_logps": "the teacher's log-likelihoods of both samples of each pair, computed once and stored",
    "teacher_topk": "the teacher's top-k ids and log-probs at each position the method trains on (the reference targets, or the "
                    "teacher's samples of the pairs), cached once (params signal: topk, k, temperature, topk_dtype)",
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
        METHODS[name] = MethodSpec(name, consumes, params, fn, frozenset(needs), summary or (doc[0] if doc else ""),
                                   label or name.upper(), after_step)
        return fn

    return decorator


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
    """A method's params class from plain data: types, unknown keys and each field's rule (prefdistill.typed)."""
    if isinstance(params, dict) and "signal" in params and "signal" not in {f.name for f in dataclasses.fields(spec.params_cls)}:
        why = ("it needs the teacher itself in the training loop, to score the samples the student draws there, which no "
               "cache made before training holds" if "teacher" in spec.needs else "it does not read the teacher's token distributions")
        raise ConfigError(f"{prefix}.signal: {spec.name} has no signal option ({why}). Methods that train from a cached "
                          f"teacher top-k (signal: topk): {', '.join(topk_signal())}")
    out = from_dict(spec.params_cls, params, prefix=prefix)
    check_fields(out, prefix)
    return out


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
    if {"teacher", "teacher_topk"} & needs and cfg.teacher.backend == "openai":
        raise ConfigError(f"distill.method={spec.name} reads the teacher's next-token distributions, which a "
                          f"teacher behind an API (teacher.backend=openai) does not give. Methods that need only its text: "
                          f"{', '.join(text_only_teacher())}.")
    if {"teacher", "teacher_topk"} & needs:
        check_shared_vocabulary(cfg, spec)


def across_tokenizers() -> list[str]:
    """Methods that never compare token distributions, so teacher and student may tokenise differently.

    The one list: error messages, `prefdistill methods` and the README (checked by tests/test_readme.py) use it.
    """
    return sorted(n for n, s in METHODS.items() if "teacher" not in s.needs)


def topk_signal() -> list[str]:
    """Methods that can train from the teacher's top-k cached before training (a `signal` parameter)."""
    return sorted(n for n, s in METHODS.items() if "signal" in {f.name for f in dataclasses.fields(s.params_cls)})


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
