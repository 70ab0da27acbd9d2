"""The method registry: a training method is one file with one decorated loss function.

    @register("plad", consumes="pairs", params=PLaDParams)
    def plad(policy, rows, params):       # -> (scalar loss, {stat: float})
        ...

What a method consumes and needs are data on its entry, read by the pipeline, which
computes only what the configured methods declare; the training loop never branches on
a method's name. Rows a method trains on (`consumes`):
  targets   prompt + reference rows of the supervised half
  prompts   prompts of the distillation half only (the method samples for itself)
  pairs     prompt / chosen / rejected rows from the teacher's and the student's samples
A method also declares its `family` (how the papers group it, e.g. PLaD's KD baselines), whether it samples
from the student in the loop (`on_policy`), and the orderings its paper reports (`claims`). A config's
method is resolved once (`resolve_method(cfg)`: a `ResolvedMethod`) and read everywhere. A method that keeps a
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
from prefdistill.models.backends import backends_with, capabilities, get_backend, serving, topk_source
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
FAMILIES = {
    "imitation": "likelihood of reference text, nothing of the teacher (SFT)",
    "kd": "the knowledge-distillation baselines of PLaD's Table 1: token-level, sequence-level, f-divergence and on-policy KD",
    "preference": "calibration or DPO on teacher ≻ student pairs (PLaD, DPKD)",
    "win_rate": "the student's win rate under a preference oracle (WIND, SPPO, BOND, J-BOND)",
}
SFT_ROW = "SFT"  # a claim's side that is the SFT student


@dataclass(frozen=True)
class Claim:
    """An ordering a paper reports: `better` beats `worse` on `metric`; a side names a method, `family:NAME` (each
    member in turn), or SFT_ROW (the SFT student)."""
    paper: str
    better: str
    worse: str
    metric: str


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
    family: str = ""  # a key of FAMILIES ("": none)
    on_policy: bool = False  # samples from the student inside the training loop (its params may turn that off)
    claims: tuple[Claim, ...] = ()  # orderings its paper reports


METHODS: dict[str, MethodSpec] = {}


def register(name: str, *, consumes: str, params: type, needs: tuple[str, ...] = (), summary: str = "", label: str = "",
             after_step: Callable[..., None] | None = None, family: str = "", on_policy: bool = False,
             claims: tuple[Claim, ...] = ()):
    if consumes not in CONSUMES:
        raise ValueError(f"method {name!r}: consumes must be one of {CONSUMES}")
    if family and family not in FAMILIES:
        raise ValueError(f"method {name!r}: unknown family {family!r}; choose from {sorted(FAMILIES)}")
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
                                   label or name.upper(), after_step, family, on_policy or consumes == "prompts", tuple(claims))
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


@dataclass(frozen=True)
class ResolvedMethod:
    """A method as a config sets it, computed once (`resolve`): its entry, typed params and what follows from them."""
    spec: MethodSpec
    params: Any
    consumes: str  # a key of CONSUMES, under these params
    needs: frozenset[str]  # keys of NEEDS, under these params
    on_policy: bool  # samples from the student inside the training loop, under these params
    family: str  # a key of FAMILIES
    label: str  # display name in reports

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def of(cls, spec: MethodSpec, params) -> "ResolvedMethod":
        """`spec` under typed `params`: a params class's `requirements()` and `samples_student()` refine the entry's."""
        consumes, needs = requirements(spec, params)
        refine = getattr(params, "samples_student", None)
        on_policy = spec.on_policy and (bool(refine()) if refine is not None else True)
        return cls(spec, params, consumes, needs, on_policy, spec.family, spec.label)


def resolve(name: str, params: dict, prefix: str) -> ResolvedMethod:
    """Method `name` with its params from plain data (`prefix`: where they sit in the config, for error messages)."""
    spec = get_method(name)
    return ResolvedMethod.of(spec, build_params(spec, params, prefix))


def resolve_method(cfg) -> ResolvedMethod:
    """cfg.distill's method, resolved."""
    return resolve(cfg.distill.method, cfg.distill.params, "distill.params")


WARMUP_METHOD = "sft"  # the supervised warm-up of teacher and student trains with this method, at its default params


def warmup_method() -> ResolvedMethod:
    """The method of the supervised warm-up (the sft stage), resolved at its default params."""
    return resolve(WARMUP_METHOD, {}, "sft")


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_params(cfg) -> Any:
    """The typed hyperparameters of cfg.distill.method, from cfg.distill.params, every field's rule checked."""
    return resolve_method(cfg).params


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
    """Config-time checks: the method exists, its params type-check, its needs are met by the teacher's backend."""
    try:
        get_method(cfg.distill.method)
    except KeyError as e:
        raise ConfigError(f"distill.method: {e.args[0]}") from None
    method = resolve_method(cfg)
    spec, params, needs = method.spec, method.params, method.needs
    check = getattr(params, "check", None)
    if check is not None:
        check(cfg)
    if "pair_scores" in needs and cfg.pairs.score == "none":
        raise ConfigError(f"distill.method={spec.name} needs pair scores: set pairs.score to rouge or judge")
    if "teacher_pair_logps" in needs and not capabilities(cfg.teacher.backend).can_score:
        raise ConfigError(f"distill.method={spec.name} needs the teacher's log-probabilities of given text, which a teacher on "
                          f"backend {cfg.teacher.backend} cannot give (its capabilities: can_score false). Methods that need "
                          f"only its text: {', '.join(text_only_teacher())}.")
    if "teacher" in needs and serving(cfg.teacher.backend, "in_loop") is None:
        raise api_teacher_error(spec, cfg.teacher.backend)
    if {"teacher_topk", "served_teacher"} & needs:
        check_teacher_signal(cfg, params, "served_teacher" in needs)
    if {"teacher", "teacher_topk", "served_teacher"} & needs and capabilities(cfg.teacher.backend).local:
        check_vocabulary(cfg, spec, params)  # a server's tokens are checked against the student's row by row (api_topk)


def api_teacher_error(spec: MethodSpec, backend: str) -> ConfigError:
    """Why a teacher with no logits in the training loop cannot serve the method, and what the method takes instead."""
    ways = {"served": "signal: served (a server that returns top-k log-probs of given text, asked at every step)",
            "topk": "signal: topk (a cache of them, built from the server before training)"}
    ways = [w for o, w in ways.items() if o in signal_options(spec)]
    instead = f"; set distill.params.{' or '.join(ways)}" if ways else ""
    where = "behind an API" if not capabilities(backend).local else "on this backend"
    return ConfigError(f"distill.method={spec.name} reads the teacher's next-token distributions, which a teacher {where} "
                       f"(teacher.backend={backend}) cannot give in the training loop{instead}. Methods that need only "
                       f"its text: {', '.join(text_only_teacher())}.")


def check_teacher_signal(cfg, params, served: bool) -> None:
    """Whether the teacher's backend gives the top-k asked (its capabilities: topk, max_logprobs, temperature_any), itself
    or (a cache) through the backend that holds its weights in the loop."""
    backend = cfg.teacher.backend
    caps = capabilities(backend)
    if topk_source(backend, params.k, params.temperature, served=served) is not None:
        return
    if not caps.topk and (served or topk_source(backend, 1, 1.0, served=False) is None):
        raise ConfigError(f"distill.params.signal: {params.signal}, but a teacher on backend {backend} gives no top-k log-probs "
                          "of given text (its capabilities: topk false); set teacher.backend to one that does "
                          f"({', '.join(backends_with('topk'))}), or signal: live")
    if params.temperature != 1.0 and not caps.temperature_any:
        raise ConfigError(f"distill.params.temperature: {params.temperature:g} with signal: {params.signal}, but a teacher "
                          f"served by {backend} gives log-probs at temperature 1 only (tempering needs its whole "
                          "distribution); set temperature: 1, or teacher.backend: hf")
    limit = caps.max_logprobs
    raise ConfigError(f"distill.params.k: {params.k} with signal: {params.signal}, but {get_backend(backend).describe} gives at "
                      f"most {limit} log-probs per position (its max_logprobs); set k ≤ {limit}")


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


def on_policy_methods() -> list[str]:
    """Methods that can sample from the student inside the training loop (under their default params or some others)."""
    return sorted(n for n, s in METHODS.items() if s.on_policy)


def family_methods(family: str) -> list[str]:
    """The methods of `family` (a key of FAMILIES), in registration order."""
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; choose from {sorted(FAMILIES)}")
    return [n for n, s in METHODS.items() if s.family == family]


def paper_orderings() -> list[Claim]:
    """Every ordering the registered methods' papers report, a family side expanded into its members (registration order)."""
    def side(name: str) -> list[str]:
        return family_methods(name.removeprefix("family:")) if name.startswith("family:") else [name]

    return [Claim(c.paper, better, worse, c.metric) for s in METHODS.values() for c in s.claims
            for better in side(c.better) for worse in side(c.worse)]


def check_vocabulary(cfg, spec: MethodSpec, params) -> None:
    """A token-level method and a teacher of another tokenizer: aligned (`vocabulary: auto` or `aligned`, where the method
    and its signal can be), else refused.

    When the tokenizers cannot be loaded now (a hub model on an offline machine), the
    check is deferred with a warning: `teacher_for` repeats it on the loaded models before any training step.
    """
    import warnings

    choice = getattr(params, "vocabulary", "shared")
    try:
        why = vocabulary_mismatch(cfg.teacher, cfg.student)
    except (OSError, ValueError) as e:
        warnings.warn(f"distill.method={spec.name}: could not load the tokenizers to check whether teacher and student share "
                      f"one vocabulary ({e}); it is checked again when the models load", stacklevel=2)
        return
    if why or choice == "aligned":
        refuse_across(spec, params, why or "vocabulary: aligned")


def refuse_across(spec: MethodSpec, params, why: str) -> None:
    """Raise unless the method's loss can take a teacher of another tokenizer with these params."""
    choice = getattr(params, "vocabulary", "shared")
    if choice == "shared":
        raise vocabulary_error(spec, why, has_choice=hasattr(params, "vocabulary"))
    problem = "signal: live or topk" if getattr(params, "signal", "live") not in ("live", "topk") else None
    problem = problem or getattr(params, "across_tokenizers_problem", lambda: None)()
    if problem:
        raise ConfigError(f"distill.method={spec.name} aligns a teacher of another tokenizer ({why}) to the student's tokens "
                          f"only with {problem} (or signal: served from a server, backend: openai, read by character "
                          f"offset); otherwise it needs one vocabulary. Set {problem}, or use a teacher and "
                          f"student of one tokenizer, or a sequence-level method, which works across tokenizers: "
                          f"{', '.join(across_tokenizers())}")


def teacher_for(spec: MethodSpec, params, student, teacher):
    """The teacher a loss is given: the loaded teacher itself, or with a `TokenizerBridge` to the student's tokenizer
    (`AlignedTeacher`) when the two tokenise differently or `vocabulary: aligned` asks for it; refused as `check_vocabulary`."""
    from prefdistill.models.alignment import AlignedTeacher, TokenizerBridge

    why = tokenizer_mismatch(teacher.tokenizer, student.tokenizer, teacher.name, student.name)
    if not why and getattr(params, "vocabulary", "shared") != "aligned":
        return teacher
    refuse_across(spec, params, why or "vocabulary: aligned")
    return AlignedTeacher(teacher, TokenizerBridge(student.tokenizer, teacher.tokenizer))


def require_shared_vocabulary(spec: MethodSpec, student, teacher) -> None:
    """Refuse a teacher of another tokenizer where no alignment is made (a served teacher's top-k)."""
    why = tokenizer_mismatch(teacher.tokenizer, student.tokenizer, teacher.name, student.name)
    if why:
        raise vocabulary_error(spec, why)


def vocabulary_error(spec: MethodSpec, why: str, has_choice: bool = False):
    way = (f"set distill.params.vocabulary: auto (the teacher aligned to the student's tokens, signal: live), use"
           if has_choice else "Use")
    return ConfigError(
        f"distill.method={spec.name} compares teacher and student next-token distributions over one vocabulary, but "
        f"they tokenise differently ({why}). {way} a teacher and student from one model family, or a sequence-level "
        f"method, which works across tokenizers: {', '.join(across_tokenizers())}."
    )
