"""PLaD pseudo-preference pairs (teacher output ≻ student output), relabelling and scores.

    pairs, skipped = build_pairs(examples, teacher_samples, student_samples, meta)

The samples come from `prefdistill.sampling` (resumable). The pairs file is plain JSONL
with the columns preference trainers expect (`prompt`, `chosen`, `rejected`) plus metadata:

    datasets.load_dataset("json", data_files="runs/NAME/pairs/pairs.jsonl")
"""
from __future__ import annotations

import random
from pathlib import Path

from prefdistill.io import Example, read_jsonl, write_jsonl


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


def record_failures(failures: dict[str, dict[str, dict]], n_prompts: int, path: Path, max_fraction: float) -> int:
    """List the prompts each role could not answer in `path`; stop when more than `max_fraction` of the prompts failed.

    `failures` maps a role to {example id: failure}; returns the number of prompts that failed.
    """
    from prefdistill.sampling import IncompleteSampling

    rows = [{"role": role, **f} for role, by_id in failures.items() for f in by_id.values()]
    write_jsonl(path, rows)
    failed = len({r["id"] for r in rows})
    if not failed:
        return 0
    print(f"[prefdistill] pairs: {failed} of {n_prompts} prompts could not be answered; listed in {path}", flush=True)
    for r in rows[:5]:
        print(f"  {r['role']} {r['id']} ({r['kind']}, {r['attempts']} attempts): {r['prompt'][:80]!r}", flush=True)
    if failed > max_fraction * n_prompts:
        raise IncompleteSampling(f"pairs: {failed} of {n_prompts} prompts failed, more than pairs.max_failed_fraction="
                                 f"{max_fraction}; see {path}. Run again to retry only those prompts (every answered "
                                 "prompt is kept).")
    return failed


def load_pairs(path: Path) -> list[dict]:
    rows = read_jsonl(path)
    for i, r in enumerate(rows):
        for col in ("prompt", "chosen", "rejected"):
            if not isinstance(r.get(col), str) or not r[col].strip():
                raise ValueError(f"{path}: row {i} (id {r.get('id')!r}) has an empty or missing {col!r}, got {r.get(col)!r:.60}")
    return rows
