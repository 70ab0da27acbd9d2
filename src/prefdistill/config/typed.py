"""Typed dataclasses from plain data: documented fields with their rules, one parser, one walker.

    @dataclass
    class TrainConfig:
        lr: float = opt(1e-4, "peak learning rate (linear warm-up, then linear decay to 0)", POSITIVE)

    cfg = from_dict(TrainConfig, {"lr": "5e-5"}, prefix="distill.train")   # types checked, unknown keys refused
    check_fields(cfg, "distill.train")                                      # every field's rule, by dotted key

Run configs (`prefdistill.config.schema`) and methods' parameters (`methods/*.py`) are built and
checked by these same two functions, so a rule lives next to its field, once.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from typing import Any, Callable, Literal, Union

from prefdistill.errors import ConfigError

Rule = tuple[str, Callable[[Any], bool]]  # (what the value must be, the test)
AT_LEAST_1: Rule = ("must be >= 1", lambda v: v >= 1)
NON_NEGATIVE: Rule = ("must be >= 0", lambda v: v >= 0)
POSITIVE: Rule = ("must be > 0", lambda v: v > 0)
SHARE: Rule = ("must lie in [0, 1]", lambda v: 0 <= v <= 1)
OPEN_SHARE: Rule = ("must lie in (0, 1]", lambda v: 0 < v <= 1)
HELD_OUT_SHARE: Rule = ("must lie in [0, 1)", lambda v: 0 <= v < 1)
AT_LEAST_2: Rule = ("must be >= 2", lambda v: v >= 2)


def opt(default: Any, doc: str, rule: Rule | None = None, *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its one-line documentation and, for numbers, the rule its values obey."""
    meta = {"doc": doc, "rule": rule}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def doc_of(cls: type, name: str) -> str:
    return next(f.metadata.get("doc", "") for f in dataclasses.fields(cls) if f.name == name)


# ----------------------------------------------------------------------------- parsing


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
        for option in options:
            if option is type(None):
                continue
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return from_dict(option, value, prefix=key)  # a mapping for a section: its own keys' errors, by name
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
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
    return _coerce_scalar(value, tp, key)


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
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


# ----------------------------------------------------------------------------- the walker


def check_fields(node: Any, prefix: str = "") -> None:
    """Raise ConfigError naming the dotted key of the first value outside its field's rule.

    Walks nested dataclasses and lists; None always passes (it means "default" or "no cap"
    where a field allows it); NaN and inf never do (YAML reads .nan / .inf as floats).
    """
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_fields(item, f"{prefix}[{i}]")
        return
    if not dataclasses.is_dataclass(node):
        return
    for f in dataclasses.fields(node):
        key, value = f"{prefix}.{f.name}" if prefix else f.name, getattr(node, f.name)
        rule = f.metadata.get("rule")
        if rule is not None and value is not None:
            text, ok = rule
            if not math.isfinite(value) or not ok(value):
                raise ConfigError(f"{key}: {text}, got {value!r}")
        check_fields(value, key)
