# python benchmarks/oracle_temperature.py RUN/bench/calibration      (after a bench run with calibration on)
"""The teacher oracle's temperature τ, checked against the gaps it will see (bench_winrate.yaml, docs/derivations.md).

The teacher oracle prefers y over y′ with P = σ((ℓ(y) − ℓ(y′)) / τ), ℓ the teacher's mean per-token
log-prob. A bench run's calibration candidates (K teacher and K SFT-student samples per test prompt, each
scored by the teacher: RUN/bench/calibration/{candidates,teacher}.json) give the gaps |ℓ(y) − ℓ(y′)| the
teacher sees between two samples of one prompt, by where the two came from. The win-rate methods' oracle
compares the student's own samples, so the student-student gaps are the ones τ must spread over (0, 1);
the design target (bench_winrate.yaml) maps the typical gap to σ(1.5) ≈ 0.82, so τ = median gap / 1.5.
No model runs here: the scores are the ones the bench stored.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from prefdistill.io import read_json, write_json  # noqa: E402

TARGET_LOGIT = 1.5  # a typical gap -> σ(1.5) ≈ 0.82: neither ½ everywhere nor a hard argmax


def gaps_by_pair(candidates: dict, teacher: dict) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for sources, scores in zip(candidates["sources"], teacher["scores"]):
        for i, j in itertools.combinations(range(len(scores)), 2):
            out.setdefault("-".join(sorted((sources[i], sources[j]))), []).append(abs(scores[i] - scores[j]))
    return {k: np.asarray(v) for k, v in out.items()}


def summary(gaps: np.ndarray, taus: list[float]) -> dict:
    return {"pairs": int(gaps.size), "median_gap": float(np.median(gaps)),
            "quartiles": [float(q) for q in np.percentile(gaps, [25, 75])],
            "by_tau": {f"{t:g}": {"median_preference": float(np.median(1 / (1 + np.exp(-gaps / t)))),
                                  "share_above_0.95": float(np.mean(1 / (1 + np.exp(-gaps / t)) > 0.95))} for t in taus}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("calibration", type=Path, help="RUN/bench/calibration of a bench run")
    ap.add_argument("--taus", default="0.1,0.3,0.45,1.0")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/oracle_temperature.json"))
    args = ap.parse_args(argv)
    taus = [float(t) for t in args.taus.split(",")]
    gaps = gaps_by_pair(read_json(args.calibration / "candidates.json"), read_json(args.calibration / "teacher.json"))
    own = gaps.get("student-student")
    result = {"benchmark": "teacher-oracle temperature from the teacher's log-likelihood gaps between two samples of a prompt",
              "command": "python benchmarks/oracle_temperature.py " + " ".join(argv or sys.argv[1:]),
              "source": str(args.calibration), "target": f"median student-student gap -> sigmoid({TARGET_LOGIT})",
              "by_pair": {k: summary(v, taus) for k, v in sorted(gaps.items())},
              "suggested_tau": None if own is None else round(float(np.median(own)) / TARGET_LOGIT, 2)}
    write_json(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
