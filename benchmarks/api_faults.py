# python benchmarks/api_faults.py --prompts 60 --samples 2     (needs pip install 'prefdistill[server]' and the SmolLM2 GGUF)
"""Pair-generation sampling from a real OpenAI-compatible server through a fault-injecting proxy.

llama-cpp-python serves SmolLM2-135M on loopback; the proxy (`prefdistill.testing.FaultProxy`) gives every
second distinct request one fault on its first try, the kinds in turn (dropped connection,
HTTP 500, 429 with Retry-After, a stall past the client's deadline, truncated JSON, an
empty completion), and answers every request for one "poisoned" prompt with HTTP 500.
The API teacher samples every prompt through `prefdistill.data.sampling.sample_resumable`;
the script prints what was sent, injected, retried and lost, and writes a JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from prefdistill.config.schema import SamplingConfig
from prefdistill.data.sampling import sample_resumable
from prefdistill.io import Example, read_jsonl
from prefdistill.models.api import APILM
from prefdistill.models.api_client import APIClient
from prefdistill.models.llama_server import LlamaServer
from prefdistill.models.tiny import tiny_rows
from prefdistill.testing import FAULTS, FaultProxy, smollm2_gguf


def one_fault_per_request(poison: str):
    import threading

    seen, lock = set(), threading.Lock()

    def plan(n, payload):
        text = payload.get("prompt", "")
        if poison in text:
            return "http_500"
        key = (text, payload.get("seed"))
        with lock:
            first = key not in seen
            seen.add(key)
            index = len(seen)
        return FAULTS[(index // 2) % len(FAULTS)] if first and index % 2 == 0 else None

    return plan


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--timeout", type=float, default=15.0, help="client deadline per request (s); stalls last 1.2x this")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "api_faults.json"))
    args = ap.parse_args(argv)
    examples = [Example(id=r["id"], prompt="Summarize: " + r["document"]) for r in tiny_rows(args.prompts, seed=7)]
    poison = examples[len(examples) // 2]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, num_samples=args.samples)
    t0 = time.time()
    with LlamaServer(smollm2_gguf()) as server, FaultProxy(server.url, one_fault_per_request(poison.prompt),
                                                           stall_s=1.2 * args.timeout) as proxy:
        client = APIClient(proxy.url + "/v1", timeout_s=args.timeout, max_retries=3, backoff_s=0.2)
        lm = APILM(client, "smollm2", endpoint="completions", max_concurrency=4)
        with tempfile.TemporaryDirectory() as tmp:
            result = sample_resumable(lambda: lm, examples, sampling, Path(tmp), chunk_size=16, seed=0, desc="api faults",
                                      model_name="smollm2")
            journal = read_jsonl(Path(tmp) / "samples.jsonl")
            # A second run through a healthy proxy must ask only for what the first could not answer.
            with FaultProxy(server.url) as healthy:
                retry_lm = APILM(APIClient(healthy.url + "/v1", timeout_s=60), "smollm2", endpoint="completions")
                rerun = sample_resumable(lambda: retry_lm, examples, sampling, Path(tmp), chunk_size=16, seed=0,
                                         desc="api rerun", model_name="smollm2")
                final = read_jsonl(Path(tmp) / "samples.jsonl")
    ids = [r["id"] for r in journal]
    out = {
        "prompts": len(examples), "samples_per_prompt": args.samples, "wall_s": round(time.time() - t0, 1),
        "requests_sent": lm.stats.get("requests", 0), "requests_seen_by_proxy": proxy.requests,
        "faults_injected": dict(proxy.faults), "faults_injected_total": sum(proxy.faults.values()),
        "late_replies_abandoned": proxy.abandoned, "retries": lm.stats.get("retries", 0),
        "requests_failed_for_good": lm.stats.get("failed", 0),
        "prompts_answered": len(result.samples), "duplicate_prompts": len(ids) - len(set(ids)),
        "prompts_failed": {k: {"prompt": v["prompt"][:60], "kind": v["kind"], "attempts": v["attempts"]} for k, v in result.failures.items()},
        "prompts_lost": len(examples) - len(result.samples) - len(result.failures),
        "rerun_prompts_requested": len(healthy.forwarded), "rerun_prompts_answered": len(rerun.samples),
        "rerun_requested_only_failed": {p.strip() for p in healthy.forwarded} == {f["prompt"].strip() for f in result.failures.values()},
        "final_lines": len(final), "final_duplicates": len(final) - len({r["id"] for r in final}),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for k, v in out.items():
        print(f"{k:26s} {v}")
    return out


if __name__ == "__main__":
    main()
