# python benchmarks/alignment_cost.py [--rows 300] [--out benchmarks/results/alignment_cost.json]
"""What aligning two tokenizers costs and reaches, on real tokenizers and real text (ACLSum's references).

Pairs: SmolLM2 (byte-level BPE, 49,152 tokens) with Gemma-3 (SentencePiece-style, 262,144 tokens),
both ways, and SmolLM2 with itself through the general path (`vocabulary: aligned`). For each pair:
the shared tokens (`prefdistill.models.vocab_map.shared_tokens`) and the time to find them; per
completion, the time to align it (`TokenizerBridge.align`, uncached) and the share of the
student's completion positions that pair with a teacher position (the EOS included), the share of
characters inside multi-token spans, and the teacher's tokens per student token. Also how much of
the vocabulary the shared tokens are, on each side. Nothing is trained; only tokenizers load (the
Gemma tokenizer from its GGUF, without converting the model).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from prefdistill.config.schema import ModelConfig  # noqa: E402
from prefdistill.data.sources import _aclsum_rows  # noqa: E402
from prefdistill.models.alignment import TokenizerBridge  # noqa: E402
from prefdistill.models.assets import builtin_gguf  # noqa: E402
from prefdistill.models.common import load_tokenizer  # noqa: E402
from prefdistill.models.logprobs import completion_token_ids  # noqa: E402


def gemma_tokenizer():
    from transformers import AutoTokenizer

    path = builtin_gguf("gemma3-270m")
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def measure(student, teacher, texts: list[str]) -> dict:
    t0 = time.perf_counter()
    bridge = TokenizerBridge(student, teacher)
    shared_s = time.perf_counter() - t0
    ids = completion_token_ids(student, texts)
    times, paired, positions, span_chars, chars, teacher_tokens = [], 0, 0, 0, 0, 0
    for row in ids:
        t0 = time.perf_counter()
        r = bridge._align(list(row))  # uncached: what one new text costs
        times.append(time.perf_counter() - t0)
        paired, positions = paired + len(r.pairs), positions + len(row)
        teacher_tokens += len(r.teacher_ids)
        chars += len(r.text)
        for s0, s1, t0_, t1 in r.spans:
            if s1 - s0 > 1 or t1 - t0_ > 1:
                span_chars += len(student.decode(row[s0:s1], skip_special_tokens=True, clean_up_tokenization_spaces=False))
    return {"shared_tokens": len(bridge.shared[0]), "student_vocab": len(student), "teacher_vocab": len(teacher),
            "shared_share_of_student_vocab": len(bridge.shared[0]) / len(student),
            "shared_share_of_teacher_vocab": len(bridge.shared[0]) / len(teacher), "shared_tokens_s": round(shared_s, 3),
            "texts": len(texts), "align_ms_per_text_median": 1000 * statistics.median(times),
            "align_ms_per_text_mean": 1000 * statistics.fmean(times), "student_positions": positions,
            "positions_paired_share": paired / positions, "chars_in_multi_token_spans_share": span_chars / max(chars, 1),
            "teacher_tokens_per_student_token": teacher_tokens / positions}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--rows", type=int, default=300, help="ACLSum test references aligned per pair")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    texts = [r["target"] for r in _aclsum_rows()["test"][:args.rows]]
    load = os.getloadavg()[0]
    smol = load_tokenizer(ModelConfig(name_or_path="builtin:smollm2-135m-instruct"))
    t0 = time.perf_counter()
    gemma = gemma_tokenizer()
    gemma_load_s = time.perf_counter() - t0
    out = {"smollm2_student__gemma3_teacher": measure(smol, gemma, texts),
           "gemma3_student__smollm2_teacher": measure(gemma, smol, texts),
           "smollm2__smollm2_general_path": measure(smol, smol, texts),
           "gemma_tokenizer_load_s": round(gemma_load_s, 1), "load_start": load, "load_end": os.getloadavg()[0],
           "cpu": platform.processor() or platform.machine(), "threads": 1}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
