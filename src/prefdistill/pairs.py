"""Resumable sampling and PLaD pseudo-preference pairs (teacher output ≻ student output).

    samples = sample_resumable(load_teacher, examples, sampling, run_dir / "samples" / "teacher", ...)
    pairs = build_pairs(examples, teacher_samples, student_samples, meta)

Samples are written in chunks of prompts, each chunk atomically; a restart reads the
chunks already there and generates only the missing ones, so nothing is generated twice.
The model is loaded only when a chunk is missing. The pairs file is plain JSONL with the
columns preference trainers expect (`prompt`, `chosen`, `rejected`) plus metadata:

    datasets.load_dataset("json", data_files="runs/NAME/pairs/pairs.jsonl")
"""
from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from prefdistill.config import SamplingConfig
from prefdistill.io import Example, read_json, read_jsonl, write_json, write_jsonl


def _chunk_path(out_dir: Path, k: int) -> Path:
    return out_dir / f"chunk_{k:05d}.jsonl"


def sample_resumable(load_model: Callable[[], object], examples: list[Example], sampling: SamplingConfig, out_dir: Path, *,
                     chunk_size: int, seed: int, desc: str, model_name: str) -> dict[str, list[str]]:
    """`sampling.num_samples` completions per example id, generated in resumable chunks."""
    out_dir = Path(out_dir)
    meta = {"model": model_name, "sampling": asdict(sampling), "seed": seed, "chunk_size": chunk_size}
    meta_path = out_dir / "meta.json"
    if meta_path.is_file() and read_json(meta_path) != meta:
        raise ValueError(
            f"{out_dir} holds samples made with other settings ({read_json(meta_path)}); "
            "delete that folder or use a new run name to sample again"
        )
    write_json(meta_path, meta)
    chunks = [examples[i:i + chunk_size] for i in range(0, len(examples), chunk_size)]
    results: dict[str, list[str]] = {}
    model = None
    for k, chunk in enumerate(chunks):
        path = _chunk_path(out_dir, k)
        if path.is_file():
            rows = read_jsonl(path)
            if [r["id"] for r in rows] != [e.id for e in chunk]:
                raise ValueError(f"{path} was written for other prompts; delete {out_dir} or use a new run name")
        else:
            if model is None:
                model = load_model()
            texts = model.generate([e.prompt for e in chunk], sampling, seed=seed + k, desc=f"{desc} [{k + 1}/{len(chunks)}]")
            rows = [{"id": e.id, "prompt": e.prompt, "samples": t} for e, t in zip(chunk, texts)]
            write_jsonl(path, rows)
        results.update({r["id"]: r["samples"] for r in rows})
    return results


def build_pairs(examples: list[Example], teacher_samples: dict[str, list[str]], student_samples: dict[str, list[str]],
                meta: dict) -> tuple[list[dict], dict]:
    """One pair per (example, sample index): chosen = teacher sample, rejected = student sample.

    Pairs with an empty side or identical sides carry no preference signal and are
    skipped; the counts are returned so the report can say how many.
    """
    pairs, skipped = [], {"empty": 0, "identical": 0}
    for ex in examples:
        for j, (chosen, rejected) in enumerate(zip(teacher_samples[ex.id], student_samples[ex.id])):
            if not chosen.strip() or not rejected.strip():
                skipped["empty"] += 1
                continue
            if chosen.strip() == rejected.strip():
                skipped["identical"] += 1
                continue
            pairs.append({
                "id": f"{ex.id}#{j}", "prompt": ex.prompt, "chosen": chosen, "rejected": rejected,
                "chosen_source": "teacher", "rejected_source": "student", "reference": ex.target,
                "relabelled": False, "swapped": False, **meta,
            })
    return pairs, skipped


def relabel(pairs: list[dict], judge, fraction: float, seed: int) -> int:
    """Let the judge order a seeded `fraction` of pairs (PLaD's "real preference pairs").

    A pair is swapped when the judge scores the student side higher. Returns the number
    of swaps; each relabelled pair records both judge scores.
    """
    if fraction <= 0 or not pairs:
        return 0
    chosen_idx = sorted(random.Random(seed).sample(range(len(pairs)), round(fraction * len(pairs))))
    batch = [pairs[i] for i in chosen_idx]
    prompts = [p["prompt"] for p in batch]
    s_chosen = judge.score(prompts, [p["chosen"] for p in batch])
    s_rejected = judge.score(prompts, [p["rejected"] for p in batch])
    swaps = 0
    for p, a, b in zip(batch, s_chosen, s_rejected):
        p["relabelled"], p["judge_chosen"], p["judge_rejected"] = True, a, b
        if b > a:
            p["chosen"], p["rejected"] = p["rejected"], p["chosen"]
            p["chosen_source"], p["rejected_source"] = p["rejected_source"], p["chosen_source"]
            p["judge_chosen"], p["judge_rejected"] = b, a
            p["swapped"] = True
            swaps += 1
    return swaps


def attach_scores(pairs: list[dict], kind: str, judge=None) -> None:
    """Scores s(y; x) of both sides for margin calibration: ROUGE-L F1 against the reference, or the judge."""
    if kind == "none" or not pairs:
        return
    if kind == "rouge":
        from prefdistill.metrics import rouge_per_example

        missing = [p["id"] for p in pairs if not p["reference"]]
        if missing:
            raise ValueError(f"pairs.score=rouge needs references; pair {missing[0]} has none")
        refs = [p["reference"] for p in pairs]
        chosen = rouge_per_example([p["chosen"] for p in pairs], refs)
        rejected = rouge_per_example([p["rejected"] for p in pairs], refs)
    else:
        prompts = [p["prompt"] for p in pairs]
        chosen = judge.score(prompts, [p["chosen"] for p in pairs])
        rejected = judge.score(prompts, [p["rejected"] for p in pairs])
    for p, a, b in zip(pairs, chosen, rejected):
        p["chosen_score"], p["rejected_score"], p["score_kind"] = float(a), float(b), kind


def load_pairs(path: Path) -> list[dict]:
    rows = read_jsonl(path)
    for i, r in enumerate(rows):
        for col in ("prompt", "chosen", "rejected"):
            if not isinstance(r.get(col), str) or not r[col].strip():
                raise ValueError(f"{path}: row {i} has an empty or missing {col!r}")
    return rows
