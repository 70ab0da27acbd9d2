# HF_HUB_OFFLINE=1 python benchmarks/calibration_scoring.py RUN/bench/calibration/candidates.json --prompts 24
"""Wall time of the bench's calibration scoring: every candidate after its own copy of the prompt (`LocalLM.score`)
against each prompt run once for its candidates (`LocalLM.score_groups`, the prompt's key/value cache shared).

On the bench's student (builtin:smollm2-100m, as the initial student row loads it: no LoRA, eval mode), the
first `--prompts` test prompts of a bench run's candidate set (RUN/bench/calibration/candidates.json: the
prompts are read from the run's RUN/data/test.jsonl), the same model and inputs for both arms, one after the
other, each once after a warm-up call. Records the largest difference between the two arms' numbers, the
load average before and after, and torch's thread count. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from prefdistill.config.schema import ModelConfig  # noqa: E402
from prefdistill.io import read_json, read_jsonl, write_json  # noqa: E402
from prefdistill.models.hf import LocalLM  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("candidates", type=Path, help="RUN/bench/calibration/candidates.json of a bench run")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--model", default="builtin:smollm2-100m")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration_scoring.json"))
    args = ap.parse_args(argv)
    cands = read_json(args.candidates)
    run = args.candidates.parents[2]
    prompts_by_id = {r["id"]: r["prompt"] for r in read_jsonl(run / "data" / "test.jsonl")}
    ids, groups = cands["ids"][:args.prompts], cands["candidates"][:args.prompts]
    prompts = [prompts_by_id[i] for i in ids]
    lm = LocalLM.load(ModelConfig(name_or_path=args.model))
    lm.model.eval()
    load_start = os.getloadavg()
    lm.score_groups(prompts[:1], groups[:1], normalize=True)  # warm-up (both arms share it)
    t0 = time.perf_counter()
    flat = lm.score([p for p, g in zip(prompts, groups) for _ in g], [c for g in groups for c in g], normalize=True)
    t_flat = time.perf_counter() - t0
    t0 = time.perf_counter()
    grouped = [s for g in lm.score_groups(prompts, groups, normalize=True) for s in g]
    t_grouped = time.perf_counter() - t0
    n = len(flat)
    prompt_tokens = [len(lm.prompt_ids(p)) for p in prompts]
    result = {
        "benchmark": "calibration candidate scoring: score (prompt with every candidate) vs score_groups (prompt once per group)",
        "command": "python benchmarks/calibration_scoring.py " + " ".join(argv or sys.argv[1:]),
        "model": args.model, "candidates_file": str(args.candidates), "prompts": len(prompts), "candidates": n,
        "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
        "score_s": round(t_flat, 2), "score_groups_s": round(t_grouped, 2), "speedup": round(t_flat / t_grouped, 2),
        "candidates_per_s": {"score": round(n / t_flat, 2), "score_groups": round(n / t_grouped, 2)},
        "max_abs_difference": max(abs(a - b) for a, b in zip(flat, grouped)),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "load_avg_1_5_15_start": [round(x, 2) for x in load_start],
                    "load_avg_1_5_15_end": [round(x, 2) for x in os.getloadavg()]},
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
