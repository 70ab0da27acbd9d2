"""A local Hugging Face causal LM as teacher or student: generate, score, train.

    lm = LocalLM.load(ModelConfig(name_or_path="builtin:smollm2-135m-instruct"))
    lm.generate(["Summarize ..."], SamplingConfig(max_new_tokens=32), seed=0)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from prefdistill.progress import bar as progress_bar

from prefdistill.config.schema import LOGITS_CHUNK, ModelConfig, SamplingConfig
from prefdistill.models.assets import load_pretrained, resolve_model_path
from prefdistill.models.backends import Capabilities, register_backend
from prefdistill.models.common import peft_call, plain_prompt
from prefdistill.models.logprobs import (accepts_logits_to_keep, cache_kwarg, completion_logits, completion_logps,
                                         completion_states, completion_token_ids, encode_completions, no_dropout, output_cache,
                                         pack_completions, pack_shared_prompt, sequence_logps, shared_prompt_logps)

CHECKPOINT_META = "prefdistill_checkpoint.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        # Under `accelerate launch` / torchrun each process has its own GPU (LOCAL_RANK).
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_chain(checkpoint: Path) -> tuple[Path | None, list[Path]]:
    """(full-weights folder or None, LoRA adapters oldest first) behind a checkpoint.

    A LoRA checkpoint names its parent (the checkpoint it was trained from, or none for
    the configured base model); a full fine-tune is a complete model folder.
    """
    adapters: list[Path] = []
    node: Path | None = Path(checkpoint)
    while node is not None:
        meta = json.loads((node / CHECKPOINT_META).read_text())
        if meta["kind"] == "full":
            return node, adapters[::-1]
        adapters.append(node)
        node = (node / meta["parent"]).resolve() if meta.get("parent") else None
    return None, adapters[::-1]


def resolve_prompt_format(tokenizer, prompt_format: str, name: str) -> str:
    """'chat' or 'plain': "auto" becomes chat when the tokenizer has a chat template."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "auto":
        return "chat" if has_template else "plain"
    if prompt_format == "chat" and not has_template:
        raise ValueError(f"{name}: prompt_format is 'chat' but the tokenizer has no chat template; use 'plain'")
    return prompt_format


def format_prompt(tokenizer, prompt: str, prompt_format: str) -> str:
    """The text a model sees for `prompt` (every backend on local weights formats through this)."""
    if prompt_format == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return plain_prompt(prompt)


def uses_special_tokens(prompt_format: str) -> bool:
    # Chat templates write their own special tokens; plain prompts get the tokenizer's BOS.
    return prompt_format == "plain"


class LocalLM:
    can_score = True  # as declared in CAPABILITIES
    # Positions whose logits exist at once when scoring (`completion_states`); training sets its train.logits_chunk.
    logits_chunk: int = LOGITS_CHUNK

    def __init__(self, model, tokenizer, *, name: str, prompt_format: str = "auto", max_context: int | None = None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.prompt_format = resolve_prompt_format(tokenizer, prompt_format, name)
        self.max_context = max_context or getattr(model.config, "max_position_embeddings", None) or 2048

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, cfg: ModelConfig, *, checkpoint: str | Path | None = None, for_training: bool = False) -> "LocalLM":
        """Load cfg's base weights, then merge the LoRA adapters of `checkpoint`'s chain."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        full, chain = checkpoint_chain(Path(checkpoint)) if checkpoint else (None, [])
        path = str(full) if full else resolve_model_path(cfg.name_or_path, cfg.gguf_file)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
            model = load_pretrained(AutoModelForCausalLM, path, dtype=DTYPES[cfg.dtype], trust_remote_code=cfg.trust_remote_code)
        except OSError as e:
            raise FileNotFoundError(
                f"could not load model {cfg.name_or_path!r} (resolved to {path!r}): {e}. "
                "Give a local folder, a .gguf file, builtin:NAME, or a hub name reachable from this machine."
            ) from e
        for adapter in chain:
            from peft import PeftModel

            with peft_call():
                model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.to(pick_device(cfg.device))
        model.train(for_training)
        if not for_training:
            model.requires_grad_(False)
        return cls(model, tokenizer, name=cfg.name_or_path, prompt_format=cfg.prompt_format, max_context=cfg.max_context)

    # ------------------------------------------------------------------ prompts
    def format_prompt(self, prompt: str) -> str:
        return format_prompt(self.tokenizer, prompt, self.prompt_format)

    @property
    def add_special_tokens(self) -> bool:
        return uses_special_tokens(self.prompt_format)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The token ids of `prompt` as this model reads it: formatted (chat or plain), then tokenised."""
        return self.tokenizer(self.format_prompt(prompt), add_special_tokens=self.add_special_tokens)["input_ids"]

    # ------------------------------------------------------------------ scoring
    def encode(self, prompts: list[str], completions: list[str] | list[list[int]]) -> dict[str, torch.Tensor]:
        """A left-padded batch of this model's prompts followed by completions (texts or token ids).

        Token-id completions are used as given (no EOS appended): that is how a teacher
        scores exactly the tokens a student sampled, when the two share a vocabulary.
        """
        formatted = [self.format_prompt(p) for p in prompts]
        if completions and not isinstance(completions[0], str):
            prompt_ids = [self.tokenizer(p, add_special_tokens=self.add_special_tokens)["input_ids"] for p in formatted]
            batch = pack_completions(prompt_ids, completions, pad_id=self.tokenizer.pad_token_id)
        else:
            batch = encode_completions(self.tokenizer, formatted, completions, add_special_tokens=self.add_special_tokens)
        lengths = batch["attention_mask"].sum(-1)  # (B,)
        i = int(lengths.argmax()) if len(lengths) else 0
        if len(lengths) and int(lengths[i]) > self.max_context:
            # Past its position range a model fails deep in torch (learned positions) or scores garbage (RoPE).
            raise ValueError(f"{self.name}: prompt + completion {i} of this batch ({prompts[i][:60]!r}...) has {int(lengths[i])} "
                             f"tokens, over the context of {self.max_context}. Lower data.max_prompt_tokens, shorten the "
                             "targets, or lower the sampling max_new_tokens.")
        return batch

    def completion_logits(self, prompts: list[str], completions: list[str] | list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next-token logits (B, C, V) at the completion positions, labels (B, C) and mask (B, C)."""
        batch = self.encode(prompts, completions)
        logits = completion_logits(self.model, batch)
        return logits, batch["labels"].to(logits.device), batch["completion_mask"].to(logits.device)

    def completion_states(self, prompts: list[str], completions: list[str] | list[list[int]], *, vocab: int | None = None,
                          chunk: int | None = None):
        """(side, labels (B, C), mask (B, C)): the completion positions' hidden states and head, or their logits
        (`prefdistill.models.logprobs.completion_states`), `chunk` (default `logits_chunk`) deciding which."""
        batch = self.encode(prompts, completions)
        side = completion_states(self.model, batch, chunk=self.logits_chunk if chunk is None else chunk, vocab=vocab)
        return side, batch["labels"].to(side[0].device), batch["completion_mask"].to(side[0].device)

    def teacher_states(self, prompts: list[str], completions: list[list[int]], *, vocab: int | None, chunk: int):
        """`completion_states` as a teacher gives them: no autograd graph, no dropout, whatever mode the model is in."""
        with torch.no_grad(), no_dropout(self.model):
            return self.completion_states(prompts, completions, vocab=vocab, chunk=chunk)

    def completion_logps(self, prompts: list[str], completions: list[str] | list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs (B, C) of completions and their mask (B, C); differentiable; `logits_chunk` positions at a time."""
        batch = self.encode(prompts, completions)
        per_token = completion_logps(self.model, batch, chunk=self.logits_chunk)
        return per_token, batch["completion_mask"].to(per_token.device)

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str], *, normalize: bool = False, batch_size: int = 8) -> list[float]:
        out: list[float] = []
        for i in range(0, len(prompts), batch_size):
            per_token, mask = self.completion_logps(prompts[i:i + batch_size], completions[i:i + batch_size])
            out.extend(sequence_logps(per_token, mask, normalize=normalize).tolist())
        return out

    @torch.no_grad()
    def score_groups(self, prompts: list[str], groups: list[list[str]], *, normalize: bool = False,
                     batch_size: int = 8) -> list[list[float]]:
        """`score` of each prompt's group of completions, the prompt run once for its whole group.

        The prompt's key/value cache is shared by its completions (`shared_prompt_logps`), so a
        group of n completions of C tokens after a prompt of P costs about P + n·C positions, not
        n·(P + C). The same numbers as `score` to float tolerance.
        """
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out: list[list[float]] = []
        for prompt, group in zip(prompts, groups, strict=True):
            scores: list[float] = []
            for i in range(0, len(group), batch_size):
                part = completion_token_ids(self.tokenizer, group[i:i + batch_size])
                batch = pack_shared_prompt([self.prompt_ids(prompt)], part, pad_id=pad_id, n_per_prompt=len(part))
                per_token = shared_prompt_logps(self.model, batch, chunk=self.logits_chunk)
                scores += sequence_logps(per_token, batch["completion_mask"].to(per_token.device), normalize=normalize).tolist()
            out.append(scores)
        return out

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, prompts: list[str], sampling: SamplingConfig, *, seed: int, desc: str | None = None,
                 on_result=None) -> list[list[str]]:
        """`sampling.num_samples` completions per prompt, batched by prompt length.

        `on_result(i, completions)` is called for each prompt as soon as its batch is
        done, so a caller can store finished prompts before the whole call returns.
        """
        was_training = self.model.training
        self.model.eval()
        encoded = [self.prompt_ids(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if len(ids) + sampling.max_new_tokens > self.max_context:
                raise ValueError(
                    f"{self.name}: prompt {i} has {len(ids)} tokens; with max_new_tokens={sampling.max_new_tokens} it exceeds "
                    f"the context of {self.max_context}. Lower data.max_prompt_tokens or the sampling max_new_tokens."
                )
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        results: list[list[str]] = [[] for _ in prompts]
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        bar = progress_bar(total=len(prompts), desc=desc or f"generate {Path(self.name).name}", unit="prompt", disable=desc == "")
        for start in range(0, len(order), sampling.batch_size):
            idx = order[start:start + sampling.batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, i in enumerate(idx):  # left padding: generation continues at the right edge
                input_ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                attention_mask[row, width - len(encoded[i]):] = 1
            torch.manual_seed(seed * 1_000_003 + start)  # reproducible whatever else ran before
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad_id)
            if sampling.do_sample:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            out = self._generate_batch(input_ids.to(device), attention_mask.to(device), sampling.num_samples, **kwargs)
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for row, i in enumerate(idx):
                results[i] = [t.strip() for t in texts[row * sampling.num_samples:(row + 1) * sampling.num_samples]]
                if on_result is not None:
                    on_result(i, results[i])
            bar.update(len(idx))
        bar.close()
        self.model.train(was_training)
        return results

    def _generate_batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int, **kwargs) -> torch.Tensor:
        """HF `generate` with n sampled completions per left-padded row (B, T) -> (B * n, T + new).

        generate(num_return_sequences=n) copies every prompt n times before the prefill; with
        ~190-token prompts, n=4 and 48 new tokens that was ~40% of the CPU time (34.7 s -> 21.3 s
        in benchmarks/generation_throughput.py). Here all but the last prompt token go
        through the model once and their KV cache is repeated n times, so generate only
        processes the last token: same positions, same masks, same sampled tokens.
        """
        plain = n == 1 or not kwargs.get("do_sample") or input_ids.shape[1] < 2 or not attention_mask[:, :-1].any(-1).all()
        if plain:  # nothing to share, or a row whose prefix would be all padding
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, num_return_sequences=n, **kwargs)
        positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # as generate numbers left-padded rows
        head = {"logits_to_keep": 1} if accepts_logits_to_keep(self.model) else {}
        cache = output_cache(self.model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                                        position_ids=positions[:, :-1], use_cache=True, **head))
        cache.batch_repeat_interleave(n)
        return self.model.generate(input_ids=input_ids.repeat_interleave(n, 0), attention_mask=attention_mask.repeat_interleave(n, 0),
                                   **{cache_kwarg(self.model): cache}, **kwargs)


# Logits of any text at any temperature, so top-k of any size; trains here.
CAPABILITIES = Capabilities(generate=True, can_score=True, topk=True, temperature_any=True, in_loop=True, trainable=True)
register_backend("hf", CAPABILITIES, LocalLM.load, describe="local transformers weights")
