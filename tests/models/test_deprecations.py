"""Our calls into transformers, peft and accelerate raise none of their deprecation warnings.

    pytest tests/models/test_deprecations.py

A deprecated argument works until the release that removes it, then breaks every run;
this suite turns the warning of the release before into a failure now. It runs the
paths the pipeline takes on the tiny models: loading, generate (plain and with a shared
prompt cache), rollout, completion log-probs, shared-prompt log-probs, LoRA wrapping,
two training steps, saving and reloading the adapter.
"""
import logging
import os
import re
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from prefdistill.config.schema import LoraConfig, ModelConfig, SamplingConfig, TrainConfig
from prefdistill.methods import get_method
from prefdistill.methods.common import pair_logps
from prefdistill.models.hf import LocalLM
from prefdistill.models.rollout import rollout
from prefdistill.training.loop import train

LIBRARIES = ("transformers", "peft", "accelerate")
CATEGORIES = (DeprecationWarning, FutureWarning, PendingDeprecationWarning)
# (message pattern, library that warns, library whose call makes it warn). Only a warning that one
# library raises because of another library's call, which no argument of ours changes, belongs here.
ALLOWED: list[tuple[str, str, str]] = []
# peft 0.21 (the newest) reads `model.is_gradient_checkpointing`, deprecated by transformers 5.24, inside
# get_peft_model and PeftModel.from_pretrained: prefdistill.models.common.peft_call hides exactly that
# message around our two peft calls, so it is not allowed here: a peft call of ours outside peft_call fails.
PROMPTS = ["Summarize : the model learns data", "Summarize : we propose a small teacher method better"]


def _library(filename: str) -> str | None:
    parts = os.path.normpath(filename).split(os.sep)
    return next((lib for lib in LIBRARIES if lib in parts[:-1]), None)


@dataclass
class Caught:
    category: type
    message: str
    filename: str
    stack: list  # traceback.FrameSummary, outermost first, ending at the frame that called warnings.warn

    @property
    def origin(self) -> str | None:
        """The library whose code raised the warning (the frame that called warnings.warn)."""
        return _library(self.stack[-1].filename) if self.stack else None

    @property
    def trigger(self) -> str:
        """Whose call made that library warn: the first caller outside it that is not torch's module machinery."""
        for frame in reversed(self.stack):
            lib = _library(frame.filename)
            if lib != self.origin and f"{os.sep}torch{os.sep}" not in frame.filename:
                return lib or frame.filename
        return "?"

    def from_libraries(self) -> bool:
        """A deprecation raised by a library, or by anything our own code called (FutureWarning included)."""
        ours = any(f"{os.sep}prefdistill{os.sep}" in f.filename for f in self.stack)
        return issubclass(self.category, CATEGORIES) and (
            self.origin is not None or _library(self.filename) is not None or ours
            or re.search(rf"\b({'|'.join(LIBRARIES)})\b", self.message) is not None)

    def allowed(self) -> bool:
        return any(re.search(pattern, self.message) and self.origin == origin and self.trigger == trigger
                   for pattern, origin, trigger in ALLOWED)

    def __str__(self) -> str:
        where = "".join(traceback.format_list(self.stack[-6:]))
        return f"{self.category.__name__}: {self.message}\n  raised in {self.origin}, called from {self.trigger}\n{where}"


@contextmanager
def recorded():
    """Every warning raised inside, with the stack that raised it, and transformers' logged deprecation notices.

    Like catch_warnings(record=True) with simplefilter("always"), except that the recorder
    also keeps the stack: the filename alone does not say who called (transformers' keyword
    deprecations point at torch's Module.__call__).
    """
    import transformers

    caught: list[Caught] = []

    def stack(machinery: str) -> list:  # the caller's stack, without the warnings / logging frames in between
        return [f for f in traceback.extract_stack()[:-2] if machinery not in f.filename]

    def show(message, category, filename, lineno, file=None, line=None):
        caught.append(Caught(category, str(message), filename, stack(f"{os.sep}warnings.py")))

    class Notices(logging.Handler):  # transformers logs some deprecations instead of warning (output.past_key_values)
        def emit(self, record):
            if "deprecat" in record.getMessage().lower():
                caught.append(Caught(FutureWarning, record.getMessage(), record.pathname, stack(f"{os.sep}logging{os.sep}__init__.py")))

    handler, verbosity = Notices(), transformers.logging.get_verbosity()
    logging.Logger.warning_once.cache_clear()  # notices are logged once per process: let this block see them again
    transformers.logging.set_verbosity_warning()
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show  # restored by catch_warnings on exit
            yield caught
    finally:
        logging.getLogger("transformers").removeHandler(handler)
        transformers.logging.set_verbosity(verbosity)


def assert_no_library_deprecations(caught: list[Caught]) -> None:
    bad = [c for c in caught if c.from_libraries() and not c.allowed()]
    assert not bad, "deprecation warnings from our calls:\n\n" + "\n\n".join(map(str, bad))


def test_load_generate_and_score(tiny_assets):
    with recorded() as caught:
        teacher = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
        student = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
        for lm in (teacher, student):
            for n in (1, 3):  # n > 1 samples from one prefilled prompt cache (LocalLM._generate_batch)
                lm.generate(PROMPTS, SamplingConfig(max_new_tokens=4, num_samples=n, temperature=1.0), seed=0, desc="")
            lm.generate(PROMPTS, SamplingConfig(max_new_tokens=4, do_sample=False), seed=0, desc="")
            lm.score(PROMPTS, ["the model", "a short summary"], normalize=True)
            lm.completion_logps(PROMPTS, ["the model", "results"])
        out = rollout(student, PROMPTS, max_new_tokens=4, mix=teacher, mix_weight=0.5)
        teacher.completion_logps(PROMPTS, out.completions)  # the sampled ids, scored by another model
        pair_logps(student, PROMPTS, ["the model", "results"], ["data data", "the teacher"])  # shared-prompt log-probs
    assert_no_library_deprecations(caught)


@pytest.mark.parametrize("name, params", [("dpkd", {}), ("gkd", {"on_policy_fraction": 1.0, "max_new_tokens": 4})])
def test_lora_training_save_and_reload(name, params, tiny_assets, tmp_path):
    """Two LoRA steps of a pair method (shared-prompt log-probs through PEFT) and an on-policy one (rollout through PEFT)."""
    from prefdistill.config.schema import from_dict

    spec = get_method(name)
    rows = [{"id": f"p{i}", "prompt": PROMPTS[i % 2], "chosen": "the model learns", "rejected": "data data",
             "teacher_chosen_logp": -4.0, "teacher_rejected_logp": -2.0} for i in range(4)]
    with recorded() as caught:
        lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
        extras = {"teacher": LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))} if "teacher" in spec.needs else {}
        train(lm, spec, from_dict(spec.params_cls, params), rows, TrainConfig(steps=2, batch_size=2, lr=1e-3, save_every=100),
              LoraConfig(enabled=True, dropout=0.1), out_dir=tmp_path / "ckpt", parent=None, seed=0, desc=name, extras=extras)
        reloaded = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), checkpoint=tmp_path / "ckpt")
        reloaded.generate(PROMPTS, SamplingConfig(max_new_tokens=4, num_samples=2), seed=0, desc="")
    assert_no_library_deprecations(caught)


def test_the_recorder_sees_a_deprecated_call_of_ours(tiny_assets):
    """The check itself: the old keyword, passed by us, is caught and blamed on this file."""
    import torch

    from prefdistill.models.logprobs import cache_kwarg

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    if cache_kwarg(lm.model) == "past_key_values":
        pytest.skip("this transformers has no `cache` keyword yet: `past_key_values` is not deprecated")
    ids = torch.tensor([lm.prompt_ids(PROMPTS[0])])
    with recorded() as caught:
        out = lm.model(input_ids=ids, past_key_values=None, use_cache=True)
        out.past_key_values  # noqa: B018  (the old output field: a logged notice)
    bad = [c for c in caught if c.from_libraries() and not c.allowed()]
    assert any(c.message.startswith("`past_key_values` is deprecated") and c.trigger == __file__ for c in bad)  # the keyword
    assert any(c.message.startswith("`past_key_values`/`cache_params` are") and c.trigger == __file__ for c in bad)  # the field (logged)


def test_the_demo_path_raises_no_deprecation(tmp_path):
    """`prefdistill demo --tiny`: every stage (judges, SFT with LoRA, pairs, distillation, adapter reloads, eval).

    Before peft_call, this printed transformers' FutureWarning about `is_gradient_checkpointing` at every LoRA wrap
    and adapter load (peft's read, made by our get_peft_model / PeftModel.from_pretrained calls).
    """
    from prefdistill.cli import main

    with recorded() as caught:
        assert main(["demo", "--tiny", "--output-dir", str(tmp_path)]) == 0
    assert_no_library_deprecations(caught)


def test_peft_call_hides_only_peft_s_read():
    from prefdistill.models.common import peft_call

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with peft_call():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
            warnings.warn("`other_argument` is deprecated", FutureWarning)
            warnings.warn("`is_gradient_checkpointing` is deprecated", DeprecationWarning)
    assert [(w.category, str(w.message)) for w in seen] == [(FutureWarning, "`other_argument` is deprecated"),
                                                            (DeprecationWarning, "`is_gradient_checkpointing` is deprecated")]
