"""Rows and parameters on which every registered method's loss is active, on the tiny models; a deterministic judge.

    rows = ROWS[get_method(name).consumes]                  # 4 rows of what the method reads
    params = from_dict(spec.params_cls, PARAMS.get(name, {}))
    oracle = BradleyTerryOracle(WordCountJudge())           # the win-rate methods' oracle

Used by tests/methods (every method trains two steps) and benchmarks/gpu_check.py (the same steps on a device).
"""
from __future__ import annotations

ROWS = {
    "targets": [{"prompt": "Summarize : the model learns data", "target": "the model learns"} for _ in range(4)],
    "prompts": [{"id": str(i), "prompt": "Summarize : the model learns data"} for i in range(4)],
    "pairs": [{"prompt": "Summarize : the model learns data", "chosen": "the model learns", "rejected": "data data",
               "reference": "the model", "chosen_score": 0.9, "rejected_score": 0.1,
               "teacher_chosen_logp": -4.0, "teacher_rejected_logp": -2.0} for _ in range(4)],
}
# Parameters that make each method's loss active on the rows above (a hinge with a large margin),
# exercise its sampling path and keep the tiny models' samples short.
PARAMS = {"plad": {"beta": 50.0}, "gkd": {"on_policy_fraction": 1.0, "max_new_tokens": 5}, "fdistill": {"max_new_tokens": 5},
          "minillm": {"max_new_tokens": 5}, "distillm": {"student_fraction": 0.5, "max_new_tokens": 5},
          "wind": {"samples": 3, "max_new_tokens": 5}, "sppo": {"samples": 2, "max_new_tokens": 5},
          "bond": {"n": 2, "max_new_tokens": 5}, "jbond": {"max_new_tokens": 5}}


class WordCountJudge:
    """A deterministic judge: a response's score is its number of words (the win-rate methods' oracle in tests)."""

    name = "word-count"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(len(r.split())) for r in responses]
