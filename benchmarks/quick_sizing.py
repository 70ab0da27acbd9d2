"""Which SFT budgets `bench --quick` can cut: the full and the quick bench's models, graded together.

Reads the validation generations both benches cached (RUN/bench/val/{teacher,student_sft}/)
and grades them all with the full bench's evaluation judge, so the four models are compared
on the same prompts by the same judge: the teacher after 60 and after 30 SFT steps, the
student after 100 and after 50. Writes benchmarks/results/bench_quick_sizing.json.

    python benchmarks/quick_sizing.py --full runs/bench --quick runs/bench-quick
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefdistill.bench.runner import Bench
from prefdistill.cli import packaged_config
from prefdistill.config.checks import load_bench_config
from prefdistill.evaluation.metrics import paired_difference
from prefdistill.io import group_of, write_json

PAIRS = [("teacher_full", "student_full"), ("teacher_quick", "student_quick"), ("teacher_full", "teacher_quick"),
         ("student_quick", "student_full"), ("teacher_full", "student_quick")]


def cached_generations(folder: Path, ids: list[str]) -> list[str]:
    rows = {r["id"]: r["samples"][0] for r in map(json.loads, (folder / "samples.jsonl").read_text().splitlines())}
    return [rows[i] for i in ids]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", type=Path, required=True, help="the full bench's run folder")
    ap.add_argument("--quick", type=Path, required=True, help="the quick bench's run folder")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_quick_sizing.json")
    args = ap.parse_args()
    cfg, bench = load_bench_config(packaged_config("bench"), [f"output_dir={args.full.parent}", f"name={args.full.name}"])
    b = Bench(cfg, bench, config_name="bench")
    val = b.pipe.artifacts.splits["validation"]
    ids = [e.id for e in val]
    folders = {"teacher_full": args.full / "bench/val/teacher", "student_full": args.full / "bench/val/student_sft",
               "teacher_quick": args.quick / "bench/val/teacher", "student_quick": args.quick / "bench/val/student_sft"}
    wins = {name: b.val_wins(cached_generations(folder, ids), val) for name, folder in folders.items()}
    steps = {name: json.loads((folder.parent.parent.parent / "checkpoints" / f"{name.split('_')[0]}_sft" /
                               "prefdistill_checkpoint.json").read_text())["steps"] for name, folder in folders.items()}
    result = {"n_val": len(val), "judge": "the full bench's evaluation judge", "sft_steps": steps,
              "win_rate": {name: 100 * sum(w) / len(w) for name, w in wins.items()},
              "differences": {f"{a} - {c}": paired_difference(wins[a], wins[c], n_boot=cfg.eval.n_bootstrap, seed=cfg.seed,
                                                                 groups=[group_of(e) for e in val])
                              for a, c in PAIRS}}
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
