"""Local models: loading errors, context limits, reproducible sampling, scoring."""
import pytest

from prefdistill.assets import resolve_model_path
from prefdistill.config import ModelConfig, SamplingConfig
from prefdistill.models import load_model
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
