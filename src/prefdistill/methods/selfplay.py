"""What the win-rate methods (WIND, SPPO, BOND, J-BOND) share: sampled groups, oracle counts, anchors.

    group = sample_group(policy, prompts, k=4, max_new_tokens=48)   # k completions per prompt
    P = oracle.win_matrices(prompts, group.texts)                   # (k, k) per prompt
    with anchor_weights(policy, state):                             # the anchor's weights, swapped in
        anchor_logps = sequence_logps_of(policy, group.prompts, group.ids)

An anchor is a copy of the trainable parameters kept in the run's `state` dict: the
student's starting weights, moved by an exponential moving average (J-BOND) or replaced
every few optimizer steps (iterative BOND), always after an optimizer step (the methods'
`after_step` hooks), never per micro-batch. Swapping it into the student for scoring and
sampling costs no second model in memory, and works the same for LoRA adapters and full
weights. The state is saved with the training state, so a resumed run keeps its anchor.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from prefdistill.errors import ConfigError
from prefdistill.models.logprobs import no_dropout, sequence_logps
from prefdistill.models.rollout import rollout


@dataclass
class Group:
    prompts: list[str]  # each prompt repeated k times, grouped: [p0]*k + [p1]*k + ...
    ids: list[list[int]]  # sampled token ids, aligned with `prompts`
    texts: list[list[str]]  # decoded samples, one list of k per distinct prompt
    n_tokens: int


def sample_group(policy, prompts: list[str], *, k: int, max_new_tokens: int, temperature: float = 1.0) -> Group:
    """k samples per prompt from the student as it is now (token ids, and text for the oracle); each prompt is
    prefilled once and its KV cache shared by its k samples."""
    repeated = [p for p in prompts for _ in range(k)]
    out = rollout(policy, prompts, max_new_tokens=max_new_tokens, temperature=temperature, n=k)
    decoded = policy.tokenizer.batch_decode(out.completions, skip_special_tokens=True)
    texts = [[t.strip() for t in decoded[i * k:(i + 1) * k]] for i in range(len(prompts))]
    return Group(repeated, out.completions, texts, out.n_tokens)


def sequence_logps_of(lm, prompts: list[str], ids: list[list[int]]) -> torch.Tensor:
    """log π(y|x) summed over the sampled tokens: (N,), with grad when lm's weights need it."""
    per_token, mask = lm.completion_logps(prompts, ids)
    return sequence_logps(per_token, mask, normalize=False)


def _trainable(policy) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in policy.model.named_parameters() if p.requires_grad}


def init_anchor(policy, state: dict) -> dict[str, torch.Tensor]:
    """The anchor's weights (created from the student's current weights on first use)."""
    if "anchor" not in state:
        state["anchor"] = {n: p.detach().clone() for n, p in _trainable(policy).items()}
    return state["anchor"]


@torch.no_grad()
def ema_anchor(policy, state: dict, rate: float) -> None:
    """anchor ← (1 − rate)·anchor + rate·student."""
    anchor = init_anchor(policy, state)
    for name, p in _trainable(policy).items():
        anchor[name].mul_(1 - rate).add_(p.detach(), alpha=rate)


@torch.no_grad()
def reset_anchor(policy, state: dict) -> None:
    """anchor ← student (iterative BOND's moving anchor)."""
    state["anchor"] = {n: p.detach().clone() for n, p in _trainable(policy).items()}


@contextlib.contextmanager
def anchor_weights(policy, state: dict):
    """Run the student with the anchor's weights inside the block (no gradient flows to them)."""
    anchor = init_anchor(policy, state)
    params = _trainable(policy)
    saved = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(anchor[n])
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])


def scored_without_dropout(lm, prompts: list[str], ids: list[list[int]]) -> torch.Tensor:
    """sequence_logps_of with dropout off: for log-probs compared with a frozen copy's (anchor, reference)."""
    with no_dropout(lm.model):
        return sequence_logps_of(lm, prompts, ids)


def refuse_tempered_sampling(temperature: float, method: str) -> None:
    """The win-rate methods treat their samples as samples of π: at T ≠ 1 they are samples of π^(1/T)."""
    if temperature != 1.0:
        raise ConfigError(f"distill.params.temperature={temperature}: {method} scores its samples as draws from the student "
                          f"at temperature 1 (its returns, weights and KL terms use log π at T = 1), so samples drawn at "
                          f"another temperature would make them wrong. Remove the key or set it to 1.0.")


def oracle_delta(oracle, before: dict[str, int]) -> dict[str, float]:
    after = oracle.counts()
    return {"count_oracle_comparisons": float(after["comparisons"] - before["comparisons"]),
            "count_oracle_queries": float(after["queries"] - before["queries"])}
