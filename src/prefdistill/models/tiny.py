"""Tiny random models and data built offline from configs, for tests and a 1-minute smoke run.

    paths = make_tiny_assets(Path("/tmp/tiny"))   # {"teacher", "student", "encoder", "data"}

Nothing here is downloaded: tokenizers are word-level vocabularies built from the data,
models are randomly initialised Llama / BERT configurations a few thousand weights wide.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from prefdistill.io import write_jsonl

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
_WORDS = ("the model learns a short summary of each paper about data training results method "
          "we propose show improve accuracy task language small large teacher student better").split()


def tiny_rows(n: int, seed: int = 0) -> list[dict]:
    """Synthetic summarisation rows: the target repeats salient words of the prompt."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        doc = [rng.choice(_WORDS) for _ in range(rng.randint(12, 24))]
        rows.append({"id": f"doc{i}", "document": " ".join(doc), "summary": " ".join(doc[:rng.randint(3, 6)]), "group": f"g{i // 2}"})
    return rows


def _vocab(texts: list[str], specials: list[str]) -> dict[str, int]:
    words = sorted({w for t in texts for w in t.split()})
    return {tok: i for i, tok in enumerate(specials + words)}


def _causal_tokenizer(vocab: dict[str, int], chat: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def _save_causal_lm(folder: Path, vocab: dict[str, int], *, layers: int, hidden: int, chat: bool, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _causal_tokenizer(vocab, chat)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def _save_encoder(folder: Path, texts: list[str], seed: int) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = _vocab(texts, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"{w}\n" for w in vocab))
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def make_tiny_assets(folder: Path, *, n_rows: int = 60, seed: int = 0) -> dict[str, Path]:
    """Write tiny teacher / student / reward encoder folders and a JSONL task into `folder`."""
    folder = Path(folder)
    done = folder / "assets.json"
    if done.is_file():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    rows = tiny_rows(n_rows, seed)
    texts = [r["document"] for r in rows] + ["Summarize :", "<|user|>", "<|assistant|>"]
    vocab = _vocab(texts, ["<pad>", "<unk>", "<s>", "</s>"])
    paths = {"teacher": folder / "teacher", "student": folder / "student", "encoder": folder / "encoder", "data": folder / "task.jsonl",
             "foreign": folder / "foreign"}
    _save_causal_lm(paths["teacher"], vocab, layers=2, hidden=48, chat=False, seed=seed)
    _save_causal_lm(paths["student"], vocab, layers=1, hidden=32, chat=True, seed=seed + 1)
    # Same words, other ids: a model that token-level methods must refuse to pair with the student.
    _save_causal_lm(paths["foreign"], {w: i for i, w in enumerate(reversed(list(vocab)))}, layers=1, hidden=32, chat=False, seed=seed + 2)
    _save_encoder(paths["encoder"], texts, seed)
    write_jsonl(paths["data"], rows)
    done.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


def tiny_config(paths: dict[str, Path], output_dir: Path, name: str = "tiny") -> dict:
    """A complete run configuration over the tiny assets (a dict for load_config)."""
    train = {"steps": 2, "batch_size": 2, "lr": 1e-3, "save_every": 1, "log_every": 1}
    sampling = {"max_new_tokens": 8, "batch_size": 4, "temperature": 1.0, "top_p": 1.0}
    return {
        "name": name, "output_dir": str(output_dir), "seed": 0,
        "teacher": {"name_or_path": str(paths["teacher"])},
        "student": {"name_or_path": str(paths["student"])},
        "data": {"source": str(paths["data"]), "columns": {"prompt": "document", "target": "summary", "id": "id"},
                 "template": "Summarize : {prompt}", "splits": {"validation": None, "test": None},
                 "val_fraction": 0.2, "test_fraction": 0.2, "max_prompt_tokens": 32},
        "sft": {"teacher": train, "student": train},
        "pairs": {"teacher_sampling": sampling, "student_sampling": sampling, "chunk_size": 4},
        "distill": {"method": "plad", "params": {"beta": 0.5}, "train": train},
        "reward": {"encoder": str(paths["encoder"]), "steps": 3, "batch_size": 4, "head_dim": 16,
                   "prompt_max_length": 32, "response_max_length": 32},
        "eval": {"sampling": {**sampling, "do_sample": False}, "n_bootstrap": 50},
    }
