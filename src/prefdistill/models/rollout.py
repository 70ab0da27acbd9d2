"""Training-time sampling from the student, optionally mixed with the teacher, as token ids.

    out = rollout(student, prompts, max_new_tokens=48)                            # y ~ q_θ
    out = rollout(student, prompts, max_new_tokens=48, mix=teacher, mix_weight=0.2)
    # y_t ~ p̃ = 0.2·p + 0.8·q_θ (MiniLLM's teacher-mixed sampling); out.importance holds
    # the per-token weights q_θ(y_t) / p̃(y_t) that correct the gradient for the mixing.
    out = rollout(student, prompts, max_new_tokens=48, n=4)                       # 4 samples per prompt, one prefill each

On-policy methods (GKD, MiniLLM, f-distill) sample inside the training loop and then
score exactly the sampled tokens under student and teacher, so the result is token ids,
never re-tokenised text. Each model formats the prompt its own way (chat or plain); the
completion tokens are shared, which is why these methods need one vocabulary.

    out = canonical(out, student.tokenizer)    # with a served teacher: each sample's text, tokenised as the tokenizer does

A served teacher (`signal: served`) receives the text and tokenises it itself, so a sampled
split that is not the tokenizer's own ("t" "h" "e" for "the") would not line up with it: the
methods re-tokenise the sample first and train on those ids, which both sides then see.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from prefdistill.losses.divergences import log_mixture
from prefdistill.models.logprobs import accepts_logits_to_keep, cache_kwarg, output_cache


@dataclass
class Rollout:
    completions: list[list[int]]  # sampled token ids per prompt, ending with EOS when it was sampled
    importance: list[list[float]]  # q_θ(y_t) / p̃(y_t) per token; all 1.0 without mixing

    @property
    def n_tokens(self) -> int:
        return sum(len(c) for c in self.completions)


class _Clock:
    """Wall seconds spent inside `rollout` by this process, summed over calls (the training loop logs each step's share)."""
    seconds = 0.0


def sampling_seconds() -> float:
    """Seconds this process has spent sampling in `rollout` so far: read it before and after a step, take the difference."""
    return _Clock.seconds


class _Stream:
    """One model decoding a left-padded batch with its KV cache, each prompt's prefill shared by its n rows.

    The prefill keeps one logit row per prompt (`logits_to_keep=1`, as HF `generate` does): the
    vocabulary head over every prompt position was most of the prefill's extra cost. Everything
    stays on the model's device.
    """

    def __init__(self, lm, prompts: list[str], n: int):
        self.model, self.n = lm.model, n
        ids = [lm.prompt_ids(p) for p in prompts]
        width = max(len(x) for x in ids)
        pad = lm.tokenizer.pad_token_id
        self.device = next(self.model.parameters()).device
        self.input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)  # (B, P)
        self.attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)  # (B, P)
        self.position_ids = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
        self.keep = {"logits_to_keep": 1} if accepts_logits_to_keep(self.model) else {}
        self.cache = None

    def logits(self) -> torch.Tensor:
        """Next-token logits (B·n, V) after the tokens fed so far."""
        out = self.model(input_ids=self.input_ids, attention_mask=self.attention_mask, position_ids=self.position_ids,
                         use_cache=True, **{cache_kwarg(self.model): self.cache}, **self.keep)
        logits = out.logits[:, -1].float()  # (rows, V)
        prefill, self.cache = self.cache is None, output_cache(out)
        if prefill and self.n > 1:  # each prompt's cache serves its n samples
            self.cache.batch_repeat_interleave(self.n)
            self.attention_mask = self.attention_mask.repeat_interleave(self.n, 0)
            self.position_ids = self.position_ids.repeat_interleave(self.n, 0)
            logits = logits.repeat_interleave(self.n, 0)
        return logits

    def feed(self, tokens: torch.Tensor) -> None:
        """Append one token per row (B·n,)."""
        self.input_ids = tokens.unsqueeze(-1)
        self.position_ids = self.position_ids[:, -1:] + 1
        self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(self.input_ids)], dim=-1)


@contextlib.contextmanager
def _sampling_mode(models: list[torch.nn.Module]):
    """Every module in eval mode inside (dropout off; gradient checkpointing idle, so the KV cache is kept),
    each module's own mode restored afterwards (a dropout switched off by the caller stays off)."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def rollout(policy, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0,
            mix=None, mix_weight: float = 0.0, n: int = 1) -> Rollout:
    """Sample n completions per prompt from q_θ, or from (1 − w)·q_θ + w·p when `mix` is given.

    Rows come grouped by prompt (prompt 0's n samples, then prompt 1's, ...); each prompt's
    prefill runs once and its KV cache is shared by its n samples. Both models see their own
    formatting of the prompt; they must share the vocabulary. Samples with the weights as
    they are now (LoRA adapters unmerged, in eval mode). Uses (and advances) torch's global
    RNG of the model's device, which the training loop seeds and checkpoints.
    """
    if temperature <= 0:
        raise ValueError(f"rollout temperature must be positive, got {temperature}")
    if n < 1:
        raise ValueError(f"rollout needs n >= 1 samples per prompt, got {n}")
    start = time.perf_counter()
    mixing = mix is not None and mix_weight > 0
    lms = [policy] + ([mix] if mixing else [])
    try:
        with _sampling_mode([lm.model for lm in lms]):
            streams = [_Stream(lm, prompts, n) for lm in lms]
            tokens, weights, lengths = _decode(streams, eos=policy.tokenizer.eos_token_id, pad=policy.tokenizer.pad_token_id,
                                               max_new_tokens=max_new_tokens, temperature=temperature, mix_weight=mix_weight)
        rows, importance = tokens.tolist(), weights.tolist()
        cut = lengths.tolist()
        return Rollout([r[:k] for r, k in zip(rows, cut)], [w[:k] for w, k in zip(importance, cut)])
    finally:
        _Clock.seconds += time.perf_counter() - start


def _decode(streams: list[_Stream], *, eos: int, pad: int, max_new_tokens: int, temperature: float, mix_weight: float):
    """(tokens (R, N), importance (R, N), lengths (R,)) of R = B·n rows, sampled on the device until every row has its EOS.

    streams[0] is the student q_θ; a second stream is the teacher p mixed in with weight w.
    A row's length counts its tokens up to and including its first EOS; finished rows are
    fed padding until the batch ends. One multinomial draw over (R, V) per step.
    """
    device, rows = streams[0].device, streams[0].input_ids.shape[0] * streams[0].n
    tokens = torch.full((rows, max_new_tokens), pad, dtype=torch.long, device=device)
    weights = torch.ones((rows, max_new_tokens), device=device)  # all 1 without mixing
    lengths = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    for t in range(max_new_tokens):
        log_q = torch.log_softmax(streams[0].logits() / temperature, -1)  # (R, V)
        log_sample = log_q
        if len(streams) > 1:
            log_p = torch.log_softmax(streams[1].logits()[:, :log_q.shape[-1]] / temperature, -1)
            log_sample = log_mixture(log_p, log_q[:, :log_p.shape[-1]], mix_weight)
        nxt = torch.multinomial(log_sample.exp(), 1).squeeze(-1)  # (R,)
        tokens[:, t] = nxt
        if len(streams) > 1:
            weights[:, t] = (log_q.gather(-1, nxt[:, None]) - log_sample.gather(-1, nxt[:, None])).squeeze(-1).exp()
        ends = (nxt == eos) & ~finished
        lengths = torch.where(ends, t + 1, lengths)
        finished |= ends
        if bool(finished.all()):
            break
        fed = torch.where(finished, torch.full_like(nxt, pad), nxt)
        for s in streams:
            s.feed(fed)
    return tokens, weights, lengths


def canonical(sampled: Rollout, tokenizer) -> Rollout:
    """The samples re-tokenised: each decoded and encoded again (its EOS kept), the ids a tokenizer gives its text.

    A row that changes gets importance weights 1; only unmixed samples (weights all 1) may change,
    since the weights of teacher-mixed ones belong to the tokens that were sampled.
    """
    eos = tokenizer.eos_token_id
    completions, importance = [], []
    for ids, weights in zip(sampled.completions, sampled.importance):
        ended = bool(ids) and ids[-1] == eos
        text = tokenizer.decode(ids[:-1] if ended else ids, clean_up_tokenization_spaces=False)
        again = tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if ended else [])
        if again != ids and any(w != 1.0 for w in weights):
            raise ValueError("teacher-mixed samples cannot be re-tokenised: their importance weights belong to the sampled tokens")
        completions.append(again)
        importance.append(weights if again == ids else [1.0] * len(again))
    return Rollout(completions, importance)
