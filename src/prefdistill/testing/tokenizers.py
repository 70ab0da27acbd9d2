"""Small real tokenizers of the two marking styles, trained offline in a second, for the cross-tokenizer tests.

    byte_bpe = byte_level_bpe(texts, vocab_size=300)       # GPT-2 / SmolLM2 style: "Ġ" spaces, every byte a token
    sp_bpe = metaspace_bpe(texts, vocab_size=300)          # Llama 2 / Gemma style: "▁" spaces, "<0xNN>" byte fallback

Both are `PreTrainedTokenizerFast` with <pad>, <s>, </s> and <unk> special tokens (ids 0-3), so a
tiny Llama can be built on either (`tiny_causal_lm`).
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def _fast(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def byte_level_bpe(texts: list[str], vocab_size: int = 300):
    """A byte-level BPE tokenizer (every byte reachable, spaces as 'Ġ'), trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return _fast(tok)


def metaspace_bpe(texts: list[str], vocab_size: int = 300):
    """A SentencePiece-style BPE tokenizer ('▁' spaces, bytes it lacks as '<0xNN>' tokens), trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme="never")])
    bytes_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, special_tokens=SPECIALS + bytes_tokens, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return _fast(tok)


def tiny_causal_lm(folder: Path, tokenizer, *, layers: int = 1, hidden: int = 32, seed: int = 0, chat_template: str | None = None) -> Path:
    """A random tiny Llama on `tokenizer`, saved with it into `folder` (loadable by LocalLM)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    if chat_template:
        tokenizer.chat_template = chat_template
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
