"""What the teacher-signal cache key knows of the teacher: a hash of its weights and of how it formats a prompt.

    teacher_id = teacher_fingerprint(cfg.teacher, checkpoint)    # "teacher:NAME:<hex>", given to build_topk_cache

Local weights (backend hf or vllm): the sha256 of the files of the folder the weights come from
(the base model, or a full fine-tune: its weight files and config.json), of each LoRA adapter of
the checkpoint's chain (its adapter weights and adapter_config.json), and of the prompt the
teacher formats for a marker text, rendered through its own chat template (or the plain format)
and tokenised, with the dtype. So a teacher retrained into the same folder, or an edited chat
template, keys new records, and a folder moved elsewhere keeps its records. Each file is read
once per process (the digest is memoised by path, size, inode and modification time).

A teacher behind an API (backend openai) has no weights here to hash: its key holds the server's
base_url, endpoint and model name. After a server starts serving other weights under the same
name, delete RUN/teacher_signal/ (or the one cache file) to compute the records again.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from prefdistill.config.schema import ModelConfig
from prefdistill.models.assets import resolve_model_path
from prefdistill.models.backends import capabilities

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CONFIG_FILES = ("config.json", "adapter_config.json")
MARKER = "<<prompt>>"  # the text the teacher's prompt format is rendered around


def teacher_fingerprint(cfg: ModelConfig, checkpoint: Path | None) -> str:
    """The teacher's identity in the cache key: its name, then a hash of its weights and rendered prompt format."""
    if not capabilities(cfg.backend).local:  # no weights here to hash: the server names it
        return f"teacher:{cfg.name_or_path}:api:{cfg.api.base_url}:{cfg.api.endpoint}"
    from prefdistill.models.hf import checkpoint_chain

    full, adapters = checkpoint_chain(Path(checkpoint)) if checkpoint else (None, [])
    folder = Path(full) if full else _local_folder(cfg)
    h = hashlib.sha256()
    for part in [folder_digest(folder, adapter=False), *(folder_digest(a, adapter=True) for a in adapters),
                 rendered_prompt(cfg, folder), cfg.dtype]:
        h.update(part.encode("utf-8") + b"\0")
    return f"teacher:{cfg.name_or_path}:{h.hexdigest()[:32]}"


def _local_folder(cfg: ModelConfig) -> Path | str:
    """The folder of the base weights; a hub name is looked up in the local hub cache (its name alone where it is not)."""
    path = resolve_model_path(cfg.name_or_path, cfg.gguf_file)
    if Path(path).is_dir():
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # not downloaded yet: the name (its weights load from the hub at whatever revision it serves)
        return path


def folder_digest(folder: Path | str, *, adapter: bool) -> str:
    """sha256 over the names and contents of a weights folder's weight and config files (adapter: a LoRA checkpoint's)."""
    if not Path(folder).is_dir():
        return f"name:{folder}"
    h = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        weights = path.suffix in WEIGHT_SUFFIXES and (not adapter or path.name.startswith("adapter_model"))
        if path.is_file() and (weights or path.name in CONFIG_FILES):
            st = path.stat()
            h.update(f"{path.name}:{file_digest(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)}\n".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def file_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """sha256 of a file's bytes; memoised by (path, size, modification time, inode), which any rewrite changes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def rendered_prompt(cfg: ModelConfig, folder: Path | str) -> str:
    """How the teacher formats a prompt: MARKER rendered as LocalLM renders prompts (chat template or plain), and its ids."""
    from transformers import AutoTokenizer

    from prefdistill.models.hf import format_prompt, resolve_prompt_format, uses_special_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=cfg.trust_remote_code)
    fmt = resolve_prompt_format(tokenizer, cfg.prompt_format, cfg.name_or_path)
    text = format_prompt(tokenizer, MARKER, fmt)
    return json.dumps([fmt, text, tokenizer(text, add_special_tokens=uses_special_tokens(fmt))["input_ids"]])

