"""benchmarks/trl_compare.py runs every row end to end on the tiny models and writes its JSON (no speed assertions)."""
import json

import pytest


def test_tiny_run_writes_every_row(tmp_path, benchmark_script):
    pytest.importorskip("trl", reason="TRL is the other side of this benchmark: pip install -e '.[bench]'")
    out = tmp_path / "trl_compare.json"
    benchmark_script("trl_compare").main(["--tiny", "--steps", "1", "--warmup", "1", "--batch-size", "2", "--max-prompt-tokens", "24",
                                          "--max-completion-tokens", "6", "--n-rows", "6", "--device", "cpu", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["command"].startswith("python benchmarks/trl_compare.py --tiny")
    assert result["trl"] and result["device"] == "cpu"
    assert set(result["rows"]) == {"plad", "sft", "kd", "dpkd", "kd_topk"}
    cache = result["topk_cache"]  # kd_topk's, built once before its timed steps
    assert cache["k"] == 20 and cache["bytes_per_token"] > 0 and cache["build_s"] >= 0
    for row in result["rows"].values():
        for side in ("prefdistill", "trl"):
            (run,) = row["runs"][side]
            assert run["steps"] == 2 and run["timed_s"] > 0 and run["steps_per_s"] > 0 and run["peak_mb"] > 0
        assert row["speed_ratio"] > 0 and row["memory_ratio"] > 0  # their sizes are the machine's business
    # Both sides train on the same sequences: prompt + completion lengths as TRL tokenised them.
    assert {row["runs"]["trl"][0]["sequence_lengths"][0] for name, row in result["rows"].items() if name != "plad"} == {30}


def test_prompts_and_completions_are_cut_to_exact_lengths(tmp_path, benchmark_script):
    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.hf import LocalLM
    from prefdistill.models.tiny import make_tiny_assets

    lm = LocalLM.load(ModelConfig(name_or_path=str(make_tiny_assets(tmp_path)["student"])))
    module = benchmark_script("trl_compare")
    prompt = module.fit_prompt(lm, "Summarize : " + "the model learns a small teacher " * 8, 20)
    assert len(lm.prompt_ids(prompt)) == 20
    completion = module.fit_completion(lm.tokenizer, "the model learns a small teacher", 4)
    assert len(lm.tokenizer(completion, add_special_tokens=False)["input_ids"]) == 4
    assert module.fit_completion(lm.tokenizer, "too short", 4) is None
