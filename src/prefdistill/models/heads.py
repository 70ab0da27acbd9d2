"""A causal LM split into its decoder body and its output layer, for logits computed a chunk at a time.

    head = lm_head_of(model)                        # an LMHead (prefdistill.losses.chunked), or None: no safe split
    with final_hidden(model) as hidden:
        model(input_ids=..., logits_to_keep=1)      # the model's own forward: DDP, PEFT and checkpointing apply
    h = hidden.value                                # (B, L, H): what the head reads

The hidden states come from a forward hook on the decoder body (`get_decoder()`) while the
model's own forward runs with `logits_to_keep=1`, so wrappers (DDP, which must see the forward
to reduce gradients; PEFT, whose LoRA layers sit inside the body) work as before and the head
computes one position per row instead of all of them.

Only architectures whose logits are declared below as `lm_head(hidden)`, optionally soft-capped,
are split; any other (and any model sharded so that its head's weight is not whole here: FSDP,
DeepSpeed ZeRO-3, or a head wrapped by an adapter) gets None, and callers fall back to the
model's full logits.
"""
from __future__ import annotations

import contextlib
import functools
import inspect

import torch

from prefdistill.losses.chunked import LMHead

# model_type -> the config attribute that soft-caps the final logits (None: the head is lm_head(hidden) alone).
# Each entry's CausalLM forward is `logits = lm_head(decoder(...).last_hidden_state[:, keep])` [+ the cap].
SPLIT_ARCHITECTURES: dict[str, str | None] = {
    "llama": None, "mistral": None, "qwen2": None, "qwen3": None, "smollm3": None, "phi3": None, "olmo2": None,
    "gpt2": None, "gemma": None, "gemma2": "final_logit_softcapping", "gemma3_text": "final_logit_softcapping",
}


def unwrapped(model):
    """The transformers model behind DDP / FSDP (which forward keywords to the model they wrap) and PEFT wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "get_base_model", lambda: model)()


@functools.lru_cache(maxsize=None)
def forward_parameters(cls: type) -> frozenset[str]:  # once per model class, not per forward
    return frozenset(inspect.signature(cls.forward).parameters)


def accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in forward_parameters(type(unwrapped(model)))


def _sharded(model) -> bool:
    """Whether `model`'s parameters are sharded over processes (FSDP 1 and 2, DeepSpeed ZeRO-3): no whole head weight here."""
    name = type(model).__name__
    return ("FullyShardedDataParallel" in name or name.startswith("FSDP")
            or any(hasattr(p, "ds_id") or type(p).__name__ == "DTensor" for p in model.parameters()))


def lm_head_of(model, vocab: int | None = None) -> LMHead | None:
    """`model`'s output layer as an `LMHead` over its first `vocab` rows, or None where it cannot be split safely."""
    inner = unwrapped(model)
    config = getattr(inner, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SPLIT_ARCHITECTURES or _sharded(model) or not accepts_logits_to_keep(model):
        return None
    out = inner.get_output_embeddings()
    if type(out) is not torch.nn.Linear or out.weight.dim() != 2:  # e.g. a LoRA-wrapped head: its delta is not in .weight
        return None
    cap_key = SPLIT_ARCHITECTURES[kind]
    cap = getattr(config, cap_key, None) if cap_key else None
    return LMHead(out.weight, out.bias, vocab, float(cap) if cap else None)


class Captured:
    value: torch.Tensor | None = None


@contextlib.contextmanager
def final_hidden(model):
    """Within the block, `.value` of the yielded holder is the decoder body's last hidden state (B, L, H) of the latest forward."""
    holder = Captured()

    def keep(module, args, output):
        holder.value = output[0] if isinstance(output, tuple) else output.last_hidden_state

    handle = unwrapped(model).get_decoder().register_forward_hook(keep)
    try:
        yield holder
    finally:
        handle.remove()
