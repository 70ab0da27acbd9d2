"""Training-time sampling from the student, optionally mixed with the teacher, as token ids.

    out = rollout(student, prompts, max_new_tokens=48)                            # y ~ q_θ
    out = rollout(student, prompts, max_new_tokens=48, mix=teacher, mix_weight=0.2)
    # y_t ~ p̃ = 0.2·p + 0.8·q_θ (MiniLLM's teacher-mixed sampling); out.importance holds
    # the per-token weights q_θ(y_t) / p̃(y_t) that correct the gradient for the mixing.

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

from dataclasses import dataclass

import torch

from prefdistill.losses.divergences import log_mixture
from prefdistill.models.logprobs import cache_kwarg, output_cache


@dataclass
class Rollout:
    completions: list[list[int]]  # sampled token ids per prompt, ending with EOS when it was sampled
    importance: list[list[float]]  # q_θ(y_t) / p̃(y_t) per token; all 1.0 without mixing

    @property
    def n_tokens(self) -> int:
        return sum(len(c) for c in self.completions)


class _Stream:
    """One model decoding a left-padded batch with its KV cache."""

    def __init__(self, lm, prompts: list[str]):
        self.model = lm.model
        ids = [lm.prompt_ids(p) for p in prompts]
        width = max(len(x) for x in ids)
        pad = lm.tokenizer.pad_token_id
        self.device = next(self.model.parameters()).device
        self.input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)
        self.attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
        self.position_ids = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = None

    def logits(self) -> torch.Tensor:
        """Next-token logits (B, V) after the tokens fed so far."""
        out = self.model(input_ids=self.input_ids, attention_mask=self.attention_mask, position_ids=self.position_ids,
                         use_cache=True, **{cache_kwarg(self.model): self.cache})
        self.cache = output_cache(out)
        return out.logits[:, -1].float()

    def feed(self, tokens: torch.Tensor) -> None:
        self.input_ids = tokens.to(self.device).unsqueeze(-1)
        self.position_ids = self.position_ids[:, -1:] + 1
        self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(self.input_ids)], dim=-1)


@torch.no_grad()
def rollout(policy, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0,
            mix=None, mix_weight: float = 0.0) -> Rollout:
    """Sample one completion per prompt from q_θ, or from (1 − w)·q_θ + w·p when `mix` is given.

    Both models see their own formatting of the prompt; they must share the vocabulary.
    Uses (and advances) torch's global RNG, which the training loop seeds and checkpoints.
    """
    if temperature <= 0:
        raise ValueError(f"rollout temperature must be positive, got {temperature}")
    mixing = mix is not None and mix_weight > 0
    models = [policy.model] + ([mix.model] if mixing else [])
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        streams = [_Stream(policy, prompts)] + ([_Stream(mix, prompts)] if mixing else [])
        eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
        n = len(prompts)
        finished = torch.zeros(n, dtype=torch.bool)
        tokens: list[list[int]] = [[] for _ in range(n)]
        weights: list[list[float]] = [[] for _ in range(n)]
        for _ in range(max_new_tokens):
            log_q = torch.log_softmax(streams[0].logits().cpu() / temperature, -1)
            log_sample = log_q
            if mixing:
                log_p = torch.log_softmax(streams[1].logits().cpu()[:, :log_q.shape[-1]] / temperature, -1)
                log_sample = log_mixture(log_p, log_q[:, :log_p.shape[-1]], mix_weight)
            nxt = torch.multinomial(log_sample.exp(), 1).squeeze(-1)
            w = (log_q.gather(-1, nxt[:, None]) - log_sample.gather(-1, nxt[:, None])).squeeze(-1).exp()
            for i in range(n):
                if not finished[i]:
                    tokens[i].append(int(nxt[i]))
                    weights[i].append(float(w[i]))
            finished |= nxt == eos
            if bool(finished.all()):
                break
            fed = torch.where(finished, torch.full_like(nxt, pad), nxt)
            for s in streams:
                s.feed(fed)
        return Rollout(tokens, weights)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


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
