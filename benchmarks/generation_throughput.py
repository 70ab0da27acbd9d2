# python benchmarks/generation_throughput.py --prompts 16 --samples 4 --max-new-tokens 48   (--tiny: seconds, random model)
"""Sampling throughput of `LocalLM.generate` against naive one-completion-at-a-time `generate`.

One process, one model load, the same prompts and sampling settings for every arm:
  naive     for each prompt, for each sample: HF `model.generate` on a batch of one
  batched   `LocalLM.generate`: prompts sorted by length, left-padded batches of
            `--batch-size` prompts, the prompt KV cache computed once and shared by the
            `--samples` completions, every row stopping at EOS
  unshared  (--unshared) `LocalLM.generate` with HF's own num_return_sequences, which
            prefills each prompt once per sample: what the shared prompt cache saves
Generated tokens are counted from the returned ids, up to and excluding EOS / padding.
Both arms run one after the other in one process, so on a shared machine the ratio is
the number to trust; the load average before and after goes into the JSON.
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

DEFAULT_OUT = Path(__file__).parent / "results" / "generation_throughput.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=16, help="ACLSum prompts (from the demo config's splits)")
    p.add_argument("--samples", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per LocalLM.generate batch")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="builtin:smollm2-135m-instruct")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--unshared", action="store_true", help="also time LocalLM.generate without the shared prompt cache")
    p.add_argument("--tiny", action="store_true", help="a tiny random model and synthetic prompts (a smoke test)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def load(args, workdir: Path):
    """(LocalLM, prompts): the demo's ACLSum prompts, or the tiny assets' synthetic ones."""
    from prefdistill.cli import packaged_config
    from prefdistill.config.checks import load_config
    from prefdistill.data.splits import prepare_splits
    from prefdistill.models.hf import LocalLM
    from prefdistill.models.tiny import make_tiny_assets, tiny_config

    if args.tiny:
        cfg = load_config(tiny_config(make_tiny_assets(workdir / "tiny"), workdir))
        model_cfg = cfg.student
    else:
        cfg = load_config(packaged_config("demo"))
        model_cfg = replace(cfg.student, name_or_path=args.model)
    lm = LocalLM.load(replace(model_cfg, device=args.device))
    splits = prepare_splits(cfg.data, seed=cfg.seed, tokenizer=lm.tokenizer)
    prompts = [e.prompt for e in splits.distill + splits.sft + splits.validation + splits.test][: args.prompts]
    if len(prompts) < args.prompts:
        raise SystemExit(f"only {len(prompts)} prompts available, asked for {args.prompts}")
    return lm, prompts


def count_generated(new_ids: torch.Tensor, stop_ids: set[int]) -> tuple[int, int]:
    """(tokens before each row's first EOS / pad, summed; row-steps computed) for new ids (R, N)."""
    stop = torch.isin(new_ids, torch.tensor(sorted(stop_ids), device=new_ids.device))  # (R, N)
    lengths = torch.where(stop.any(1), stop.int().argmax(1), new_ids.shape[1])  # (R,)
    return int(lengths.sum()), new_ids.numel()


class Recorder:
    """Wraps `model.generate` to count what every call produced (the model's own `generate` is untouched)."""

    def __init__(self, model, stop_ids: set[int]):
        self.model, self.stop_ids, self.real = model, stop_ids, model.generate
        self.tokens = self.row_steps = 0

    def __call__(self, *args, **kwargs):
        out = self.real(*args, **kwargs)
        tokens, steps = count_generated(out[:, kwargs["input_ids"].shape[1]:], self.stop_ids)
        self.tokens, self.row_steps = self.tokens + tokens, self.row_steps + steps
        return out

    def __enter__(self):
        self.model.generate = self  # an instance attribute shadows the method
        return self

    def __exit__(self, *exc):
        del self.model.generate


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_naive(lm, prompts: list[str], args, sampling, stop_ids: set[int]) -> dict:
    """One HF generate call per (prompt, sample), batch of one, formatted exactly as LocalLM does."""
    device = next(lm.model.parameters()).device
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=lm.tokenizer.pad_token_id, do_sample=True,
                  temperature=sampling.temperature, top_p=sampling.top_p)
    with Recorder(lm.model, stop_ids) as rec:
        sync(device)
        t0 = time.perf_counter()
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([lm.tokenizer(lm.format_prompt(prompt), add_special_tokens=lm.add_special_tokens)["input_ids"]], device=device)
            for k in range(sampling.num_samples):
                torch.manual_seed(args.seed * 1_000_003 + i * sampling.num_samples + k)
                lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        sync(device)
        wall = time.perf_counter() - t0
    return arm_stats(wall, len(prompts), sampling.num_samples, rec)


def run_batched(lm, prompts: list[str], args, sampling, stop_ids: set[int]) -> dict:
    device = next(lm.model.parameters()).device
    with Recorder(lm.model, stop_ids) as rec:
        sync(device)
        t0 = time.perf_counter()
        lm.generate(prompts, sampling, seed=args.seed, desc="")
        sync(device)
        wall = time.perf_counter() - t0
    return arm_stats(wall, len(prompts), sampling.num_samples, rec)


def run_unshared(lm, prompts: list[str], args, sampling, stop_ids: set[int]) -> dict:
    """LocalLM.generate with its batches handed straight to HF generate(num_return_sequences=n)."""
    lm._generate_batch = lambda ids, mask, n, **kw: lm.model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=n, **kw)
    try:
        return run_batched(lm, prompts, args, sampling, stop_ids)
    finally:
        del lm._generate_batch


def arm_stats(wall: float, n_prompts: int, n_samples: int, rec: Recorder) -> dict:
    return {"wall_s": round(wall, 3), "prompts": n_prompts, "completions": n_prompts * n_samples,
            "generated_tokens": rec.tokens, "computed_row_steps": rec.row_steps,
            "prompts_per_s": round(n_prompts / wall, 4), "tokens_per_s": round(rec.tokens / wall, 3)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from prefdistill.config.schema import SamplingConfig

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        lm, prompts = load(args, Path(tmp))
        eos = lm.model.generation_config.eos_token_id
        stop_ids = {lm.tokenizer.pad_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])}
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, do_sample=True, temperature=args.temperature,
                                  top_p=args.top_p, num_samples=args.samples, batch_size=args.batch_size)
        warm = replace(sampling, max_new_tokens=min(4, args.max_new_tokens), num_samples=1)
        run_naive(lm, prompts[:1], args, warm, stop_ids)  # warm-up: first-call allocations, kernels, caches
        run_batched(lm, prompts[:2], args, warm, stop_ids)
        arms = {"naive": run_naive(lm, prompts, args, sampling, stop_ids),
                "batched": run_batched(lm, prompts, args, sampling, stop_ids)}
        if args.unshared:
            arms["unshared"] = run_unshared(lm, prompts, args, sampling, stop_ids)
    result = {
        "benchmark": "generation_throughput",
        "command": "python benchmarks/generation_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": "tiny" if args.tiny else args.model,
        "device": str(next(lm.model.parameters()).device),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "tiny", "unshared", "device", "model")},
        "arms": arms,
        "ratio_batched_over_naive": {k: round(arms["batched"][k] / arms["naive"][k], 3) for k in ("prompts_per_s", "tokens_per_s")},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_avg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


def print_table(result: dict) -> None:
    print(f"{result['model']} on {result['device']}, {result['settings']}")
    print(f"{'arm':<10}{'wall s':>9}{'prompts/s':>11}{'tokens':>8}{'tokens/s':>10}{'rows busy':>11}")
    for name, a in result["arms"].items():
        busy = a["generated_tokens"] / max(1, a["computed_row_steps"])  # share of computed row-steps that were real tokens
        print(f"{name:<10}{a['wall_s']:>9.1f}{a['prompts_per_s']:>11.3f}{a['generated_tokens']:>8}{a['tokens_per_s']:>10.1f}{busy:>11.0%}")
    r = result["ratio_batched_over_naive"]
    print(f"batched / naive: {r['prompts_per_s']:.2f}x prompts/s, {r['tokens_per_s']:.2f}x generated tokens/s")


if __name__ == "__main__":
    main()
