"""benchmarks/generation_throughput.py runs end to end on the tiny model and writes its JSON."""
import json

import torch


def test_tiny_run_writes_both_arms(tmp_path, benchmark_script):
    out = tmp_path / "throughput.json"
    benchmark_script("generation_throughput").main(["--tiny", "--prompts", "3", "--samples", "2", "--max-new-tokens", "4",
                                                    "--batch-size", "2", "--device", "cpu", "--unshared", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["arms"]) == {"naive", "batched", "unshared"}
    for arm in result["arms"].values():
        assert arm["prompts"] == 3 and arm["completions"] == 6
        assert arm["wall_s"] > 0 and arm["prompts_per_s"] > 0 and arm["tokens_per_s"] > 0
        assert 0 < arm["generated_tokens"] <= arm["computed_row_steps"] <= 6 * 4
    assert all(v > 0 for v in result["ratio_batched_over_naive"].values())  # its size is the machine's business
    assert result["command"].startswith("python benchmarks/generation_throughput.py --tiny")


def test_generated_tokens_stop_at_eos_or_padding(benchmark_script):
    new_ids = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 8], [2, 0, 0, 0], [5, 0, 0, 0]])  # eos 2, pad 0
    assert benchmark_script("generation_throughput").count_generated(new_ids, {2, 0}) == (2 + 4 + 0 + 1, 16)
