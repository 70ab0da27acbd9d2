# HF_HUB_OFFLINE=1 python benchmarks/cpu_ceiling.py      (reads benchmarks/results/trl_compare.json; run with nothing else running)
"""Each training row's share of this CPU's matmul ceiling: model FLOPs per second over the fp32 matmul rate.

The ceiling is the rate of a dense (n × n) @ (n × n) fp32 product on the same number of threads as
trl_compare.json's runs (`gpu_check_training.peak_matmul`, median of repeats). A row's model FLOPs
per optimizer step, for the shapes trl_compare.json records (batch, prompt and completion tokens,
every row exactly that long):

  exact   6 per body weight per position run with grad, 2 per position run without (the teacher of
          kd), and the output layer (V × H) 6 per position it scores: prefdistill scores only the
          completion positions, TRL's trainers every position
  plain   6·N·tokens (Kaplan et al. 2020), N every weight but the input embedding (a tied output
          layer counted once), tokens every position run with grad; 2·N per teacher position

PLaD runs each pair's prompt once and both completions after it (`shared_prompt_logps`): B·(P + 2C)
positions; CPO runs both full sequences: 2B·(P + C). Attention scores' own FLOPs are not counted.
Writes benchmarks/results/cpu_ceiling.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_check_training import peak_matmul  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROWS = ("sft", "plad", "kd", "kd_topk", "dpkd")


def model_sizes(name: str) -> dict:
    """Body weights (every weight but the embedding and the output layer) and the output layer's, of `name`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from prefdistill.models.assets import resolve_model_path

    path = resolve_model_path(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    head = model.get_output_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # a tied head is counted once
    embed = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return {"body": total - embed - (0 if tied else head), "head": head, "tied": tied}


def positions(row: str, side: str, b: int, p: int, c: int) -> dict:
    """Positions of one step: through the body with grad, without (a teacher), and through the output layer, each way."""
    pairs = row in ("plad", "dpkd")
    if side == "prefdistill":  # a pair's prompt once, both completions after it; the output layer at completions only
        grad, scored = (b * (p + 2 * c), 2 * b * c) if pairs else (b * (p + c), b * c)
        nograd = b * (p + c) if row == "kd" else 0
        nograd_scored = b * c if row == "kd" else 0
    else:  # TRL: every sequence whole, the output layer at every position
        grad = 2 * b * (p + c) if pairs else b * (p + c)
        scored = grad
        nograd = {"kd": b * (p + c), "kd_topk": b * (p + c), "dpkd": 2 * b * (p + c)}.get(row, 0)
        nograd_scored = nograd
    return {"grad": grad, "scored": scored, "nograd": nograd, "nograd_scored": nograd_scored}


def row_share(row: str, side: str, steps_per_s: float, sizes: dict, settings: dict, rate: float) -> dict:
    """A row's FLOPs per step (exact and plain) and their rate over the ceiling, at its measured steps/s."""
    b, p, c = settings["batch_size"], settings["max_prompt_tokens"], settings["max_completion_tokens"]
    n = positions(row, side, b, p, c)
    body, head = sizes["body"], sizes["head"]
    exact = 6 * body * n["grad"] + 6 * head * n["scored"] + 2 * body * n["nograd"] + 2 * head * n["nograd_scored"]
    plain = 6 * (body + head) * n["grad"] + 2 * (body + head) * n["nograd"]
    return {"positions": n, "flops_per_step": {"exact": exact, "plain": plain}, "steps_per_s": steps_per_s,
            "share_exact": round(exact * steps_per_s / rate, 3), "share_plain": round(plain * steps_per_s / rate, 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trl", type=Path, default=RESULTS / "trl_compare.json")
    ap.add_argument("--n", type=int, default=2048, help="matmul size of the ceiling")
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu_ceiling.json")
    args = ap.parse_args(argv)
    trl = json.loads(args.trl.read_text())
    settings = trl["settings"]
    torch.set_num_threads(settings.get("threads") or torch.get_num_threads())
    load_before = os.getloadavg()[0]
    ceiling = peak_matmul(args.n, "float32", torch.device("cpu"))
    sizes = model_sizes(trl["model"])
    rows = {}
    for row in ROWS:
        if row in trl["rows"]:
            r = trl["rows"][row]
            rows[row] = {side: row_share(row, side, r[f"{side}_steps_per_s"], sizes, settings, ceiling["flops_per_s"])
                         for side in ("prefdistill", "trl")}
    out = {"benchmark": "cpu_ceiling", "command": "python benchmarks/cpu_ceiling.py", "source": str(args.trl.name),
           "model": trl["model"], "sizes": sizes, "settings": settings, "threads": torch.get_num_threads(),
           "ceiling": ceiling, "rows": rows, "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for row, sides in rows.items():
        print(f"{row:8s} prefdistill {sides['prefdistill']['share_exact']:.2f} (plain {sides['prefdistill']['share_plain']:.2f})"
              f"   TRL {sides['trl']['share_exact']:.2f} (plain {sides['trl']['share_plain']:.2f})")
    print(f"ceiling {ceiling['tflops'] * 1000:.1f} GFLOP/s on {torch.get_num_threads()} thread(s) -> {args.out}")


if __name__ == "__main__":
    main()
