"""The teacher's top-k token ids and log-probs, computed once into a compact, resumable cache.

    signal = build_topk_cache(load_teacher, rows, 20, RUN / "teacher_signal" / "topk_k20.bin",
                              tokenizer=student.tokenizer, teacher_id="teacher:...")   # a TopkSignal; signal.stats
    ids, logprobs, mask = signal.lookup(prompts, completion_ids)   # (B, C, k), (B, C, k), (B, C), laid out like completion_logits
    bytes_per_token(path)                                           # what the cache costs on disk

A loss is handed the `TopkSignal` (the `teacher_topk` need), never a path: the records are
addressed by content (teacher, settings, prompt, completion tokens), so any batch of the rows
it was built for, in any order or subset, finds its records.

Token-level methods then train from the cache (`prefdistill.losses.topk_forward_kl`)
without the teacher in memory. The positions are those the student is trained on: each
row's completion tokens (the student's tokenizer, EOS appended, as `completion_token_ids`
makes them), after the teacher's own formatting of the prompt, as `paired_states` scores them.

The top-k comes from a local model's logits (`completion_logits`), or from a teacher that
gives it itself (`completion_topk`: vLLM's prompt log-probs, a server's echoed `top_logprobs`;
`prefdistill.models.common.TopkTeacher`), at temperature 1 only. Ids such a teacher gave that
the student's vocabulary lacks are dropped and their slots padded with (id 0, log-prob -inf),
which `topk_forward_kl` counts as no outcome: one record format for every source.

The file is an append-only sequence of binary records, one per row, each written with
one write and fsynced, like the sampling journal (`prefdistill.data.sampling`):

    header  <4s16sIHBB: b"TOPK", key (16 bytes), n positions, k, id bytes (2|4), log-prob bytes (2|4)
    ids     n·k little-endian uint16 (vocabularies up to 65,536 tokens) or uint32
    logps   n·k little-endian float16 (default) or float32, sorted high to low per position
    crc32   of header and payload (4 bytes)

so a row costs 32 + n·k·(id bytes + log-prob bytes) bytes: 4k + 32/n bytes per token for a
small vocabulary, 6k + 32/n for a large one (float16). A record cut short by a crash (or a
last record whose checksum fails) is dropped when the cache is opened for writing, and a
rerun computes only the rows missing. The key is a hash of the teacher's identity, k, the
temperature, the storage dtype, the prompt text and the completion's token ids, so a rerun, or
another run over the same rows, reuses every record. The pipeline's identity of a teacher
(`prefdistill.signal.fingerprint`) hashes its weight files (and its LoRA adapters') and its
prompt format rendered through its chat template: a teacher retrained into the same folder, or
an edited template, computes new records; a teacher behind an API is known by its server and name.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from prefdistill.io import is_main_process
from prefdistill.io import wait_for_everyone
from prefdistill.models.alignment import TokenizerBridge
from prefdistill.models.common import TopkFailure
from prefdistill.models.logprobs import completion_token_ids
from prefdistill.progress import bar
from prefdistill.signal.failures import SignalFailures

MAGIC = b"TOPK"
HEADER = struct.Struct("<4s16sIHBB")
CRC = struct.Struct("<I")
LOGPROB_DTYPES = ("float16", "float32")  # how log-probs are stored: 2 bytes each, or exact
FLOATS = {2: "<f2", 4: "<f4"}
INTS = {2: "<u2", 4: "<u4"}


class Record(NamedTuple):
    offset: int  # where the record starts in the file
    n: int  # positions
    k: int  # ids per position
    id_bytes: int
    lp_bytes: int

    @property
    def size(self) -> int:
        return HEADER.size + self.n * self.k * (self.id_bytes + self.lp_bytes) + CRC.size


def topk_of(model_logits: torch.Tensor, k: int, *, temperature: float = 1.0, dtype: str = "float16") -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely ids and their log-probs under softmax(logits / temperature), most likely first.

    Args: model_logits (..., V). Returns ids (..., min(k, V)) int32 and log-probs of the same
    shape in `dtype` (float16 rounds to about 3 significant digits; float32 is exact).
    """
    logprobs = F.log_softmax(model_logits.float() / temperature, -1)
    values, ids = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    return ids.to(torch.int32), values.to(getattr(torch, dtype))


def topk_key(teacher_id: str, k: int, temperature: float, dtype: str, prompt: str, completion_ids: list[int]) -> str:
    """The cache key of one row (hex): a rerun with the same teacher, settings and tokens finds its record."""
    blob = json.dumps([teacher_id, k, temperature, dtype, prompt, list(completion_ids)], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def encode_record(key: str, ids: torch.Tensor, logprobs: torch.Tensor, vocab_size: int) -> bytes:
    """One record's bytes: ids (n, k) and log-probs (n, k) of a row, ids in 2 bytes when the vocabulary allows."""
    id_bytes = 2 if vocab_size <= 1 << 16 else 4
    lp_bytes = 2 if logprobs.dtype == torch.float16 else 4
    n, k = ids.shape
    payload = (HEADER.pack(MAGIC, bytes.fromhex(key), n, k, id_bytes, lp_bytes)
               + ids.cpu().numpy().astype(INTS[id_bytes]).tobytes() + logprobs.cpu().numpy().astype(FLOATS[lp_bytes]).tobytes())
    return payload + CRC.pack(zlib.crc32(payload))


def scan(path: Path) -> tuple[dict[str, Record], int, Record | None]:
    """(key -> record, end of the last complete record, that record) of a cache file; a cut-short tail is ignored."""
    index: dict[str, Record] = {}
    offset, last = 0, None
    if not path.is_file():
        return index, offset, last
    size = path.stat().st_size
    with open(path, "rb") as f:
        while offset + HEADER.size <= size:
            f.seek(offset)
            magic, key, n, k, id_bytes, lp_bytes = HEADER.unpack(f.read(HEADER.size))
            if magic != MAGIC or id_bytes not in INTS or lp_bytes not in FLOATS:
                break
            rec = Record(offset, n, k, id_bytes, lp_bytes)
            if offset + rec.size > size:
                break
            index[key.hex()] = rec  # the last record of a key wins (a failed row asked again)
            offset, last = offset + rec.size, rec
    return index, offset, last


def read_record(f, rec: Record) -> tuple[np.ndarray, np.ndarray]:
    """ids (n, k) int64 and log-probs (n, k) float32 of one record; a failed checksum raises."""
    f.seek(rec.offset)
    data = f.read(rec.size)
    if len(data) != rec.size or zlib.crc32(data[:-CRC.size]) != CRC.unpack(data[-CRC.size:])[0]:
        raise ValueError(f"{f.name}: the top-k record at byte {rec.offset} is corrupt; delete the file to recompute it")
    split = HEADER.size + rec.n * rec.k * rec.id_bytes
    ids = np.frombuffer(data[HEADER.size:split], dtype=INTS[rec.id_bytes]).astype(np.int64).reshape(rec.n, rec.k)
    lps = np.frombuffer(data[split:-CRC.size], dtype=FLOATS[rec.lp_bytes]).astype(np.float32).reshape(rec.n, rec.k)
    return ids, lps


class TopkJournal:
    """The cache opened for appending: a torn last record is cut off now, every append is fsynced."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.index, end, last = scan(self.path)
        if last is not None:
            with open(self.path, "rb") as f:
                try:
                    read_record(f, last)
                except ValueError:  # written but not all of it reached the disk
                    end = last.offset
                    self.index = {k: r for k, r in self.index.items() if r.offset < end}
        if self.path.is_file() and self.path.stat().st_size > end:
            with open(self.path, "r+b") as f:
                f.truncate(end)

    def append(self, key: str, record: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            offset = f.tell()
            f.write(record)
            f.flush()
            os.fsync(f.fileno())
        _, _, n, k, id_bytes, lp_bytes = HEADER.unpack(record[:HEADER.size])
        self.index[key] = Record(offset, n, k, id_bytes, lp_bytes)


def build_topk_cache(teacher, rows: list[dict], k: int, path: Path, *, tokenizer, teacher_id: str, temperature: float = 1.0,
                     dtype: str = "float16", text_key: str | Callable[[dict], str] = "target", batch_size: int = 8,
                     desc: str = "teacher top-k", max_failed_fraction: float = 0.05, retry_failed: bool = False,
                     aligned: bool = False) -> "TopkSignal":
    """Cache the teacher's top-k at every completion position of `rows`; the `TopkSignal` that reads it back.

    rows: dicts with a "prompt" and the completion text under `text_key` (or `text_key(row)`,
    e.g. `prefdistill.methods.common.teacher_side` for the teacher's sample of a pair row), tokenised with the
    student's `tokenizer` as the token-level methods do (EOS appended). `teacher` is a model
    with `completion_topk` (a server or vLLM gives the top-k itself) or `completion_logits`, or
    a function that loads one, called only when some row is missing, so a rerun never loads it.
    Logits past len(tokenizer) (a padded output layer) are cut, as `paired_states` cuts them. Under `accelerate launch` the main process computes
    the missing rows and the others wait for it. The signal's `keys` are the rows' record keys, in order, and its
    `stats` {"rows", "computed", "failed", "bytes_per_token"}.

    A row the teacher cannot give (`TopkFailure`: a server's tokens that do not line up) gets a
    record of 0 positions, which `load_topk` gives an empty mask (the row is left out of the
    distillation term), and a line with its id and reason in `failures_path(path)`; a rerun does
    not ask for it again unless `retry_failed` (or its line is deleted). Above
    `max_failed_fraction` of `rows` failed, `SignalFailuresExceeded` names them.
    `aligned` (a teacher of another tokenizer): records keyed apart, from the teacher's logits only (`_aligned_topk`).
    """
    if dtype not in LOGPROB_DTYPES:
        raise ValueError(f"dtype must be one of {list(LOGPROB_DTYPES)}, got {dtype!r}")
    path = Path(path)
    text = text_key if callable(text_key) else (lambda r: r[text_key])
    teacher_id = f"{teacher_id}:aligned" if aligned else teacher_id
    ids = completion_token_ids(tokenizer, [text(r) for r in rows])
    keys = [topk_key(teacher_id, k, temperature, dtype, r["prompt"], i) for r, i in zip(rows, ids)]
    computed = 0
    if is_main_process():
        journal = TopkJournal(path)
        failures = SignalFailures(failures_path(path), max_fraction=max_failed_fraction, total=len(rows))
        todo = {key: (r["prompt"], i, str(r.get("id", f"row {n}"))) for n, (key, r, i) in enumerate(zip(keys, rows, ids))
                if key not in journal.index or (journal.index[key].n == 0 and (retry_failed or not failures.reason(key)))}
        failures.forget(todo)
        if todo:
            model = teacher() if callable(teacher) else teacher
            if aligned and hasattr(model, "completion_topk"):  # a server's own top-k comes in the student's ids
                raise ValueError("an aligned top-k cache (a teacher of another tokenizer) needs the teacher's logits")
            computed = _compute(model, list(todo.items()), (journal, failures), k, tokenizer=tokenizer,
                                temperature=temperature, dtype=dtype, batch_size=batch_size, desc=desc, aligned=aligned)
    wait_for_everyone()  # the cache is complete on disk before any process reads it
    index = _read_index(path) if path.is_file() else {}
    failed = [key for key in keys if key in index and index[key].n == 0]
    if failed:  # every process reads the same record, so all stop alike
        SignalFailures(failures_path(path), max_fraction=max_failed_fraction, total=len(rows)).check(set(failed))
    stats = {"rows": len(rows), "computed": computed, "failed": len(failed), "bytes_per_token": bytes_per_token(path)}
    return TopkSignal(path, teacher_id, k, temperature, dtype, tuple(keys), stats)


@dataclass(frozen=True)
class TopkSignal:
    """The teacher's cached top-k as a loss reads it: a cache file and the settings its records are keyed by."""
    path: Path
    teacher_id: str
    k: int
    temperature: float
    dtype: str
    keys: tuple[str, ...] = ()  # the record keys of the rows it was built for, in their order
    stats: dict = field(default_factory=dict, compare=False)

    def key(self, prompt: str, completion_ids: list[int]) -> str:
        return topk_key(self.teacher_id, self.k, self.temperature, self.dtype, prompt, completion_ids)

    def lookup(self, prompts: list[str], completion_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The top-k of a batch (ids (B, C, k), log-probs (B, C, k), mask (B, C)): its prompts and completion tokens."""
        return load_topk(self.path, [self.key(p, i) for p, i in zip(prompts, completion_ids)])

    def rows(self, indices=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The top-k of the rows it was built for (all, or those at `indices`), as `lookup` lays them out."""
        keys = self.keys if indices is None else [self.keys[i] for i in indices]
        return load_topk(self.path, list(keys))


def failures_path(path: Path) -> Path:
    """Where a cache lists the rows it holds no top-k for (`prefdistill.signal.failures`): topk_k20.failures.jsonl."""
    return Path(path).with_suffix(".failures.jsonl")


@torch.no_grad()
def _compute(teacher, todo: list[tuple[str, tuple[str, list[int], str]]], record: tuple, k: int, *, tokenizer,
             temperature: float, dtype: str, batch_size: int, desc: str, aligned: bool = False) -> int:
    """Run the teacher on the (key, (prompt, completion ids, row id)) still missing; append one record per row as it is done.

    A teacher with `completion_topk` (a server, vLLM: `prefdistill.models.common.TopkTeacher`)
    gives the top-k itself; any other is asked for `completion_logits` (on its own tokens of the text when `aligned`: a
    teacher of another tokenizer, `_aligned_topk`). record: (journal, failures),
    where a row the teacher could not give gets an empty record and a failure line.
    """
    journal, failures = record
    progress = bar(total=len(todo), desc=desc, unit="row")
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        prompts, completions = [p for _, (p, _, _) in chunk], [ids for _, (_, ids, _) in chunk]
        if hasattr(teacher, "completion_topk"):
            rows, vocab = _served_topk(teacher, prompts, completions, k, tokenizer=tokenizer, temperature=temperature,
                                       dtype=dtype)
        else:
            rows, vocab = _local_topk(teacher, prompts, completions, k, vocab=len(tokenizer), temperature=temperature,
                                      dtype=dtype, bridge=TokenizerBridge(tokenizer, teacher.tokenizer) if aligned else None)
        for (key, (prompt, _, row_id)), row in zip(chunk, rows):
            if isinstance(row, TopkFailure):
                failures.record(key, row_id, prompt, row.reason)
                row = (torch.zeros((0, min(k, vocab)), dtype=torch.int32), torch.zeros((0, min(k, vocab)), dtype=getattr(torch, dtype)))
            journal.append(key, encode_record(key, *row, vocab))
        progress.update(len(chunk))
    progress.close()
    return len(todo)


def _local_topk(teacher, prompts: list[str], completions: list[list[int]], k: int, *, vocab: int, temperature: float,
                dtype: str, bridge=None) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """([(ids (n, k), log-probs (n, k)) per row], ids' vocabulary) from the teacher's logits at the completion positions.

    Logits past the student's vocabulary (a padded output layer) are cut, as `paired_states` cuts them. With a `bridge`
    (`prefdistill.models.alignment.TokenizerBridge`: a teacher of another tokenizer) see `_aligned_topk`.
    """
    if bridge is not None:
        return _aligned_topk(teacher, prompts, completions, k, bridge, temperature=temperature, dtype=dtype), vocab
    logits, _, _ = teacher.completion_logits(prompts, completions)  # (B, C, V)
    cut = min(vocab, logits.shape[-1])
    top_ids, top_logps = topk_of(logits[..., :cut], k, temperature=temperature, dtype=dtype)  # (B, C, k) each
    width = logits.shape[1]  # completions end at the right edge: row b's n tokens are the last n positions
    return [(top_ids[b, width - len(ids):], top_logps[b, width - len(ids):]) for b, ids in enumerate(completions)], cut


def _aligned_topk(teacher, prompts: list[str], completions: list[list[int]], k: int, bridge, *, temperature: float,
                  dtype: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A teacher of another tokenizer: its top-k over its own vocabulary on its own tokens of each completion, placed at the
    student positions paired with them (`RowAlignment.pairs`) and mapped to the student's ids of the shared tokens
    (`TokenizerBridge.shared`). A teacher token the student's vocabulary lacks, and every slot of an unpaired student
    position, is padding (id 0, log-prob -inf): its mass is in the rest bucket (`prefdistill.losses.coarsen`), and a
    position with no valid slot carries no distillation term (`prefdistill.methods.common.cached_topk`)."""
    rows = [bridge.align(ids) for ids in completions]
    logits, _, _ = teacher.completion_logits(prompts, [r.teacher_ids for r in rows])  # (B, C_t, V_t)
    top_ids, top_logps = topk_of(logits[..., :len(teacher.tokenizer)], k, temperature=temperature, dtype=dtype)
    to_student = torch.full((len(teacher.tokenizer),), -1, dtype=torch.long)
    s_ids, t_ids = bridge.shared
    to_student[torch.tensor(t_ids, dtype=torch.long)] = torch.tensor(s_ids, dtype=torch.long)
    mapped = to_student[top_ids.long()]  # (B, C_t, k), -1 where the student lacks the token
    logps, order = top_logps.masked_fill(mapped < 0, float("-inf")).sort(-1, descending=True)  # records: high to low
    mapped = mapped.gather(-1, order)
    width, out = logits.shape[1], []
    for b, (ids, r) in enumerate(zip(completions, rows)):
        row_ids = torch.zeros((len(ids), top_ids.shape[-1]), dtype=top_ids.dtype)
        row_logps = torch.full((len(ids), top_ids.shape[-1]), float("-inf"), dtype=top_logps.dtype)
        off = width - len(r.teacher_ids)  # the teacher's completion ends at the right edge
        for j, i in r.pairs:
            row_ids[j] = mapped[b, off + i].clamp(min=0).to(row_ids.dtype)
            row_logps[j] = logps[b, off + i]
        out.append((row_ids, row_logps))
    return out


def _served_topk(teacher, prompts: list[str], completions: list[list[int]], k: int, *, tokenizer, temperature: float,
                 dtype: str) -> tuple[list[tuple[torch.Tensor, torch.Tensor] | TopkFailure], int]:
    """The same from a teacher that gives its top-k itself (or a `TopkFailure` for a row it cannot); log-probs rounded to `dtype`."""
    out = teacher.completion_topk(prompts, completions, k, tokenizer=tokenizer, temperature=temperature)
    rows = []
    for i, (row, completion) in enumerate(zip(out, completions)):
        if isinstance(row, TopkFailure):  # recorded by the caller
            rows.append(row)
            continue
        ids, logps = row
        if ids.shape != logps.shape or ids.shape[0] != len(completion):
            raise ValueError(f"{getattr(teacher, 'name', 'the teacher')}: top-k of row {i} ({prompts[i][:40]!r}...) has "
                             f"ids {ids.shape} and log-probs {logps.shape} for {len(completion)} completion tokens")
        rows.append((torch.from_numpy(np.asarray(ids, dtype=np.int64)),
                     torch.from_numpy(np.asarray(logps, dtype=np.float32)).to(getattr(torch, dtype))))
    return rows, len(tokenizer)


_INDEXES: dict[str, tuple[tuple[int, int], dict[str, Record]]] = {}


def _read_index(path: Path) -> dict[str, Record]:
    """The records of a cache, scanned once and again only when the file changed (training reads it every step)."""
    stat, name = path.stat(), str(path.resolve())
    stamp = (stat.st_size, stat.st_mtime_ns)
    if name not in _INDEXES or _INDEXES[name][0] != stamp:
        _INDEXES[name] = (stamp, scan(path)[0])
    return _INDEXES[name][1]


def load_topk(path: Path, keys: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cached top-k of a batch, one record key per row: ids (B, C, k) int64, log-probs (B, C, k) float32, mask (B, C).

    Laid out like `completion_logits` of the same rows (`stack_topk`); the keys are `topk_key`'s.
    """
    path = Path(path)
    index = _read_index(path) if path.is_file() else {}
    missing = [key for key in keys if key not in index]
    if missing:
        raise KeyError(f"{path}: no cached top-k for {len(missing)} row(s) (e.g. key {missing[0]}); build the cache for these rows")
    with open(path, "rb") as f:
        records = [read_record(f, index[key]) for key in keys]
    k = {ids.shape[1] for ids, _ in records}
    if len(k) > 1:
        raise ValueError(f"{path}: rows of one batch were cached with different k {sorted(k)}")
    return stack_topk(records)


def stack_topk(records: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows' top-k, ids (n_b, k) and log-probs (n_b, k) each, as one batch: ids (B, C, k) int64, log-probs (B, C, k)
    float32, mask (B, C), laid out like `completion_logits` (C the longest row, row b in its last n_b positions).

    Outside a row the ids are 0 and the log-probs (0, -inf, ...): a valid distribution, so a
    loss stays finite there before the mask removes it.
    """
    width, k = max(1, max(ids.shape[0] for ids, _ in records)), records[0][0].shape[1]
    out_ids = torch.zeros((len(records), width, k), dtype=torch.long)
    out_logps = torch.full((len(records), width, k), float("-inf"))
    out_logps[..., 0] = 0.0
    mask = torch.zeros((len(records), width), dtype=torch.long)
    for b, (ids, logps) in enumerate(records):
        n = ids.shape[0]
        if n:
            out_ids[b, width - n:] = torch.as_tensor(ids, dtype=torch.long)
            out_logps[b, width - n:] = torch.as_tensor(logps, dtype=torch.float32)
            mask[b, width - n:] = 1
    return out_ids, out_logps, mask


def bytes_per_token(path: Path) -> float:
    """Bytes on disk per cached position: the records' sizes (headers and checksums included) over their positions."""
    records = [r for r in scan(Path(path))[0].values() if r.n]  # not the empty records of failed rows
    tokens = sum(r.n for r in records)
    return sum(r.size for r in records) / tokens if tokens else 0.0
