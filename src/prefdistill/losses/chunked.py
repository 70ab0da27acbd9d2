"""Per-position functions of logits over chunks of positions: never the whole batch's (B, C, V) logits.

    head = LMHead(lm_head.weight)                                    # the output layer, as tensors
    (logps,) = chunked_positions(per_token_logps, (hidden, head), aligned=(labels,), chunk=512)   # (B, C)
    kl, = chunked_positions(lambda s, t: forward_kl(s, t), (hidden, head), teacher=(t_hidden, t_head), chunk=512)

At vocabularies of 49k to 262k the logits are the largest tensor of a training step, and they
are held several times over (the logits, their log-softmax, the teacher's pair, the terms of a
divergence, and the gradients of each). Here the head is applied to `chunk` positions at a time
and the per-position function evaluated on that chunk alone. Under autograd each chunk runs
inside `torch.utils.checkpoint` (non-reentrant): the backward pass keeps only the chunk's hidden
states and recomputes its logits (the teacher's too, without a graph), so the logits' memory is

    chunk × V × 4 bytes × (copies the function makes)   instead of   B × C × V × 4 × copies.

This is the idea of the fused linear-cross-entropy kernels (Liger Kernel, Hsu et al. 2024,
arXiv 2410.10989; Cut Cross-Entropy, Wijmans et al. 2025, arXiv 2411.09009), in portable PyTorch
for CPU and GPU alike and for any per-position function; a fused GPU kernel for a known function
would replace `_chunk_values` behind `chunked_positions`.

A side is (hidden (B, C, H), LMHead) or, where a model cannot be split into body and head or
chunking is off, (logits (B, C, V), None): the function sees logits either way.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class LMHead:
    """A causal LM's output layer as tensors: logits = cap·tanh((h Wᵀ + b) / cap), over the first `vocab` rows.

    weight (V_out, H) and bias (V_out,) are the model's own parameters (gradients reach them);
    V_out may exceed the tokens (models pad their output layer), `vocab` keeps the first rows.
    softcap is Gemma-2's `final_logit_softcapping` (None: a plain linear head, as Llama, Qwen,
    SmolLM, GPT-2).
    """
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    vocab: int | None = None
    softcap: float | None = None

    @property
    def size(self) -> int:
        return self.weight.shape[0] if self.vocab is None else min(self.vocab, self.weight.shape[0])

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., vocab) logits, in the weight's dtype and on its device."""
        v = self.size
        bias = None if self.bias is None else self.bias[:v]
        logits = F.linear(hidden.to(self.weight.device, self.weight.dtype), self.weight[:v], bias)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


Side = tuple[torch.Tensor, "LMHead | None"]  # (hidden (B, C, H), head) or (logits (B, C, V), None)


def side_vocab(side: Side) -> int:
    """The vocabulary a side's logits span."""
    x, head = side
    return x.shape[-1] if head is None else head.size


def cut_vocab(side: Side, vocab: int) -> Side:
    """The side with its logits cut to the first `vocab` entries (a padded output layer's extra rows are not tokens)."""
    x, head = side
    return (x[..., :vocab], None) if head is None else (x, replace(head, vocab=vocab))


def _chunk_values(fn: Callable, head, teacher_head, x: torch.Tensor, t: torch.Tensor | None, *aligned: torch.Tensor):
    """fn's values on one chunk: student logits with grad, the teacher's without (recomputed, not stored)."""
    logits = x if head is None else head(x)
    t_logits = None
    if t is not None:
        with torch.no_grad():
            t_logits = (t if teacher_head is None else teacher_head(t)).to(logits.device)  # a teacher on another device
    out = fn(logits, t_logits, *aligned)
    return out if isinstance(out, tuple) else (out,)


def chunked_positions(fn: Callable, student: Side, *, teacher: Side | None = None, aligned: tuple = (), chunk: int,
                      active: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """fn(student_logits, teacher_logits, *aligned) evaluated over chunks of `chunk` positions.

    Args:
        fn: a per-position function: (1, n, V) student logits, (1, n, V) teacher logits (None without a
            teacher), and each `aligned` tensor's (1, n, ...) rows -> a tensor or a tuple of (1, n, ...)
            values; position i's values may depend on position i's inputs only.
        student, teacher: sides (see the module doc); the teacher's is evaluated under no_grad.
        aligned: tensors (B, C, ...) aligned with the positions (labels, a teacher's top-k ids and log-probs).
        chunk: positions per chunk; 0 evaluates fn once on the whole (B, C) batch (every position, no
            recomputation: the path without chunking).
        active: (B, C) the positions to evaluate (default: all); the others are 0 in the output.
    Returns: fn's values as (B, C, ...) tensors. Under autograd each chunk is checkpointed, so only
    its inputs are kept and its logits are recomputed in the backward pass; when every active
    position fits in one chunk, that chunk runs once and keeps its logits (at most `chunk` positions
    of them, the bound either way), which saves the recomputation: measured on trl_compare's SFT
    row (192 positions, V 49k), recomputing cost 10% of the step and lowered no peak.
    """
    x, head = student
    t, t_head = teacher if teacher is not None else (None, None)
    if chunk <= 0:
        return _chunk_values(fn, head, t_head, x, t, *aligned)
    batch, width = x.shape[:2]
    idx = (torch.ones(batch, width, dtype=torch.bool, device=x.device) if active is None
           else active.to(x.device).bool()).flatten().nonzero().squeeze(-1)  # (N,) the active positions

    def rows(a: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (N, ...)
        return a.flatten(0, 1).index_select(0, idx.to(a.device))

    xs, ts, al = rows(x), None if t is None else rows(t), [rows(a) for a in aligned]
    grad = torch.is_grad_enabled() and (xs.requires_grad or (head is not None and head.weight.requires_grad))
    recompute = grad and len(idx) > chunk  # one chunk holding every position frees nothing between chunks: run it once
    pieces = []
    for s in range(0, max(len(idx), 1), chunk):  # one empty chunk when nothing is active keeps the graph
        args = [None if a is None else a[s:s + chunk].unsqueeze(0) for a in (xs, ts, *al)]  # (1, n, ...) each
        if recompute:
            out = checkpoint(_chunk_values, fn, head, t_head, *args, use_reentrant=False)
        else:
            out = _chunk_values(fn, head, t_head, *args)
        pieces.append([o.squeeze(0) for o in out])
    outputs = []
    for values in zip(*pieces):
        flat = torch.cat(values)  # (N, ...)
        full = flat.new_zeros((batch * width, *flat.shape[1:])).index_copy(0, idx.to(flat.device), flat)
        outputs.append(full.view(batch, width, *flat.shape[1:]))
    return tuple(outputs)
