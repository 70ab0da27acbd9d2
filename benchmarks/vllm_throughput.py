# python benchmarks/vllm_throughput.py --model builtin:smollm2-135m-instruct --prompts 256 --max-new-tokens 128
"""Sampling throughput of one model under the hf backend and the vLLM backend, on one GPU.

Both backends sample the same prompts (ACLSum test prompts, or synthetic ones when ACLSum
is not installed) with the same SamplingConfig; the script prints prompts/s and generated
tokens/s for each and their ratio, and writes them to a JSON file. Generated tokens are
counted by re-tokenising the returned texts with the model's tokenizer, for both backends.
The hf backend runs first and is freed before vLLM reserves its share of GPU memory.
Needs a CUDA GPU and `pip install 'prefdistill[vllm]'`; on a CPU machine it exits with a message.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch

from prefdistill.config.schema import DataConfig, ModelConfig, SamplingConfig, VLLMConfig
from prefdistill.models import load_model, load_tokenizer


def bench_prompts(tokenizer, n: int) -> tuple[list[str], str]:
    """n prompts (cut to 512 tokens) and where they came from."""
    try:
        from prefdistill.data.splits import prepare_splits

        splits = prepare_splits(DataConfig(source="builtin:aclsum", max_test=n), seed=0, tokenizer=tokenizer)
        prompts = [ex.prompt for ex in splits.test + splits.validation + splits.distill][:n]
        if len(prompts) == n:
            return prompts, "builtin:aclsum"
    except (FileNotFoundError, ImportError, OSError) as e:
        print(f"ACLSum not available ({e}); using synthetic prompts")
    words = "the model learns a short summary of each paper about data training results method".split()
    return [f"Summarize in one sentence: {' '.join(words[(i + j) % len(words)] for j in range(40 + i % 60))}."
            for i in range(n)], "synthetic"


def timed_run(lm, prompts: list[str], sampling: SamplingConfig, tokenizer) -> dict:
    lm.generate(prompts[:2], SamplingConfig(max_new_tokens=4), seed=0, desc="")  # warm-up (kernels, graphs)
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = lm.generate(prompts, sampling, seed=0, desc="")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for texts in out for t in texts)
    return {"seconds": round(seconds, 3), "prompts_per_s": round(len(prompts) / seconds, 2),
            "generated_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--hf-batch-size", type=int, default=32, help="prompts per transformers generate() call")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    ap.add_argument("--out", default="benchmarks/vllm_throughput.json")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("vllm_throughput: no CUDA GPU is visible; this benchmark compares GPU backends and cannot run here.")
        return 2
    if importlib.util.find_spec("vllm") is None:
        print("vllm_throughput: vllm is not installed: pip install 'prefdistill[vllm]' (needs a CUDA GPU)")
        return 2

    hf_cfg = ModelConfig(name_or_path=args.model, dtype=args.dtype, device="cuda")
    tokenizer = load_tokenizer(hf_cfg)
    prompts, source = bench_prompts(tokenizer, args.prompts)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, num_samples=args.num_samples,
                              temperature=0.7, top_p=0.9, batch_size=args.hf_batch_size)
    results = {}
    for backend in ("hf", "vllm"):
        cfg = ModelConfig(name_or_path=args.model, backend=backend, dtype=args.dtype, device="cuda",
                          vllm=VLLMConfig(gpu_memory_utilization=args.gpu_memory_utilization))
        start = time.perf_counter()
        lm = load_model(cfg)
        load_s = round(time.perf_counter() - start, 1)
        results[backend] = {"load_s": load_s, **timed_run(lm, prompts, sampling, tokenizer)}
        print(f"{backend:5s} {results[backend]['prompts_per_s']:8.2f} prompts/s {results[backend]['tokens_per_s']:10.1f} "
              f"tokens/s  ({results[backend]['seconds']} s, load {load_s} s)")
        del lm
        gc.collect()
        torch.cuda.empty_cache()

    ratio = results["vllm"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
    print(f"vllm / hf: {ratio:.2f}x tokens/s, {results['vllm']['prompts_per_s'] / results['hf']['prompts_per_s']:.2f}x prompts/s")
    import vllm

    report = {"model": args.model, "prompts": len(prompts), "prompt_source": source, "sampling": vars(sampling),
              "dtype": args.dtype, "gpu": torch.cuda.get_device_name(0), "vllm": vllm.__version__,
              "torch": torch.__version__, "python": platform.python_version(), "results": results,
              "vllm_over_hf_tokens_per_s": round(ratio, 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
