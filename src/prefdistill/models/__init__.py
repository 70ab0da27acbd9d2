"""Teachers and students behind one small interface.

    lm = load_model(cfg.student)                    # a backend from BACKENDS (prefdistill.models.backends)
    texts = lm.generate(["Summarize ..."], SamplingConfig(), seed=0)   # [[completion, ...]]
    logps = lm.score(prompts, completions, normalize=True)             # when lm.can_score

A backend is anything with `name`, `can_score`, `generate` and (when it can) `score`, registered
with what it can do (`capabilities(name)`: score, top-k, echo, logits in the loop, training); it
need not be a local torch module, so a text-only API teacher fits the same slot. The vllm
and openai backends also give a teacher's top-k at given tokens themselves (`completion_topk`,
`common.TopkTeacher`) for the teacher-signal cache:

    hf       local transformers weights: train, generate, score (the default; CPU or GPU)
    vllm     the same weights in a vLLM engine for sampling and scoring (GPU; training stays on hf)
    openai   any OpenAI-compatible server (text; log-probs where the server gives them)

`generate` may return a `GenerationFailure` in place of a prompt's completions (a
server that kept failing); `on_result(i, completions_or_failure)` reports each prompt as
it finishes, so callers can store finished work before a long call returns.
"""
from __future__ import annotations

from prefdistill.models.common import (LanguageModel, load_tokenizer, plain_prompt, tokenizer_mismatch,  # noqa: F401 (the interface)
                                       vocabulary_mismatch)

# One import line per backend module: each registers its class, loader and capabilities (prefdistill.models.backends).
from prefdistill.models import hf as _hf  # noqa: E402,F401
from prefdistill.models import vllm_backend as _vllm  # noqa: E402,F401
from prefdistill.models import api as _api  # noqa: E402,F401
from prefdistill.models.backends import BACKENDS, Capabilities, capabilities, load_model  # noqa: E402,F401
