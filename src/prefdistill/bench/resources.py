"""What a bench job costs beyond its wall time: peak memory, and the tokens its training rows cost to make.

    reset_peak_memory(); ...train...; peak_memory()      # {"mb": ..., "kind": "GPU allocated" | "process RSS"}
    data_tokens(cfg, needs, rows)                        # {"data_teacher_generated": ..., ...}
"""
from __future__ import annotations

import os
import resource
from pathlib import Path

import torch

from prefdistill.methods.common import student_side, teacher_side
from prefdistill.models import load_tokenizer


def reset_peak_memory() -> None:
    """Start a new peak-memory window (CUDA allocator, or Linux's VmHWM via clear_refs)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: ru_maxrss (the whole process's peak) is reported instead


def peak_memory() -> dict:
    """{"mb": peak since reset_peak_memory, "kind": what was measured}."""
    if torch.cuda.is_available():
        return {"mb": torch.cuda.max_memory_allocated() / 2**20, "kind": "GPU allocated"}
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"mb": int(line.split()[1]) / 1024, "kind": "process RSS"}
    except OSError:
        pass
    return {"mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "kind": "process RSS (whole run)"}


def data_tokens(cfg, needs: frozenset[str], rows: list[dict]) -> dict:
    """Tokens the method's training rows cost to make: the samples it reads, the teacher scores stored with them."""
    def count(model_cfg, texts):
        tok = load_tokenizer(model_cfg)
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    out = {}
    if "teacher_samples" in needs:
        out["data_teacher_generated"] = count(cfg.teacher, [teacher_side(r) for r in rows])
    if "student_samples" in needs:
        out["data_student_generated"] = count(cfg.student, [student_side(r) for r in rows])
    if "teacher_pair_logps" in needs:
        out["data_teacher_scored"] = count(cfg.teacher, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
    return out
