"""Local models: loading errors, context limits, reproducible sampling, scoring."""
import pytest

from prefdistill.config.schema import ModelConfig, SamplingConfig
from prefdistill.models import load_model
from prefdistill.models.assets import resolve_model_path
from prefdistill.models.hf import LocalLM


def test_unknown_model_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model path not found"):
        resolve_model_path(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        resolve_model_path(str(tmp_path / "x.gguf"))
    with pytest.raises(FileNotFoundError, match="unknown builtin"):
        resolve_model_path("builtin:gpt-17")
    with pytest.raises(ValueError, match="backend"):
        load_model(ModelConfig(name_or_path="x", backend="telepathy"))


def test_prompt_longer_than_context_is_refused(tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"]), max_context=16))
    with pytest.raises(ValueError, match=r"prompt 1 has \d+ tokens.*context of 16"):
        lm.generate(["the model", "the " * 20], SamplingConfig(max_new_tokens=4), seed=0, desc="")


def test_sampling_is_reproducible_per_seed(tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    sampling = SamplingConfig(max_new_tokens=6, num_samples=3, temperature=1.0, top_p=1.0)
    prompts = ["Summarize : the model learns", "Summarize : data training results method we"]
    a = lm.generate(prompts, sampling, seed=1, desc="")
    assert a == lm.generate(prompts, sampling, seed=1, desc="")
    assert a != lm.generate(prompts, sampling, seed=2, desc="")
    assert [len(x) for x in a] == [3, 3]


def test_shared_prompt_cache_samples_what_plain_generate_samples(tiny_assets):
    """Prefilling each prompt once and repeating its KV cache n times (LocalLM._generate_batch)
    must give generate(num_return_sequences=n)'s tokens, left padding included."""
    import torch

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    prompts = [lm.prompt_ids(p) for p in ["the model learns a short summary", "we propose"]]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[lm.tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])  # (2, T)
    attention_mask = (torch.arange(width) >= torch.tensor([[width - len(p)] for p in prompts])).long()  # (2, T)
    kwargs = dict(max_new_tokens=8, pad_token_id=lm.tokenizer.pad_token_id, do_sample=True, temperature=1.0, top_p=0.9,
                  output_logits=True, return_dict_in_generate=True)
    torch.manual_seed(0)
    shared = lm._generate_batch(input_ids, attention_mask, 3, **kwargs)
    torch.manual_seed(0)
    plain = lm.model.generate(input_ids=input_ids, attention_mask=attention_mask, num_return_sequences=3, **kwargs)
    assert shared.sequences.shape == (6, width + 8) and torch.equal(shared.sequences, plain.sequences)
    # The random tiny model samples alike even from slightly wrong logits (e.g. unpadded
    # positions: 2e-3 off), so the logits themselves are compared.
    for step_shared, step_plain in zip(shared.logits, plain.logits, strict=True):  # (6, V) per step
        torch.testing.assert_close(step_shared, step_plain, atol=1e-5, rtol=0)


def test_prompt_formats(tiny_assets):
    chat = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    plain = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    assert chat.prompt_format == "chat" and "<|assistant|>" in chat.format_prompt("hi")
    assert plain.prompt_format == "plain" and plain.format_prompt("hi") == "hi\n"
    with pytest.raises(ValueError, match="no chat template"):
        LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"]), prompt_format="chat"))


def test_score_normalised_is_mean_token_logp(tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    total = lm.score(["the model"], ["learns data"], normalize=False)[0]
    mean = lm.score(["the model"], ["learns data"], normalize=True)[0]
    assert mean == pytest.approx(total / 3, rel=1e-5)  # two words + EOS


@pytest.mark.parametrize("role", ["teacher", "student"])  # a plain prompt and a chat-formatted one
@pytest.mark.parametrize("chunk", [0, 3])  # the whole logits, and the head three positions at a time
def test_score_groups_is_score_with_each_prompt_run_once(tiny_assets, role, chunk):
    """Groups of unequal sizes (one larger than the batch, one empty, an empty completion): each number equals `score`'s
    of the same prompt and completion, totals and means."""
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets[role])))
    lm.model.eval()
    lm.logits_chunk = chunk
    prompts = ["the model learns", "a much longer prompt about the data and the model", "x"]
    groups = [["data", "the data is", "", "model model model"], [f"word {i} of the data" for i in range(11)], []]
    for normalize in (False, True):
        grouped = lm.score_groups(prompts, groups, normalize=normalize, batch_size=4)
        assert [len(g) for g in grouped] == [4, 11, 0]
        flat = lm.score([p for p, g in zip(prompts, groups) for _ in g], [c for g in groups for c in g], normalize=normalize)
        assert [s for g in grouped for s in g] == pytest.approx(flat, abs=1e-4, rel=1e-5)
    assert grouped[0][0] != pytest.approx(grouped[0][3], abs=1e-3)  # not one number for every completion
