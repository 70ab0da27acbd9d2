# HF_HUB_OFFLINE=1 python benchmarks/inloop_sampling.py --batches 16      (--tiny: seconds, random model; --samples 4: WIND's groups)
"""Tokens/s of the in-loop sampler (`rollout`) against `LocalLM.generate` and naive one-prompt HF `generate`.

On the bench's student (configs/bench.yaml: builtin:smollm2-100m, LoRA r 8 / alpha 32 / dropout 0.1
wrapped as the training loop wraps it, the model in train mode as the loop leaves it), with the
bench's prompts (ACLSum, data.max_prompt_tokens), its batch (distill.train.batch_size prompts) and
its on-policy max_new_tokens (40), at temperature 1 (the on-policy methods' default). One process,
one model load, the same prompts for every arm, one after the other:

  inloop   `rollout(lm, batch, n=samples)` per batch of `batch_size` prompts, in the loop's order:
           what GKD / MiniLLM / f-distill / DistiLLM (samples 1) and WIND / SPPO / BOND (sample_group,
           samples k) call every step
  batched  `LocalLM.generate` on all the prompts (sorted by length, batches of `batch_size`, the
           prompt cache shared by the samples), as validation and the pairs stage generate
  naive    HF `model.generate` on a batch of one, once per (prompt, sample)

Generated tokens are counted up to and excluding EOS / padding. `LocalLM.generate` and the naive
arm keep HF's default top-k of the model's generation config, which changes what is sampled, not
the cost of a step. Run the arms on a quiet machine: the JSON records the load average before and
after, and torch's thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # generation_throughput's counters
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from generation_throughput import Recorder, count_generated, sync  # noqa: E402

DEFAULT_OUT = Path(__file__).parent / "results" / "inloop_sampling.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="bench", help="packaged bench config whose student, prompts and batch are used")
    p.add_argument("--batches", type=int, default=16, help="in-loop batches (training steps) to sample; prompts = batches x batch size")
    p.add_argument("--batch-size", type=int, help="prompts per batch (default: the config's distill.train.batch_size)")
    p.add_argument("--samples", type=int, default=1, help="samples per prompt (1: GKD / MiniLLM / f-distill; 4: WIND's groups)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="the bench's on-policy max_new_tokens")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--arms", default="inloop,batched,naive", help="comma-separated subset of inloop, batched, naive")
    p.add_argument("--tiny", action="store_true", help="a tiny random model and synthetic prompts (a smoke test)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def load(args, workdir: Path):
    """(LocalLM with LoRA as in training, prompts, batch size): the bench's student and prompts, or the tiny assets'."""
    from prefdistill.cli import packaged_config
    from prefdistill.config.checks import load_bench_config, load_config
    from prefdistill.data.splits import prepare_splits
    from prefdistill.models.hf import LocalLM
    from prefdistill.models.tiny import make_tiny_assets, tiny_config

    cfg = load_config(tiny_config(make_tiny_assets(workdir / "tiny"), workdir)) if args.tiny else load_bench_config(packaged_config(args.config))[0]
    lm = LocalLM.load(replace(cfg.student, device=args.device), for_training=True)
    lm.model = with_lora(lm.model, cfg.student.lora)
    batch = args.batch_size or cfg.distill.train.batch_size
    splits = prepare_splits(cfg.data, seed=cfg.seed, tokenizer=lm.tokenizer)
    pool = [e.prompt for e in splits.distill + splits.sft + splits.validation + splits.test]
    prompts = [pool[i % len(pool)] for i in torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed)).tolist()]
    n = args.batches * batch
    if len(prompts) < n:
        raise SystemExit(f"only {len(prompts)} prompts available, asked for {n}")
    return lm, prompts[:n], batch


def with_lora(model, lora):
    """`model` wrapped in LoRA adapters of the config's shape, in train mode: what the training loop samples from."""
    from peft import LoraConfig, get_peft_model

    target = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    wrapped = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target,
                                               task_type="CAUSAL_LM"))
    with torch.no_grad():  # B = 0 at initialisation; a trained adapter changes the weights (not the cost)
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3, generator=torch.Generator().manual_seed(len(name)))
    return wrapped.train()


def arm_stats(wall: float, completions: int, tokens: int, row_steps: int) -> dict:
    return {"wall_s": round(wall, 3), "completions": completions, "generated_tokens": tokens, "computed_row_steps": row_steps,
            "tokens_per_s": round(tokens / wall, 3)}


def run_inloop(lm, prompts: list[str], batch: int, args, stop_ids: set[int]) -> dict:
    from prefdistill.models.rollout import rollout

    device, tokens, row_steps = next(lm.model.parameters()).device, 0, 0
    sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch):
        torch.manual_seed(args.seed * 1_000_003 + start)
        out = rollout(lm, prompts[start:start + batch], max_new_tokens=args.max_new_tokens, temperature=args.temperature, n=args.samples)
        tokens += sum(len(c) - (bool(c) and c[-1] in stop_ids) for c in out.completions)
        row_steps += len(out.completions) * max(len(c) for c in out.completions)
    sync(device)
    return arm_stats(time.perf_counter() - t0, len(prompts) * args.samples, tokens, row_steps)


def run_batched(lm, prompts: list[str], batch: int, args, stop_ids: set[int]) -> dict:
    from prefdistill.config.schema import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, do_sample=True, temperature=args.temperature, top_p=1.0,
                              num_samples=args.samples, batch_size=batch)
    device = next(lm.model.parameters()).device
    with Recorder(lm.model, stop_ids) as rec:
        sync(device)
        t0 = time.perf_counter()
        lm.generate(prompts, sampling, seed=args.seed, desc="")
        sync(device)
        wall = time.perf_counter() - t0
    return arm_stats(wall, len(prompts) * args.samples, rec.tokens, rec.row_steps)


def run_naive(lm, prompts: list[str], batch: int, args, stop_ids: set[int]) -> dict:
    """One HF generate call per (prompt, sample), batch of one, formatted as LocalLM formats it, in eval mode."""
    device, tokens, row_steps = next(lm.model.parameters()).device, 0, 0
    kwargs = dict(max_new_tokens=args.max_new_tokens, pad_token_id=lm.tokenizer.pad_token_id, do_sample=True, temperature=args.temperature,
                  top_p=1.0)
    lm.model.eval()
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([lm.prompt_ids(prompt)], device=device)
            for k in range(args.samples):
                torch.manual_seed(args.seed * 1_000_003 + i * args.samples + k)
                out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
                made, steps = count_generated(out[:, ids.shape[1]:], stop_ids)
                tokens, row_steps = tokens + made, row_steps + steps
    sync(device)
    wall = time.perf_counter() - t0
    lm.model.train()
    return arm_stats(wall, len(prompts) * args.samples, tokens, row_steps)


ARMS = {"inloop": run_inloop, "batched": run_batched, "naive": run_naive}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or set(arms) - set(ARMS):
        raise SystemExit(f"--arms: choose among {', '.join(ARMS)}")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        lm, prompts, batch = load(args, Path(tmp))
        eos = lm.model.generation_config.eos_token_id
        stop_ids = {lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])}
        stop_ids.discard(None)
        warm = argparse.Namespace(**{**vars(args), "max_new_tokens": min(4, args.max_new_tokens)})
        for name in arms:  # warm-up: first-call allocations, kernels, caches
            ARMS[name](lm, prompts[:batch], batch, warm, stop_ids)
        results = {name: ARMS[name](lm, prompts, batch, args, stop_ids) for name in arms}
        device = str(next(lm.model.parameters()).device)
    result = {
        "benchmark": "inloop_sampling",
        "command": "python benchmarks/inloop_sampling.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": "tiny" if args.tiny else f"{args.config}.yaml student", "device": device, "lora": True,
        "settings": {"prompts": len(prompts), "batch_size": batch, **{k: v for k, v in vars(args).items()
                                                                    if k in ("batches", "samples", "max_new_tokens", "temperature", "seed")}},
        "arms": results, "ratios_tokens_per_s": ratios(results),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


def ratios(arms: dict) -> dict:
    """In-loop tokens/s over each other arm's (goal: >= 0.9 against batched)."""
    if "inloop" not in arms:
        return {}
    return {f"inloop_over_{k}": round(arms["inloop"]["tokens_per_s"] / a["tokens_per_s"], 3) for k, a in arms.items()
            if k != "inloop" and a["tokens_per_s"]}


def print_table(result: dict) -> None:
    print(f"{result['model']} on {result['device']} (LoRA), {result['settings']}")
    print(f"{'arm':<10}{'wall s':>9}{'completions':>13}{'tokens':>8}{'tokens/s':>10}{'rows busy':>11}")
    for name, a in result["arms"].items():
        busy = a["generated_tokens"] / max(1, a["computed_row_steps"])
        print(f"{name:<10}{a['wall_s']:>9.1f}{a['completions']:>13}{a['generated_tokens']:>8}{a['tokens_per_s']:>10.1f}{busy:>11.0%}")
    for k, v in result["ratios_tokens_per_s"].items():
        print(f"{k}: {v:.2f}x tokens/s")


if __name__ == "__main__":
    main()
