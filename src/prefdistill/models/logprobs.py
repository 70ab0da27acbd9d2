"""Sequence log-probabilities of completions: the one home for token log-probs,
completion masks and length normalisation.

    batch = encode_completions(tokenizer, prompts, completions)   # prompts already formatted
    per_token = completion_logps(model, batch)                    # (B, C)
    logps = sequence_logps(per_token, batch["completion_mask"], normalize=True)  # (B,)

Rows are left-padded so that every completion ends at the right edge: the logits of only
the last C + 1 positions are computed (`logits_to_keep`), which matters for models whose
vocabulary head dominates the cost (Gemma-3's 262k vocabulary).

Several completions of one prompt (a preference pair's chosen and rejected) can share the
prompt's forward pass: the prompt runs once, its key/value cache is repeated for each
completion, and gradients flow back through the cache (prefix sharing, as in Wang et al.
2024, "Accelerating Direct Preference Optimization with Prefix Sharing", arXiv 2410.20305):

    batch = pack_shared_prompt(prompt_ids, completion_ids, pad_id=pad, n_per_prompt=2)
    per_token = shared_prompt_logps(model, batch)                 # (B·2, C)
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from prefdistill.losses.chunked import Side, chunked_positions
from prefdistill.models.heads import accepts_logits_to_keep, final_hidden, forward_parameters, lm_head_of, unwrapped

IGNORE_INDEX = -100


@contextlib.contextmanager
def no_dropout(model: torch.nn.Module):
    """Score with every dropout off (nn.Dropout modules, LoRA's included, and attention dropout), gradients kept.

    For log-probabilities that are compared with a frozen copy's (an anchor, a reference): with
    dropout on, log π − log π_anchor is noise (±0.13 nats seen with LoRA dropout 0.1) even when the
    weights are equal. Only dropout is switched off, not train mode, so gradient checkpointing
    (active only in train mode) still applies. Restores everything on exit.
    """
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.training]
    attention = [(m, m.attention_dropout) for m in model.modules()
                 if isinstance(getattr(m, "attention_dropout", None), float) and m.attention_dropout > 0]
    for m in dropouts:
        m.eval()
    for m, _ in attention:
        m.attention_dropout = 0.0
    try:
        yield model
    finally:
        for m in dropouts:
            m.train()
        for m, p in attention:
            m.attention_dropout = p


def per_token_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """log softmax(logits)[label] per position; 0 where the label is `ignore_index`.

    Args: logits (B, T, V) already aligned with labels (B, T). Returns (B, T).
    """
    mask = labels != ignore_index
    safe = labels.masked_fill(~mask, 0)
    logps = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return logps * mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is 1, pooled over the batch: (B, T) -> ()."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def sequence_logps(per_token: torch.Tensor, completion_mask: torch.Tensor, *, normalize: bool) -> torch.Tensor:
    """Σ over completion tokens of per-token log-probs; divided by |y| when `normalize`.

    Args: per_token (B, T), completion_mask (B, T) of 0/1. Returns (B,).
    """
    mask = completion_mask.to(per_token.dtype)
    total = (per_token * mask).sum(-1)
    if not normalize:
        return total
    return total / mask.sum(-1).clamp(min=1.0)


def encode_completions(
    tokenizer,
    prompts: list[str],
    completions: list[str],
    *,
    add_special_tokens: bool,
    append_eos: bool = True,
    max_completion_tokens: int | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenise formatted prompts and their completions into one left-padded batch.

    Returns input_ids / attention_mask / position_ids (B, L), and labels /
    completion_mask (B, C) for the last C positions, C = longest completion.
    The completion is followed by EOS (when `append_eos`) so the model learns to stop.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    prompt_ids = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    completion_ids = completion_token_ids(tokenizer, completions, append_eos=append_eos, max_tokens=max_completion_tokens)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pack_completions(prompt_ids, completion_ids, pad_id=pad_id)


def completion_token_ids(tokenizer, completions: list[str], *, append_eos: bool = True, max_tokens: int | None = None) -> list[list[int]]:
    """Completion texts -> token ids (no special tokens), cut to `max_tokens`, then EOS appended."""
    out = []
    for completion in completions:
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if max_tokens is not None:
            ids = ids[:max_tokens]
        if append_eos and tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        out.append(ids)
    return out


def pack_completions(prompt_ids: list[list[int]], completion_ids: list[list[int]], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Token ids of prompts and completions -> the left-padded batch of `encode_completions`."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    rows, comp_lens = [], []
    for p_ids, c_ids in zip(prompt_ids, completion_ids):
        c_ids = list(c_ids)
        comp_lens.append(len(c_ids))
        if not c_ids:  # an empty completion: score nothing, keep shapes valid
            c_ids = [pad_id]
        rows.append(list(p_ids) + c_ids)
    length = max(len(r) for r in rows)
    width = max(max(comp_lens), 1)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, c) in enumerate(zip(rows, comp_lens)):
        input_ids[i, length - len(ids):] = torch.tensor(ids)
        attention_mask[i, length - len(ids):] = 1
        if c:
            labels[i, width - c:] = torch.tensor(ids[-c:])
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "labels": labels,
        "completion_mask": (labels != IGNORE_INDEX).long(),
    }


def cache_kwarg(model) -> str:
    """The keyword that hands a key/value cache to `model`'s forward and to its `generate`.

    transformers renamed `past_key_values` to `cache` (5.24 warns on the old name, removal
    announced for 5.40 in forward and 6.0 in generate); 5.17 knows only `past_key_values`.
    The model's own forward signature says which one it takes: every caller of a cache
    goes through here, so the switch lives in one place.
    """
    return "cache" if "cache" in forward_parameters(type(unwrapped(model))) else "past_key_values"


def output_cache(output):
    """The key/value cache of a forward's output: field `cache`, or `past_key_values` before the rename.

    Newer versions still answer to the old name, with a deprecation message; reading the
    field the output class declares avoids it.
    """
    return getattr(output, "cache" if "cache" in getattr(output, "__dataclass_fields__", {}) else "past_key_values")


def completion_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token logits at the completion positions of an `encode_completions` batch.

    Returns (B, C, V) aligned with batch["labels"]: entry t predicts label t.
    """
    width = batch["labels"].shape[1]
    device = next(model.parameters()).device
    kwargs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "position_ids")}
    if accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = width + 1
    return model(**kwargs).logits[:, -(width + 1):-1]  # position t predicts t + 1


def completion_states(model, batch: dict[str, torch.Tensor], *, chunk: int, vocab: int | None = None) -> Side:
    """What the logits at the completion positions of an `encode_completions` batch are made from, aligned with its labels.

    chunk > 0 and a model that splits (`prefdistill.models.heads.lm_head_of`): (final hidden states
    (B, C, H), the head cut to `vocab`), to be evaluated a chunk at a time (`chunked_positions`);
    the model's head then computes one position per row. Otherwise (chunk 0, or an architecture
    that does not split): (the model's own logits (B, C, V) cut to `vocab`, None).
    """
    head = lm_head_of(model, vocab) if chunk > 0 else None
    if head is None:
        return completion_logits(model, batch)[..., :vocab], None
    width = batch["labels"].shape[1]
    device = next(model.parameters()).device
    with final_hidden(model) as hidden:
        model(**{k: batch[k].to(device) for k in ("input_ids", "attention_mask", "position_ids")}, logits_to_keep=1)
    return hidden.value[:, -(width + 1):-1], head  # position t predicts t + 1


def completion_logps(model, batch: dict[str, torch.Tensor], *, chunk: int = 0) -> torch.Tensor:
    """Per-token log-probs of the completion tokens of an `encode_completions` batch, `chunk` positions at a time.

    Returns (B, C) aligned with batch["labels"]; 0 outside the completion. chunk 0: from the
    whole batch's logits at once.
    """
    return _logps_of(completion_states(model, batch, chunk=chunk), batch["labels"], chunk)


def _logps_of(side: Side, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    labels = labels.to(side[0].device)
    return chunked_positions(lambda s, _, y: per_token_logps(s, y), side, aligned=(labels,), chunk=chunk,
                             active=labels != IGNORE_INDEX)[0]


def pack_shared_prompt(prompt_ids: list[list[int]], completion_ids: list[list[int]], *, pad_id: int,
                       n_per_prompt: int) -> dict[str, torch.Tensor]:
    """Token ids of B prompts and their B·n completions (row b·n + k: completion k of prompt b) -> one batch.

    Returns prompt_ids / prompt_mask (B, P), left-padded so every prompt ends at the right
    edge; completion_ids / attention_mask (B·n, P + C) / position_ids (B·n, C) with the
    completions right-padded after it; labels / completion_mask (B·n, C).
    """
    if len(completion_ids) != n_per_prompt * len(prompt_ids):
        raise ValueError(f"{len(prompt_ids)} prompts need {n_per_prompt * len(prompt_ids)} completions, got {len(completion_ids)}")
    p_len = max(len(p) for p in prompt_ids)
    width = max(max((len(c) for c in completion_ids), default=1), 1)
    prompts = torch.full((len(prompt_ids), p_len), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompts)
    for b, ids in enumerate(prompt_ids):
        prompts[b, p_len - len(ids):] = torch.tensor(ids, dtype=torch.long)
        prompt_mask[b, p_len - len(ids):] = 1
    comps = torch.full((len(completion_ids), width), pad_id, dtype=torch.long)
    labels = torch.full_like(comps, IGNORE_INDEX)
    for i, ids in enumerate(completion_ids):
        if ids:
            comps[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[i, :len(ids)] = comps[i, :len(ids)]
    completion_mask = (labels != IGNORE_INDEX).long()
    starts = prompt_mask.sum(-1).repeat_interleave(n_per_prompt)  # (B·n,) first position of each completion
    return {
        "prompt_ids": prompts,
        "prompt_mask": prompt_mask,
        "completion_ids": comps,
        "attention_mask": torch.cat([prompt_mask.repeat_interleave(n_per_prompt, 0), completion_mask], dim=1),
        "position_ids": starts.unsqueeze(1) + torch.arange(width),
        "labels": labels,
        "completion_mask": completion_mask,
        "n_per_prompt": n_per_prompt,
    }


def shared_prompt_logps(model, batch: dict, *, chunk: int = 0) -> torch.Tensor:
    """Per-token log-probs (B·n, C) of a `pack_shared_prompt` batch; 0 outside the completions.

    The prompt runs once with a key/value cache; the cache is repeated for each of its n
    completions, which run in one second pass. The first completion token is predicted by
    the prompt's last position, token t > 0 by completion position t - 1, so the prompt
    keeps 1 logit row and the completions C (the last one is dropped: it predicts nothing).
    With chunk > 0 the same rows' hidden states go through the head `chunk` at a time (as in
    `completion_states`).
    """
    if _checkpointing(model):  # checkpointed layers keep no key/value cache: each completion runs after its own prompt copy
        return completion_logps(model, _unshared(batch), chunk=chunk)
    device = next(model.parameters()).device
    n, width = batch["n_per_prompt"], batch["labels"].shape[1]
    prompt_mask = batch["prompt_mask"].to(device)
    head = lm_head_of(model) if chunk > 0 else None
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    with final_hidden(model) if head is not None else contextlib.nullcontext() as hidden:
        first = model(input_ids=batch["prompt_ids"].to(device), attention_mask=prompt_mask,
                      position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, **keep)
        first_rows = first.logits[:, -1:] if head is None else hidden.value[:, -1:]  # (B, 1, V or H)
        cache = output_cache(first)
        cache.batch_repeat_interleave(n)  # differentiable: each completion's gradient reaches the shared prompt
        keep = {"logits_to_keep": width if head is None else 1} if keep else {}
        rest = model(input_ids=batch["completion_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                     position_ids=batch["position_ids"].to(device), use_cache=True, **{cache_kwarg(model): cache}, **keep)
        rest_rows = rest.logits[:, -width:-1] if head is None else hidden.value[:, -width:-1]
    states = torch.cat([first_rows.repeat_interleave(n, 0), rest_rows], dim=1)  # (B·n, C, V or H)
    return _logps_of((states, head), batch["labels"], chunk)


def _checkpointing(model) -> bool:
    """Whether `model`'s layers recompute their activations in the backward pass now (gradient checkpointing).

    transformers then drops any key/value cache inside the layers (a replayed layer would write it
    twice), so a prompt's cache cannot be shared.
    """
    inner = unwrapped(model)
    return inner.training and torch.is_grad_enabled() and any(getattr(m, "gradient_checkpointing", False) is True
                                                              for m in inner.modules())


def _unshared(batch: dict) -> dict:
    """A `pack_shared_prompt` batch laid out for `completion_logps`: each completion after its own copy of its prompt.

    The completions stay right-padded; their padding is masked, labelled IGNORE_INDEX and comes
    last, so it changes no scored position. Costs B·n·(P + C) positions instead of B·P + B·n·C.
    """
    n = batch["n_per_prompt"]
    prompt_mask = batch["prompt_mask"].repeat_interleave(n, 0)  # (B·n, P)
    return {"input_ids": torch.cat([batch["prompt_ids"].repeat_interleave(n, 0), batch["completion_ids"]], dim=1),
            "attention_mask": batch["attention_mask"],
            "position_ids": torch.cat([(prompt_mask.cumsum(-1) - 1).clamp(min=0), batch["position_ids"]], dim=1),
            "labels": batch["labels"]}
