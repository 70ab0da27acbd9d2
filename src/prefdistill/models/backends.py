"""The backend registry: what each model backend can do, declared once beside its class.

    register_backend("hf", Capabilities(can_score=True, topk=True, ...), LocalLM.load, describe="local transformers weights")
    capabilities("vllm").max_logprobs        # 20
    lm = load_model(cfg.teacher)             # the registered loader of cfg.backend

Config checks, the method registry and the pipeline read these declared properties; none of
them compares a backend's name. Adding a backend is one file (its class and its
`register_backend` line) plus its import in `prefdistill.models` and its name in the schema's
`ModelConfig.backend` choices (a test keeps the two in agreement).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable


@dataclass(frozen=True)
class Capabilities:
    """What a backend gives; a loaded model may give less (a server that fails the echo probe scores nothing)."""

    generate: bool = True  # samples completions of prompts
    can_score: bool = False  # log-probs of given text (a server: where its echo passes the probe)
    topk: bool = False  # the top-k log-probs at given tokens (the teacher-signal cache, `signal: served`)
    max_logprobs: int | None = None  # the largest k of that top-k (None: any k)
    temperature_any: bool = False  # that top-k at any temperature (False: at temperature 1 only)
    echo: bool = False  # scores and top-k come from echoing text through a server, checked by a probe before use
    in_loop: bool = False  # logits in the training loop (a live teacher, a reference model)
    trainable: bool = False  # fine-tuned here
    local: bool = True  # weights on this machine: hashed for cache keys, tokenizer read at config time
    stand_in: str | None = None  # the backend that loads these weights where training or logits in the loop are needed
    prompts_per_call: int | None = None  # prompts per engine call at most (None: the caller's batches)

    def gives_topk(self, k: int, temperature: float) -> bool:
        """Whether the backend itself gives the top-`k` log-probs at `temperature`."""
        return (self.topk and (self.max_logprobs is None or k <= self.max_logprobs)
                and (self.temperature_any or temperature == 1.0))


@dataclass(frozen=True)
class Backend:
    name: str
    capabilities: Capabilities
    load: Callable[..., Any]  # (cfg: ModelConfig, *, checkpoint=None, for_training=False) -> a LanguageModel
    describe: str = ""  # how messages name it: "a vLLM engine"
    release: Callable[[], None] | None = None  # frees what loading held (an engine's GPU memory) before training
    check: Callable[[Any, str], None] | None = None  # config-time rule of its own settings: (ModelConfig, role) -> None


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, caps: Capabilities, load: Callable[..., Any], *, describe: str = "",
                     release: Callable[[], None] | None = None, check: Callable[[Any, str], None] | None = None) -> Backend:
    if name in BACKENDS:
        raise ValueError(f"backend {name!r} is registered twice")
    if caps.stand_in == name:
        raise ValueError(f"backend {name!r}: stand_in must name another backend")
    BACKENDS[name] = Backend(name, caps, load, describe or f"backend {name}", release, check)
    return BACKENDS[name]


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown model backend {name!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def capabilities(name: str) -> Capabilities:
    return get_backend(name).capabilities


def backends_with(capability: str) -> list[str]:
    """The registered backends whose declared `capability` is true (or, through a stand-in, for in_loop and trainable)."""
    return [n for n in BACKENDS if getattr(capabilities(n), capability) or (
        capability in ("in_loop", "trainable") and serving(n, capability) is not None)]


def serving(name: str, capability: str) -> str | None:
    """The backend that loads `name`'s weights where `capability` (in_loop, trainable) is needed: itself, its stand-in, or None."""
    caps = capabilities(name)
    if getattr(caps, capability):
        return name
    if caps.stand_in is not None and getattr(capabilities(caps.stand_in), capability):
        return caps.stand_in
    return None


def topk_source(name: str, k: int, temperature: float, *, served: bool) -> str | None:
    """The backend that gives the top-`k` at `temperature` for `name`'s weights: itself, else (a cache, not served) the
    stand-in that holds them in the loop; None when neither can."""
    if capabilities(name).gives_topk(k, temperature):
        return name
    loop = None if served else serving(name, "in_loop")
    return loop if loop is not None and capabilities(loop).gives_topk(k, temperature) else None


def loaded_as(cfg, *, in_loop: bool = False, for_training: bool = False):
    """`cfg` with the backend that gives what is asked (logits in the loop, training) in its place, where its own does not."""
    for wanted, capability in ((in_loop, "in_loop"), (for_training, "trainable")):
        if wanted:
            other = serving(cfg.backend, capability)
            if other is not None and other != cfg.backend:
                return replace(cfg, backend=other)
    return cfg


def load_model(cfg, **kwargs):
    """The model `cfg` names, loaded by its backend (`for_training`: by the backend that trains those weights)."""
    get_backend(cfg.backend)
    cfg = loaded_as(cfg, for_training=kwargs.get("for_training", False))
    return get_backend(cfg.backend).load(cfg, **kwargs)


def release(name: str) -> None:
    """Free what loading the backend held (vLLM's engine), where it holds anything."""
    hook = get_backend(name).release
    if hook is not None:
        hook()
