"""Reading a run config: YAML (or a dict), `base:` files, dotted overrides -> typed dataclasses.

    cfg = parse_config("my.yaml", ["distill.train.lr=5e-5"])      # types and field rules only
    cfg, bench = parse_bench_config("bench.yaml")                   # the `bench:` section apart

Checks that span fields, or need the method registry or a tokenizer, come after this, in
`prefdistill.config.checks.load_config`, which is what callers use.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from prefdistill.config.schema import BenchConfig, RunConfig
from prefdistill.config.typed import check_fields, from_dict
from prefdistill.errors import ConfigError

BENCH_SECTION = "bench"  # a bench file is a run config plus this section, read apart


def parse_override(text: str) -> tuple[list[str], object]:
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


def read_raw(source: str | Path | dict | None, overrides: list[str] | None = None) -> dict:
    """The config as a plain dict: the file (with its `base:` chain merged in) and the overrides applied."""
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
    return apply_overrides(data, list(overrides or []))


def parse_config(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A RunConfig with every type and field rule checked (a bench file's `bench:` section is checked, then set aside)."""
    return parse_bench_config(source, overrides)[0]


def parse_bench_config(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> tuple[RunConfig, BenchConfig]:
    """(the run config, the bench section), each with its types and field rules checked."""
    data = read_raw(source, overrides)
    bench = from_dict(BenchConfig, data.pop(BENCH_SECTION, None), prefix=BENCH_SECTION)
    cfg = from_dict(RunConfig, data)
    check_fields(cfg)
    check_fields(bench, BENCH_SECTION)
    return cfg, bench


def _with_base(data: dict, folder: Path, seen: tuple[str, ...] = ()) -> dict:
    """Resolve `base: OTHER` (a YAML path relative to this file, or a packaged config name):
    this file's keys are merged over OTHER's, mappings key by key, anything else replaced."""
    base = data.pop("base", None)
    if base is None:
        return data
    path = folder / base
    if not path.is_file():
        packaged = Path(__file__).parents[1] / "configs" / f"{base}.yaml"
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
