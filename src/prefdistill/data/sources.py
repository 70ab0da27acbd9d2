"""Where a task's raw rows come from: local files, the Hugging Face hub, and the builtin PyPI datasets.

    raw = load_raw(cfg.data)        # {split name: [row dict, ...]}, read once; `prefdistill.data.splits` maps and splits them

  builtin:aclsum    ACLSum (PyPI `aclsum`): one example per (paper, aspect).
  builtin:chitchat  Chit Chat Challenge (PyPI `chitchat-dataset`): next-reply examples.
  a path            a .jsonl / .json / .parquet / .csv file (the train split), or a folder
                    of train.* / validation.* (val.*, dev.*) / test.* files.
  anything else     a `datasets` hub name: `datasets.load_dataset(source, subset)`.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from prefdistill.config.schema import DataConfig
from prefdistill.io import read_jsonl
from prefdistill.models.assets import looks_local, package_dir

def stable_hash(key: str) -> int:
    """A hash that is the same in every process (hash() is salted per process; splits must not change between runs)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}


def load_raw(cfg: DataConfig) -> dict[str, list[dict]]:
    """Raw rows per split name the source has ("train", "validation", "test", ...)."""
    source = cfg.source
    if source.startswith("builtin:"):
        builtins = {"builtin:aclsum": _aclsum_rows, "builtin:chitchat": _chitchat_rows}
        if source not in builtins:
            raise ValueError(f"data.source: unknown builtin {source!r}; choose from {sorted(builtins)}")
        return builtins[source]()
    if _looks_local(source):
        return _load_local(Path(source).expanduser())
    return _load_hub(source, cfg.subset)


def _looks_local(source: str) -> bool:
    # A missing "train.jsonl" must fail as "not found", not as a confusing hub lookup.
    # Hub names ("org/name", "org/name-v1.1") carry no alphabetic file extension.
    return looks_local(source) or re.fullmatch(r"\.[A-Za-z]\w*", Path(source).suffix) is not None


def _load_local(path: Path) -> dict[str, list[dict]]:
    if not path.exists():
        raise ValueError(f"data.source: file or folder not found: {path} "
                         "(a path is read as local data, never looked up on the hub)")
    if path.is_file():
        return {"train": _read_files([path])}
    by_split: dict[str, list[Path]] = {}
    for file in sorted(path.iterdir()):
        stem = re.split(r"[-_.]", file.name, maxsplit=1)[0].lower()  # "train-00000-of-00002"
        if file.is_file() and stem in SPLIT_ALIASES:
            by_split.setdefault(SPLIT_ALIASES[stem], []).append(file)
    if not by_split:
        raise ValueError(f"data.source: folder {path} has no split files; name them train.*, "
                         f"validation.* (or val.*, dev.*) and test.* with one of {list(FILE_BUILDERS)}")
    return {split: _read_files(files) for split, files in by_split.items()}


def _read_files(files: list[Path]) -> list[dict]:
    """Rows of one split stored in one or more files of the same type."""
    suffixes = {f.suffix.lower() for f in files}
    if not suffixes <= FILE_BUILDERS.keys():
        bad = sorted(str(f) for f in files if f.suffix.lower() not in FILE_BUILDERS)
        raise ValueError(f"data.source: unsupported file type {bad}; supported: {list(FILE_BUILDERS)}")
    builders = {FILE_BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise ValueError(f"data.source: one split mixes file types {sorted(map(str, files))}")
    files = [f for f in files if f.stat().st_size > 0]  # datasets fails obscurely on empty files
    if not files:
        return []
    if all(f.suffix.lower() == ".jsonl" for f in files):
        # Read here, not by datasets: a bad byte or line then names its file and line (datasets
        # raises a bare UnicodeDecodeError, or "An error occurred while generating the dataset").
        return [row for f in files for row in read_jsonl(f)]
    import datasets  # slow import, only needed here

    try:
        ds = datasets.load_dataset(builders.pop(), data_files=[str(f) for f in files], split="train")
    except Exception as e:  # Arrow / decoding errors surface deep inside datasets
        raise ValueError(f"data.source: could not read {[str(f) for f in files]}: {type(e).__name__}: {e}") from e
    return ds.to_list()


def _load_hub(name: str, subset: str | None) -> dict[str, list[dict]]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, subset)
    except Exception as e:  # offline, unknown name, gated: say which key to fix
        raise ValueError(f"data.source: could not load {name!r} with datasets.load_dataset "
                         f"(read as a hub name; write a local file as ./{name}): {e}") from e
    return {split: ds.to_list() for split, ds in dataset.items()}


ACLSUM_ASPECTS = {
    "challenge": "the challenge this paper addresses",
    "approach": "the approach this paper proposes",
    "outcome": "the outcome this paper reports",
}


def _aclsum_rows() -> dict[str, list[dict]]:
    folder = package_dir("aclsum", "pip install aclsum==0.1.2") / "dataset"
    files = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
    return {split: [row for paper in read_jsonl(folder / name) for row in _aclsum_examples(paper)]
            for split, name in files.items()}


def _aclsum_examples(paper: dict) -> list[dict]:
    abstract = _detokenize(" ".join(paper["sentences"]["abstract"]))
    return [{"id": f"{paper['id']}-{aspect}",
             "prompt": f"Summarize {phrase} in one sentence.\n\n{abstract}",
             "target": paper["summary"][aspect],
             "group": paper["id"], "aspect": aspect, "title": paper["title"]}
            for aspect, phrase in ACLSUM_ASPECTS.items()]


def _detokenize(text: str) -> str:
    # ACLSum sentences come pre-tokenised ("in answer extraction ." / "( QA )").
    text = re.sub(r" ([,.;:)?!%])", r"\1", text)
    return text.replace("( ", "(")


CHITCHAT_CONTEXT_TURNS = 4  # turns shown before the reply to write
CHITCHAT_PER_CONVERSATION = 3  # replies taken from one conversation, spread over it
CHITCHAT_TARGET_WORDS = (3, 40)  # shorter replies say little; longer ones exceed max_new_tokens


def _chitchat_rows() -> dict[str, list[dict]]:
    path = package_dir("chitchat_dataset", "pip install chitchat-dataset==0.9.0") / "dataset.json"
    conversations = json.loads(path.read_text(encoding="utf-8"))
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for conv_id, conv in conversations.items():
        splits[_hash_split(conv_id)].extend(_chitchat_examples(conv_id, conv["messages"]))
    return splits


def _hash_split(key: str) -> str:
    # The dataset ships no splits: a hash of the id gives the same 80/10/10 split everywhere.
    bucket = stable_hash(key) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def _chitchat_examples(conv_id: str, messages: list[list[dict]]) -> list[dict]:
    turns = [turn for turn in messages if turn]  # a turn: consecutive messages of one sender
    texts = [" ".join(" ".join(m["text"].split()) for m in turn) for turn in turns]
    labels: dict[str, str] = {}
    speakers = [labels.setdefault(t[0]["sender"], chr(ord("A") + len(labels))) for t in turns]
    low, high = CHITCHAT_TARGET_WORDS
    ks = [k for k in range(2, len(texts)) if low <= len(texts[k].split()) <= high]
    if len(ks) > CHITCHAT_PER_CONVERSATION:
        n = CHITCHAT_PER_CONVERSATION
        ks = [ks[round(i * (len(ks) - 1) / (n - 1))] for i in range(n)]
    rows = []
    for k in ks:
        shown = range(max(0, k - CHITCHAT_CONTEXT_TURNS), k)
        context = "\n".join(f"{speakers[j]}: {texts[j]}" for j in shown)
        rows.append({"id": f"{conv_id}-{k}", "group": conv_id, "target": texts[k],
                     "prompt": f"{context}\nWrite the next reply from {speakers[k]}."})
    return rows


# ----------------------------------------------------------------------------- mapping
