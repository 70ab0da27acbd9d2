"""A teacher or student served by a vLLM engine: LocalLM's `generate` and `score`, on GPUs.

    lm = VLLMLM.load(ModelConfig(name_or_path="builtin:smollm2-135m-instruct", backend="vllm", dtype="bfloat16"))
    lm.generate(["Summarize ..."], SamplingConfig(max_new_tokens=32, num_samples=4), seed=0)  # [[4 texts]]
    lm.score(["Summarize ..."], ["A short summary."], normalize=True)                          # [mean token logp]
    lm.completion_topk(["Summarize ..."], [completion_ids], 20, tokenizer=tok, temperature=1.0)  # [(ids, logps) (n, 20)]

Prompts are formatted and tokenised by the functions LocalLM uses and reach vLLM as token
ids, so both backends see the same tokens. `score` reads vLLM's prompt log-probs of
prompt + completion + EOS: the tokens `logprobs.encode_completions` scores for LocalLM, and
`completion_topk` reads the top k of them (prompt_logprobs=k) for the teacher-signal cache.
Training stays on transformers; a LoRA checkpoint is merged once into
CHECKPOINT/merged_for_vllm/ so the engine loads a plain folder.
Needs `pip install 'prefdistill[vllm]'` and a CUDA GPU; the pure helpers run anywhere.
"""
from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from prefdistill.config.schema import ModelConfig, SamplingConfig
from prefdistill.io import atomic_dir
from prefdistill.models.assets import resolve_model_path
from prefdistill.models.backends import Capabilities, register_backend
from prefdistill.models.common import topk_arrays
from prefdistill.models.hf import checkpoint_chain, format_prompt, resolve_prompt_format, uses_special_tokens
from prefdistill.models.logprobs import completion_token_ids

MERGED_DIR = "merged_for_vllm"
INSTALL_HINT = "pip install 'prefdistill[vllm]' (needs a CUDA GPU)"
HF_DEFAULT_TOP_K = 50  # transformers' GenerationConfig.top_k, applied by LocalLM's sampling
PROMPTS_PER_CALL = 1024  # prompts per engine call: on_result reports work before a long call ends
# One scoring request per sequence: prompt log-probs are taken from the raw next-token
# distribution (temperature 1, no top-p); the single generated token is thrown away.
VLLM_MAX_LOGPROBS = 20  # vLLM's default engine max_logprobs: the largest prompt_logprobs a request may ask for
SCORE_KWARGS = dict(max_tokens=1, temperature=1.0, top_p=1.0, prompt_logprobs=1, detokenize=False)


# ---------------------------------------------------------------- pure helpers (CPU-tested)
def request_seed(seed: int, index: int) -> int:
    """Seed of prompt `index`'s request. One seed broadcast to a batch would give every prompt the same noise."""
    return seed * 1_000_003 + index


def sampling_kwargs(sampling: SamplingConfig, *, seed: int, top_k: int = HF_DEFAULT_TOP_K) -> dict:
    """vllm.SamplingParams arguments for one prompt's `sampling.num_samples` completions.

    Greedy decoding asks for one completion (vLLM refuses n > 1 without sampling);
    `completion_texts` repeats it num_samples times.
    """
    if not sampling.do_sample:
        return dict(n=1, temperature=0.0, max_tokens=sampling.max_new_tokens, seed=seed)
    return dict(n=sampling.num_samples, temperature=sampling.temperature, top_p=sampling.top_p,
                top_k=top_k if top_k and top_k > 0 else -1, max_tokens=sampling.max_new_tokens, seed=seed)


def completion_texts(request_output, sampling: SamplingConfig) -> list[str]:
    """The stripped completions of one vllm.RequestOutput, num_samples of them (as LocalLM returns)."""
    texts = [c.text.strip() for c in request_output.outputs]
    return texts if sampling.do_sample else texts[:1] * sampling.num_samples


def summed_logprob(prompt_logprobs, token_ids: list[int], start: int, *, normalize: bool) -> float:
    """Σ_{t >= start} log p(token_ids[t] | token_ids[:t]) from vLLM's `RequestOutput.prompt_logprobs`.

    prompt_logprobs[t] is None at t = 0, else a {token id: Logprob (or float)} holding
    token_ids[t]. `normalize` divides by the len(token_ids) - start scored tokens; none
    scored gives 0.0, as `logprobs.sequence_logps` does.
    """
    if len(prompt_logprobs) != len(token_ids):
        raise ValueError(f"{len(prompt_logprobs)} prompt log-probs for {len(token_ids)} tokens")
    if start < 1 and token_ids:
        raise ValueError("the first token has no log-prob: a completion must follow a non-empty prompt")
    total = 0.0
    for t in range(start, len(token_ids)):
        entry = prompt_logprobs[t][token_ids[t]]
        total += float(getattr(entry, "logprob", entry))
    count = len(token_ids) - start
    return total / max(count, 1) if normalize else total


def engine_kwargs(cfg: ModelConfig, path: str) -> dict:
    """vllm.LLM arguments for the weights in `path` under cfg's vllm section.

    Prefix caching is off: prompt log-probs with it crash (vLLM V0), are refused (early V1)
    or may read stale values (vllm-project/vllm issues #8268, #13409, #42019).
    """
    return dict(model=path, tokenizer=path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                gpu_memory_utilization=cfg.vllm.gpu_memory_utilization, tensor_parallel_size=cfg.vllm.tensor_parallel_size,
                max_model_len=cfg.vllm.max_model_len or cfg.max_context, enforce_eager=cfg.vllm.enforce_eager,
                enable_prefix_caching=False)


# ---------------------------------------------------------------- weights and engine
def weights_folder(cfg: ModelConfig, checkpoint: str | Path | None = None) -> str:
    """A plain model folder for vLLM: the base weights, a full fine-tune, or the merged LoRA chain.

    The merge runs once on CPU through LocalLM.load and is kept in CHECKPOINT/merged_for_vllm/
    (written atomically, so a folder that exists is complete).
    """
    if checkpoint is None:
        return resolve_model_path(cfg.name_or_path, cfg.gguf_file)
    full, chain = checkpoint_chain(Path(checkpoint))
    if not chain:
        return str(full)
    merged = Path(checkpoint) / MERGED_DIR
    if not merged.is_dir():
        from prefdistill.models.hf import LocalLM

        lm = LocalLM.load(replace(cfg, device="cpu"), checkpoint=checkpoint)
        with atomic_dir(merged) as tmp:
            lm.model.save_pretrained(tmp)
            lm.tokenizer.save_pretrained(tmp)
    return str(merged)


def generation_top_k(path: str) -> int:
    """The top_k transformers samples with for the model in `path` (its generation_config, else 50)."""
    from transformers import GenerationConfig

    try:
        top_k = GenerationConfig.from_pretrained(path).top_k
    except OSError:  # no generation_config.json
        top_k = None
    if top_k is None:  # unset: transformers samples with its default (GenerationConfig, 4.x and 5.x)
        return HF_DEFAULT_TOP_K
    return top_k if top_k > 0 else -1


def require_vllm():
    """The vllm module, or a clear error when it is missing or no CUDA GPU is visible."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"backend: vllm needs the vllm package: {INSTALL_HINT}") from e
    if not torch.cuda.is_available():
        raise RuntimeError("backend: vllm needs a CUDA GPU and none is visible; use backend: hf on this machine")
    return vllm


# A process keeps one engine: vLLM reserves gpu_memory_utilization of the GPU up front, so a
# second engine for the same weights would not fit. Loading the same weights again reuses it.
_ENGINE: dict[str, object] = {}


def release_engine() -> None:
    """Drop the cached engine and return what GPU memory PyTorch can (e.g. before training)."""
    _ENGINE.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _engine(vllm, kwargs: dict):
    key = repr(sorted(kwargs.items()))
    if key not in _ENGINE:
        release_engine()
        _ENGINE[key] = vllm.LLM(**kwargs)
    return _ENGINE[key]


class VLLMLM:
    can_score = True  # as declared in CAPABILITIES

    def __init__(self, llm, tokenizer, *, name: str, prompt_format: str = "auto", max_context: int | None = None,
                 top_k: int = HF_DEFAULT_TOP_K):
        self.llm, self.tokenizer, self.name, self.top_k = llm, tokenizer, name, top_k
        self.prompt_format = resolve_prompt_format(tokenizer, prompt_format, name)
        self.max_context = max_context

    @classmethod
    def load(cls, cfg: ModelConfig, *, checkpoint: str | Path | None = None) -> "VLLMLM":
        """An engine on cfg's weights, or on `checkpoint` (LoRA chains merged once, see weights_folder)."""
        vllm = require_vllm()
        from transformers import AutoTokenizer

        path = weights_folder(cfg, checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        kwargs = engine_kwargs(cfg, path)
        llm = _engine(vllm, kwargs)
        model_config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        max_context = kwargs["max_model_len"] or getattr(model_config, "max_model_len", None)
        return cls(llm, tokenizer, name=cfg.name_or_path, prompt_format=cfg.prompt_format, max_context=max_context,
                   top_k=generation_top_k(path))

    def format_prompt(self, prompt: str) -> str:
        return format_prompt(self.tokenizer, prompt, self.prompt_format)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The token ids of `prompt` as this model reads it: formatted (chat or plain), then tokenised."""
        return self.tokenizer(self.format_prompt(prompt), add_special_tokens=uses_special_tokens(self.prompt_format))["input_ids"]

    def generate(self, prompts: list[str], sampling: SamplingConfig, *, seed: int, desc: str | None = None,
                 on_result=None) -> list[list[str]]:
        """`sampling.num_samples` completions per prompt; on_result(i, completions) as each chunk finishes."""
        from vllm import SamplingParams

        encoded = [self.prompt_ids(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if self.max_context and len(ids) + sampling.max_new_tokens > self.max_context:
                raise ValueError(
                    f"{self.name}: prompt {i} has {len(ids)} tokens; with max_new_tokens={sampling.max_new_tokens} it exceeds "
                    f"the context of {self.max_context}. Lower data.max_prompt_tokens or the sampling max_new_tokens."
                )
        results: list[list[str]] = []
        for start in range(0, len(prompts), PROMPTS_PER_CALL):
            idx = range(start, min(start + PROMPTS_PER_CALL, len(prompts)))
            params = [SamplingParams(**sampling_kwargs(sampling, seed=request_seed(seed, i), top_k=self.top_k)) for i in idx]
            outputs = self.llm.generate([{"prompt_token_ids": encoded[i]} for i in idx], params, use_tqdm=desc != "")
            for i, out in zip(idx, outputs):  # vLLM returns outputs in request order
                results.append(completion_texts(out, sampling))
                if on_result is not None:
                    on_result(i, results[i])
        return results

    def completion_logits(self, *args, **kwargs):
        raise TypeError(f"{self.name}: a vLLM model gives no differentiable logits; methods that need teacher logits "
                        "(or a reference model) during training need backend: hf for that model")

    completion_logps = completion_logits

    def score(self, prompts: list[str], completions: list[str], *, normalize: bool = False) -> list[float]:
        """log p(completion + EOS | prompt) per pair, summed (or averaged when `normalize`) over its tokens."""
        from vllm import SamplingParams

        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        prompt_ids = [self.prompt_ids(p) for p in prompts]
        sequences = [p + c for p, c in zip(prompt_ids, completion_token_ids(self.tokenizer, completions))]
        outputs = self.llm.generate([{"prompt_token_ids": s} for s in sequences], SamplingParams(**SCORE_KWARGS), use_tqdm=False)
        return [summed_logprob(out.prompt_logprobs, s, len(p), normalize=normalize)
                for out, s, p in zip(outputs, sequences, prompt_ids)]

    def completion_topk(self, prompts: list[str], completions: list[list[int]], k: int, *, tokenizer,
                        temperature: float = 1.0, token_logps: bool = False) -> list:
        """The top-k at each completion token, per row ids (n, k) and log-probs (n, k), from vLLM's prompt log-probs
        (and, with `token_logps`, each token's own log-prob (n,)).

        Each row is prompt (formatted as `prompt_ids`) + the completion's token ids, as LocalLM
        scores them. vLLM's prompt_logprobs[t] is {token id: Logprob} for the distribution that
        produced token t: its k best, plus token t itself when that is not among them (then k + 1
        entries; `topk_arrays` keeps the k best, and token t's own entry is its `token_logps`). Ids
        past len(tokenizer) (a padded output layer) are dropped. vLLM returns raw, untempered
        log-probs, so a temperature other than 1 is refused; k is bounded by the engine's
        `max_logprobs` (VLLM_MAX_LOGPROBS by default).
        """
        from vllm import SamplingParams

        if temperature != 1.0:
            raise ValueError(f"{self.name}: vLLM's prompt log-probs are the model's distribution at temperature 1; "
                             f"temperature {temperature:g} needs the teacher through transformers (backend: hf)")
        prompt_ids = [self.prompt_ids(p) for p in prompts]
        sequences = [p + list(c) for p, c in zip(prompt_ids, completions)]
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=k, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=False)
        rows = []
        for out, p, c in zip(outputs, prompt_ids, completions):
            entries = out.prompt_logprobs[len(p):]
            row = topk_arrays(entries, k, len(tokenizer))
            if token_logps:
                own = [float(getattr(e[t], "logprob", e[t])) for e, t in zip(entries, c)]
                row = (*row, np.array(own, dtype=np.float32))
            rows.append(row)
        return rows


def load(cfg: ModelConfig, *, checkpoint: str | Path | None = None, for_training: bool = False) -> VLLMLM:
    """The registered loader; training never reaches it (the weights train through the stand-in, hf)."""
    if for_training:
        raise ValueError(f"{cfg.name_or_path}: a vLLM engine does not train; load the weights with backend: hf")
    return VLLMLM.load(cfg, checkpoint=checkpoint)


# Prompt log-probs at temperature 1, at most max_logprobs per position; logits in the loop and training: through hf.
CAPABILITIES = Capabilities(generate=True, can_score=True, topk=True, max_logprobs=VLLM_MAX_LOGPROBS, temperature_any=False,
                            in_loop=False, trainable=False, stand_in="hf", prompts_per_call=PROMPTS_PER_CALL)
register_backend("vllm", CAPABILITIES, load, describe="a vLLM engine", release=release_engine)
