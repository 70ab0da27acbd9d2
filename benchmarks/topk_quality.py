"""KD from cached teacher top-k against full-vocabulary KD, on the rows `prefdistill bench bench_topk` trained.

Reads the bench's run folder: each entry's chosen (setting, step) from RUN/bench/topk/
selection.json, its test generations and evaluation-judge scores at that step for every
seed, and each cache's size (RUN/teacher_signal/topk_kK.bin). The references are scored
once more by the same evaluation judge. For every top-k entry: win rate and ROUGE-L, and
the paired difference to full KD on both (two-level bootstrap over seeds and whole groups
of prompts, as the bench's other comparisons). Writes benchmarks/results/topk_quality.json.

    HF_HUB_OFFLINE=1 python benchmarks/topk_quality.py --run runs/bench
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefdistill.bench.numbers import seed_outcomes
from prefdistill.bench.plan import seeds_of, settings_hash
from prefdistill.bench.records import TestResult
from prefdistill.bench.runner import Bench
from prefdistill.cli import packaged_config
from prefdistill.config.checks import load_bench_config
from prefdistill.evaluation.metrics import paired_difference_seeds
from prefdistill.io import group_of, read_json, write_json
from prefdistill.signal.topk_cache import bytes_per_token

FULL = "kd"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the bench's run folder (output_dir/name)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "topk_quality.json")
    args = ap.parse_args()
    cfg, bench = load_bench_config(packaged_config("bench_topk"), [f"output_dir={args.run.parent}", f"name={args.run.name}"])
    b = Bench(cfg, bench, config_name="bench_topk")
    test = b.pipe.artifacts.splits["test"]
    refs = [e.target for e in test]
    ref_scores = b.graders["eval"].score([e.prompt for e in test], refs)
    selection = read_json(b.paths.report_file("selection.json"))
    opts = dict(n_boot=cfg.eval.n_bootstrap, seed=cfg.seed, groups=[group_of(e) for e in test])  # whole groups resampled
    outcomes, rows = {}, {}
    for entry in bench.methods:
        if entry.method != "kd":
            continue
        chosen = selection[entry.name]
        lr = chosen["setting"]["lr"]
        tests = []
        for seed in seeds_of(entry, bench):
            (folder,) = b.paths.runs.glob(f"{entry.name}-{settings_hash(entry)}-lr{lr:g}-seed{seed}-*")
            tests.append(TestResult.from_json(read_json(folder / f"test_step{chosen['step']}.json")))
        outcomes[entry.name] = seed_outcomes([t.generations for t in tests], [t.judge_scores for t in tests], ref_scores, refs)
        k = entry.params.get("k") if entry.params.get("signal") == "topk" else None
        cache = cfg.run_dir / "teacher_signal" / f"topk_k{k}.bin"
        rows[entry.name] = {"k": k, "lr": lr, "step": chosen["step"], "seeds": len(tests),
                            "win_rate": 100 * float(outcomes[entry.name]["win_rate"].mean()),
                            "rougeL": 100 * float(outcomes[entry.name]["rougeL"].mean()),
                            "bytes_per_token": bytes_per_token(cache) if k else None}
    for name, row in rows.items():
        if name != FULL:
            row["vs_full_kd"] = paired_difference_seeds(outcomes[name]["win_rate"], outcomes[FULL]["win_rate"], **opts)
            row["rougeL_vs_full_kd"] = paired_difference_seeds(outcomes[name]["rougeL"], outcomes[FULL]["rougeL"], **opts)
    vocab = b.pipe.artifacts.load("student").tokenizer.__len__()
    result = {"config": "bench_topk", "n_test": len(test), "judge": "the bench's evaluation judge (held-out)",
              "full_vocabulary_float16_bytes_per_token": 2 * vocab, "rows": rows}
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
