"""The win-rate rows of bench_winrate before and after the BOND / J-BOND fixes, graded by both judges.

    # before: the bench run by the code before the fixes (a git worktree of that commit), e.g. in /work/runs/before
    # after:  `prefdistill bench bench_winrate output_dir=/work/runs/after` with this code
    python benchmarks/winrate_before_after.py --before /work/runs/before/bench --after /work/runs/after/bench \
        --out benchmarks/results/winrate_before_after.json

Both runs share the data split, the SFT student and its test generations (the shared stages
do not depend on the fixes). Every row of both runs is graded by the `after` run's held-out
evaluation judge, and by the oracle that row's own run trained against (`before`: the one
judge of the old code, trained on all the reward data; `after`: the training judge, on the
other half of the documents). Paired differences against the SFT student, per prompt, with
95% bootstrap intervals over whole groups of prompts (`io.group_of`).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from prefdistill.evaluation.metrics import bootstrap_ci, paired_difference, pairwise_outcomes
from prefdistill.io import group_of, read_examples, read_json, read_jsonl
from prefdistill.judges import TrainedRewardJudge

METHODS = ("wind", "sppo", "bond", "jbond")


def job_result(run: Path, entry: str) -> dict | None:
    found = sorted((run / "bench" / "runs").glob(f"{entry}-*-seed0-data1-relabel0/result.json"))
    return read_json(found[-1]) if found else None


def sft_generations(run: Path, n: int) -> list[str]:
    rows = {r["id"]: r["samples"][0] for r in read_jsonl(run / "eval" / "samples" / "student_sft" / "samples.jsonl")}
    test = read_examples(run / "data" / "test.jsonl")
    assert len(test) == n
    return [rows[e.id] for e in test]


def graded(judge, prompts, refs, generations, sft, groups) -> dict:
    ref = judge.score(prompts, refs)
    wins = pairwise_outcomes(judge.score(prompts, generations), ref)
    sft_wins = pairwise_outcomes(judge.score(prompts, sft), ref)
    rate, low, high = bootstrap_ci(wins, n_boot=2000, seed=0, groups=groups)
    return {"win_rate": 100 * rate, "ci": [100 * low, 100 * high],
            "vs_sft": paired_difference(wins, sft_wins, n_boot=2000, seed=0, groups=groups),
            "sft_win_rate": 100 * statistics.fmean(sft_wins)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="run folder of the bench made before the fixes")
    p.add_argument("--after", type=Path, required=True, help="run folder of the bench made after them")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    test = read_examples(args.after / "data" / "test.jsonl")
    assert [e.id for e in test] == [e.id for e in read_examples(args.before / "data" / "test.jsonl")], "different test splits"
    prompts, refs = [e.prompt for e in test], [e.target for e in test]
    groups = [group_of(e) for e in test]  # the intervals resample whole groups (a paper's prompts together)
    sft = sft_generations(args.after, len(test))
    assert sft == sft_generations(args.before, len(test)), "the two runs' SFT students differ"
    evaluation = TrainedRewardJudge(args.after / "reward" / "heldout" / "model", name="heldout")
    oracles = {"before": TrainedRewardJudge(args.before / "reward" / "model", name="old (all reward data)"),
               "after": TrainedRewardJudge(args.after / "reward" / "model", name="training (half A)")}
    rows = []
    for version, run in (("before", args.before), ("after", args.after)):
        for method in METHODS:
            result = job_result(run, method)
            if result is None:
                continue
            gens = result["generations"]
            rows.append({"version": version, "method": method, "label": result["label"], "train_wall_s": result["cost"]["train_wall_s"],
                         "eval_judge": graded(evaluation, prompts, refs, gens, sft, groups),
                         "own_oracle": graded(oracles[version], prompts, refs, gens, sft, groups)})
            r = rows[-1]
            print(f"{version:6s} {r['label']:8s} eval judge {r['eval_judge']['win_rate']:5.1f} "
                  f"(vs SFT {r['eval_judge']['vs_sft']['diff']:+5.1f} [{r['eval_judge']['vs_sft']['ci'][0]:+.1f}, {r['eval_judge']['vs_sft']['ci'][1]:+.1f}])  "
                  f"own oracle {r['own_oracle']['win_rate']:5.1f} (vs SFT {r['own_oracle']['vs_sft']['diff']:+5.1f} "
                  f"[{r['own_oracle']['vs_sft']['ci'][0]:+.1f}, {r['own_oracle']['vs_sft']['ci'][1]:+.1f}])", flush=True)
    out = {"n_test": len(test), "judges": {"eval": "heldout reward model of the after run (half B of the documents, seed + 1)",
                                           "before_oracle": oracles["before"].name, "after_oracle": oracles["after"].name},
           "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
