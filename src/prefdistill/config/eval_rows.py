"""The evaluation rows: the one definition of which models a report's table can have.

    for name, row in EVAL_ROWS.items(): row.role, row.checkpoint, row.label

`eval.rows` names some of them; the bench's base rows are those that do not depend on
the distillation method.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalRow:
    role: str  # whose weights: "teacher" or "student"
    checkpoint: str | None  # folder under RUN/checkpoints/ (None: the base weights)
    label: str  # "{method}" is replaced by the method's label


EVAL_ROWS = {
    "teacher": EvalRow("teacher", "teacher_sft", "Teacher (SFT)"),
    "student_init": EvalRow("student", None, "Initial student"),
    "student_sft": EvalRow("student", "student_sft", "SFT student"),
    "student_distill": EvalRow("student", "student_distill", "{method} student"),
}
BASE_ROWS = tuple(k for k, r in EVAL_ROWS.items() if "{method}" not in r.label)  # the bench trains the others
