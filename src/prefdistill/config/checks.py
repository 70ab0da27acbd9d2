"""Checks of a run config that span fields or layers, and `load_config`, which runs them all.

    cfg = load_config("my.yaml", ["distill.params.beta=0.5"])   # parse (configfile) + check (here)
    cfg, bench = load_bench_config("bench.yaml")

This module sits above `config` (the schema), `methods` (the registry) and `models` (the
tokenizers): the checks that need a registered method's parameters or a tokenizer's chat
template live here, so none of those layers imports another upwards.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from prefdistill.bench.plan import LR, apply_setting, grid, settings
from prefdistill.config.eval_rows import EVAL_ROWS
from prefdistill.config.files import parse_bench_config
from prefdistill.config.schema import STAGES, BenchConfig, OracleConfig, RunConfig, resolved_eval_judge  # noqa: F401
from prefdistill.errors import ConfigError
from prefdistill.judges.negatives import NEGATIVE_KINDS
from prefdistill.methods.registry import family_methods, resolve, validate_method
from prefdistill.models.backends import backends_with, capabilities, get_backend
from prefdistill.models.common import load_tokenizer


def load_config(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (or a dict), apply dotted overrides and check everything, before any model loads."""
    return load_bench_config(source, overrides)[0]


def load_bench_config(source: str | Path | dict | None = None, overrides: list[str] | None = None, *,
                      quick: bool = False) -> tuple[RunConfig, BenchConfig]:
    """A bench file: the run config and its `bench:` section, both checked.

    quick: apply the file's `bench.quick` overrides first (then `overrides`, which win) and
    name the run folder NAME-quick, so the small bench never mixes with the full one.
    """
    cfg, bench = parse_bench_config(source, overrides)
    if quick:
        if not bench.quick:
            raise ConfigError("--quick: this bench config has no bench.quick overrides (a list of dotted overrides that "
                              "make the same bench small, e.g. ['data.max_test=48', 'bench.seeds=[0]'])")
        cfg, bench = parse_bench_config(source, [*bench.quick, *(overrides or []), f"name={cfg.name}-quick"])
    check_run(cfg)
    check_bench(cfg, bench)
    return cfg, bench


def check_run(cfg: RunConfig) -> None:
    """Every rule of a run config that spans fields or layers (field rules: `prefdistill.config.typed.check_fields`)."""
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
    _validate_oracle(cfg, cfg.oracle, "oracle")
    if cfg.judge.kind == "callable" and not cfg.judge.callable:
        raise ConfigError("judge.callable: required when judge.kind is 'callable' (module:function)")
    _validate_eval_judge(cfg)
    validate_method(cfg)


def _validate_oracle(cfg: RunConfig, oracle: OracleConfig, key: str) -> None:
    """An oracle's own settings, and for kind teacher whether the teacher's backend gives log-probs of given text (its
    declared capabilities; a server's echo is probed when it loads, before any step)."""
    if oracle.kind == "api" and not (oracle.api.base_url and oracle.model):
        raise ConfigError(f"{key}.api.base_url and {key}.model: required when {key}.kind is 'api'")
    if oracle.kind != "teacher":
        return
    t, caps = cfg.teacher, capabilities(cfg.teacher.backend)
    why = ("its capabilities: can_score false" if not caps.can_score
           else "teacher.api.logprobs is off" if caps.echo and t.api.logprobs == "off" else None)
    if why:
        raise ConfigError(f"{key}.kind: 'teacher' scores completions by the teacher's log-probabilities of given text, which "
                          f"the teacher on backend {t.backend} cannot give ({why}). Use a local (hf) or vLLM teacher, a "
                          f"server that echoes log-probs (teacher.api.logprobs auto or on), or {key}.kind judge or api "
                          "(a pairwise LLM judge: a chat-model teacher can be that judge)")


def _validate_eval_judge(cfg: RunConfig) -> None:
    e = cfg.eval_judge
    if e.kind == "heldout" and cfg.judge.kind != "trained":
        raise ConfigError(f"eval_judge.kind: 'heldout' is the second reward model of the reward stage, which runs only with "
                          f"judge.kind 'trained' (here {cfg.judge.kind!r}); set eval_judge.kind to hf, callable or same")
    if e.kind == "hf" and not e.name_or_path:
        raise ConfigError("eval_judge.name_or_path: required when eval_judge.kind is 'hf'")
    if e.kind == "callable" and not e.callable:
        raise ConfigError("eval_judge.callable: required when eval_judge.kind is 'callable' (module:function)")
    unknown = [k for k in cfg.reward.negatives if k not in NEGATIVE_KINDS]
    if cfg.judge.kind == "trained" and (unknown or not cfg.reward.negatives):
        raise ConfigError(f"reward.negatives: unknown kind(s) {unknown} or none; choose from {list(NEGATIVE_KINDS)}")


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
        if m.prompt_format != "chat" or not capabilities(m.backend).local or m.gguf_file or not Path(m.name_or_path).expanduser().is_dir():
            continue
        if not getattr(load_tokenizer(m), "chat_template", None):
            raise ConfigError(f"{role}.prompt_format: 'chat', but the tokenizer of {m.name_or_path} has no chat template; "
                              "use 'plain' (or 'auto')")


def _validate_backends(cfg: RunConfig) -> None:
    """What each model's backend can and cannot do (its declared capabilities), said before anything runs."""
    trainable = backends_with("trainable")
    if cfg.student.backend not in trainable:
        raise ConfigError(f"student.backend: the student is trained here, so it must be local ({' or '.join(trainable)}), "
                          f"not {cfg.student.backend}")
    for role in ("teacher", "student"):
        check = get_backend(getattr(cfg, role).backend).check
        if check is not None:
            check(getattr(cfg, role), role)
    t = cfg.teacher
    if cfg.sft.teacher.enabled and t.backend not in trainable:
        where = "behind an API" if not capabilities(t.backend).local else f"on backend {t.backend}"
        raise ConfigError(f"sft.teacher.enabled: a teacher {where} cannot be fine-tuned here; set it to false")


def check_bench(cfg: RunConfig, b: BenchConfig) -> None:
    """Every bench entry names a registered method whose params and needs check out; the sweeps make sense."""
    names = [m.name for m in b.methods]
    for i, m in enumerate(b.methods):
        if not m.name or not m.method:
            raise ConfigError(f"bench.methods[{i}]: name and method are both required")
        if names.count(m.name) > 1:
            raise ConfigError(f"bench.methods[{i}]: name {m.name!r} is used twice")
        _check_grid(cfg, b, i, m)
        if m.oracle is not None:
            _check_entry_oracle(cfg, i, m)
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
    if b.seqkd_entry is not None and b.methods and b.seqkd_entry not in names:
        raise ConfigError(f"bench.seqkd_entry: {b.seqkd_entry!r} is not one of bench.methods ({', '.join(names)}); add a "
                          "SeqKD entry (the budget-matched control) or set it to null")
    steps = cfg.distill.train.steps
    for c in b.checkpoints:
        if c < 1 or (steps is not None and c > steps):
            raise ConfigError(f"bench.checkpoints: {c} is not a step of the distillation run (1..{steps})")


def _check_entry_oracle(cfg: RunConfig, i: int, m) -> None:
    """An entry's own oracle: valid, and asked by its method (else it would only change the job's key)."""
    if "oracle" not in resolve(m.method, m.params, f"bench.methods[{i}].params").needs:
        raise ConfigError(f"bench.methods[{i}].oracle: {m.name} ({m.method}) asks no preference oracle; the win-rate methods "
                          f"do ({', '.join(family_methods('win_rate'))})")
    _validate_oracle(cfg, m.oracle, f"bench.methods[{i}].oracle")


def _check_grid(cfg: RunConfig, b: BenchConfig, i: int, m) -> None:
    """Every grid point of entry i gives valid method params (and a positive lr)."""
    for key, values in grid(m, b).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"bench.methods[{i}] ({m.name}): grid key {key!r} needs a non-empty list of values")
    for point in settings(m, b):
        params, lr = apply_setting(m, point, cfg.distill.train.lr)
        if lr <= 0:
            raise ConfigError(f"bench.methods[{i}] ({m.name}): grid {LR}={lr} must be positive")
        variant = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, method=m.method, params=params))
        try:
            validate_method(variant)
        except ConfigError as e:
            raise ConfigError(f"bench.methods[{i}] ({m.name}){' at grid point ' + str(dict(point)) if point else ''}: {e}") from None
