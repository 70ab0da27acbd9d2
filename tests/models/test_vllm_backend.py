"""The vLLM backend: its pure helpers and token plumbing on CPU (a fake engine), the real engine on a GPU.

    python -m pytest -q tests/models/test_vllm_backend.py

CPU tests replace vLLM by a fake whose prompt log-probs come from the tiny transformers
model, so `VLLMLM.score` must agree with `LocalLM.score` token for token. The GPU tests
need `pip install 'prefdistill[vllm]'` and a CUDA GPU, and skip otherwise.
"""
import importlib.util
import math
import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from prefdistill.config.schema import ModelConfig, SamplingConfig, VLLMConfig
from prefdistill.models.hf import CHECKPOINT_META, LocalLM
from prefdistill.models.vllm_backend import (MERGED_DIR, SCORE_KWARGS, VLLMLM, completion_texts, engine_kwargs,
                                             generation_top_k, request_seed, sampling_kwargs, summed_logprob, weights_folder)


# ---------------------------------------------------------------- pure helpers
@dataclass
class Logprob:  # vllm.sequence.Logprob's shape
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class Completion:  # vllm.outputs.CompletionOutput's fields used here
    text: str


@dataclass
class Output:  # vllm.outputs.RequestOutput's fields used here
    outputs: list = field(default_factory=list)
    prompt_logprobs: list | None = None


def test_summed_logprob_sums_completion_positions_only():
    ids = [5, 6, 7, 8]  # prompt 5 6 | completion 7 8
    plp = [None, {6: Logprob(-9.0)}, {7: Logprob(-1.0), 3: Logprob(-0.5, rank=1)}, {8: Logprob(-2.0)}]
    assert summed_logprob(plp, ids, 2, normalize=False) == pytest.approx(-3.0)
    assert summed_logprob(plp, ids, 2, normalize=True) == pytest.approx(-1.5)
    assert summed_logprob([None, {6: -9.0}, {7: -1.0}, {8: -2.0}], ids, 3, normalize=False) == -2.0  # plain floats too
    assert summed_logprob(plp, ids, 4, normalize=True) == 0.0  # nothing scored, as sequence_logps
    with pytest.raises(ValueError, match="first token"):
        summed_logprob(plp, ids, 0, normalize=False)
    with pytest.raises(ValueError, match="3 prompt log-probs for 4 tokens"):
        summed_logprob(plp[:3], ids, 2, normalize=False)


def test_sampling_kwargs_follow_sampling_config():
    s = SamplingConfig(max_new_tokens=12, temperature=0.7, top_p=0.9, num_samples=4)
    assert sampling_kwargs(s, seed=3) == dict(n=4, temperature=0.7, top_p=0.9, top_k=50, max_tokens=12, seed=3)
    assert sampling_kwargs(s, seed=3, top_k=None)["top_k"] == -1  # no top-k in the model's generation config
    greedy = SamplingConfig(max_new_tokens=5, do_sample=False, num_samples=3)
    assert sampling_kwargs(greedy, seed=0) == dict(n=1, temperature=0.0, max_tokens=5, seed=0)
    assert completion_texts(Output([Completion(" a \n")]), greedy) == ["a", "a", "a"]
    assert completion_texts(Output([Completion(" x"), Completion("y ")]), s) == ["x", "y"]
    assert len({request_seed(0, i) for i in range(100)} | {request_seed(1, i) for i in range(100)}) == 200
    assert SCORE_KWARGS["temperature"] == 1.0 and SCORE_KWARGS["prompt_logprobs"] is not None


def test_engine_kwargs_come_from_the_vllm_section():
    cfg = ModelConfig(name_or_path="m", dtype="bfloat16", max_context=512,
                      vllm=VLLMConfig(gpu_memory_utilization=0.5, tensor_parallel_size=2, enforce_eager=True))
    kw = engine_kwargs(cfg, "/w")
    assert kw == dict(model="/w", tokenizer="/w", dtype="bfloat16", trust_remote_code=False, gpu_memory_utilization=0.5,
                      tensor_parallel_size=2, max_model_len=512, enforce_eager=True,
                      enable_prefix_caching=False)
    cfg.vllm.max_model_len = 256  # the vllm section wins over max_context
    assert engine_kwargs(cfg, "/w")["max_model_len"] == 256


# ---------------------------------------------------------------- token plumbing with a fake engine
class FakeLLM:
    """vllm.LLM.generate over token-id prompts; prompt log-probs computed by a transformers model.

    As vLLM gives them: prompt_logprobs[t] holds the `prompt_logprobs` most likely ids of the
    distribution that produced token t, and token t itself (k + 1 entries when it is not among them).
    """

    def __init__(self, model):
        self.model, self.calls = model, []

    def generate(self, prompts, params, use_tqdm=True):
        params = params if isinstance(params, list) else [params] * len(prompts)
        self.calls.append((prompts, params))
        out = []
        for prompt, p in zip(prompts, params):
            ids = prompt["prompt_token_ids"]
            plp = None
            if getattr(p, "prompt_logprobs", None) is not None:
                with torch.no_grad():
                    logps = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)  # (T, V)
                plp = [None]
                for t in range(1, len(ids)):
                    values, top = logps[t - 1].topk(p.prompt_logprobs)
                    entry = {i: Logprob(v, rank=r + 1) for r, (i, v) in enumerate(zip(top.tolist(), values.tolist()))}
                    plp.append({**entry, ids[t]: Logprob(logps[t - 1, ids[t]].item())})
            out.append(Output([Completion(f" s{p.seed}.{k} ") for k in range(p.n)], plp))
        return out


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.SimpleNamespace(SamplingParams=lambda **kw: types.SimpleNamespace(**{"n": 1, "seed": None, **kw}))
    monkeypatch.setitem(sys.modules, "vllm", module)


def _pair(path, **kw):
    local = LocalLM.load(ModelConfig(name_or_path=str(path), **kw))
    return local, VLLMLM(FakeLLM(local.model), local.tokenizer, name=str(path), max_context=local.max_context, **kw)


@pytest.mark.parametrize("role", ["student", "teacher"])  # chat template / plain prompts
def test_score_matches_local_lm(tiny_assets, fake_vllm, role):
    local, fake = _pair(tiny_assets[role])
    assert fake.prompt_format == local.prompt_format and fake.format_prompt("hi") == local.format_prompt("hi")
    prompts = ["Summarize : the model learns", "the data", "x"]
    completions = ["a short summary of data", "", "teacher student better"]
    for normalize in (False, True):
        want = local.score(prompts, completions, normalize=normalize)
        got = fake.score(prompts, completions, normalize=normalize)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_completion_topk_gives_the_local_models_cache(tiny_assets, fake_vllm, tmp_path, role):
    """The vLLM path (prompt_logprobs=k) writes the cache the local model writes: same ids, same log-probs."""
    from prefdistill.signal.topk_cache import build_topk_cache
    from prefdistill.models.tiny import tiny_rows

    local, fake = _pair(tiny_assets[role])
    rows = {name: [{"prompt": f"Summarize : {r['document']}", "target": r["summary"]} for r in tiny_rows(4, seed=2)]
            for name in ("local", "vllm")}
    caches = {name: build_topk_cache(lm, rows[name], 5, tmp_path / f"{name}.bin", tokenizer=local.tokenizer, teacher_id="t",
                                     dtype="float32") for name, lm in (("local", local), ("vllm", fake))}
    ids_l, logps_l, mask_l = caches["local"].rows()
    ids_v, logps_v, mask_v = caches["vllm"].rows()
    prompts, params = fake.llm.calls[-1]
    assert params[0].prompt_logprobs == 5 and params[0].max_tokens == 1
    head = fake.prompt_ids(rows["vllm"][-1]["prompt"])
    assert prompts[-1]["prompt_token_ids"][:len(head)] == head  # the prompt as LocalLM formats it, then the completion
    assert torch.equal(mask_v, mask_l)
    on = mask_l.bool()
    assert torch.equal(ids_v[on], ids_l[on])
    assert torch.allclose(logps_v[on], logps_l[on], atol=1e-5)
    with pytest.raises(ValueError, match="temperature 2 needs the teacher through transformers"):
        fake.completion_topk(["p"], [[1]], 2, tokenizer=local.tokenizer, temperature=2.0)


def test_a_served_engine_gives_the_local_models_topk_and_token_logps(tiny_assets, fake_vllm):
    """signal: served from vLLM (prefdistill.signal.served): the engine's prompt log-probs, the tokens' own included."""
    from prefdistill.signal.served import served_topk

    local, fake = _pair(tiny_assets["teacher"])
    prompts = ["Summarize : the model learns", "the data"]
    ids = [local.tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("the model data </s>", "learns")]
    want = served_topk(local, prompts, ids, 3, tokenizer=local.tokenizer)
    got = served_topk(fake, prompts, ids, 3, tokenizer=local.tokenizer)
    assert torch.equal(got.mask, want.mask) and got.ids.shape == want.ids.shape == (2, 4, 3)
    on = want.mask.bool()
    assert torch.equal(got.ids[on], want.ids[on])
    assert torch.allclose(got.logprobs[on], want.logprobs[on], atol=1e-5)
    assert torch.allclose(got.token_logps, want.token_logps, atol=1e-5) and (got.token_logps[on] < 0).all()


def test_generate_shape_seeds_and_on_result(tiny_assets, fake_vllm):
    _, fake = _pair(tiny_assets["student"])
    seen = []
    out = fake.generate(["a", "b", "c"], SamplingConfig(num_samples=2), seed=7, desc="", on_result=lambda i, t: seen.append((i, t)))
    assert out == [[f"s{request_seed(7, i)}.{k}" for k in range(2)] for i in range(3)]
    assert seen == list(enumerate(out))
    prompts, params = fake.llm.calls[-1]
    assert prompts[0]["prompt_token_ids"] == fake.prompt_ids("a")
    with pytest.raises(ValueError, match=r"prompt 0 has \d+ tokens.*context of"):
        fake.generate(["the " * 10], SamplingConfig(max_new_tokens=fake.max_context), seed=0)
    with pytest.raises(TypeError, match="backend: hf"):
        fake.completion_logps(["a"], ["b"])


def test_lora_chain_is_merged_once(tiny_assets, tmp_path):
    from peft import LoraConfig as PeftLora, get_peft_model

    cfg = ModelConfig(name_or_path=str(tiny_assets["student"]))
    args = (["the model learns"], ["a summary"])
    base = LocalLM.load(cfg)
    base_score = base.score(*args)
    model = get_peft_model(base.model, PeftLora(r=2, target_modules=["q_proj", "v_proj"], lora_alpha=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapter change the model
                p.normal_(0, 0.5)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    (ckpt / CHECKPOINT_META).write_text('{"kind": "adapter", "parent": null}')

    path = weights_folder(cfg, ckpt)
    assert path == str(ckpt / MERGED_DIR)
    stamp = (ckpt / MERGED_DIR / "config.json").stat().st_mtime_ns
    assert weights_folder(cfg, ckpt) == path and (ckpt / MERGED_DIR / "config.json").stat().st_mtime_ns == stamp
    merged = LocalLM.load(ModelConfig(name_or_path=path))
    chained = LocalLM.load(cfg, checkpoint=ckpt)
    assert merged.score(*args) == pytest.approx(chained.score(*args), abs=1e-4)
    assert merged.score(*args) != pytest.approx(base_score, abs=1e-3)  # the adapter is in the merged weights
    assert weights_folder(cfg) == str(tiny_assets["student"])
    assert generation_top_k(str(tiny_assets["student"])) == 50  # transformers' default, as LocalLM samples


def test_missing_vllm_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'prefdistill\[vllm\]'"):
        VLLMLM.load(ModelConfig(name_or_path="builtin:smollm2-135m-instruct", backend="vllm"))


# ---------------------------------------------------------------- the real engine (GPU)
HAS_VLLM = importlib.util.find_spec("vllm") is not None
gpu = pytest.mark.skipif(not (HAS_VLLM and torch.cuda.is_available()),
                         reason="needs a CUDA GPU and `pip install 'prefdistill[vllm]'`")


@pytest.fixture(scope="module")
def engines():
    # A real small model (the tiny test models' head sizes are below what vLLM's kernels take).
    # float32 on both sides, so the comparison measures the plumbing rather than bf16 rounding.
    from prefdistill.models.assets import resolve_model_path

    try:
        path = resolve_model_path("builtin:smollm2-135m-instruct")
    except (FileNotFoundError, ImportError, OSError) as e:
        pytest.skip(f"builtin:smollm2-135m-instruct is not available here: {e}")
    cfg = ModelConfig(name_or_path=path, backend="vllm", dtype="float32", device="cuda",
                      vllm=VLLMConfig(gpu_memory_utilization=0.3, enforce_eager=True))
    return LocalLM.load(cfg), VLLMLM.load(cfg)


@gpu
def test_gpu_generate_shape(engines):
    _, lm = engines
    prompts, sampling = ["Summarize: the model learns from data.", "Name a colour."], SamplingConfig(max_new_tokens=8, num_samples=3)
    out = lm.generate(prompts, sampling, seed=0, desc="")
    assert [len(x) for x in out] == [3, 3] and all(isinstance(t, str) for x in out for t in x)
    assert out == lm.generate(prompts, sampling, seed=0, desc="")  # per-request seeds: reproducible


@gpu
def test_gpu_score_agrees_with_local_lm(engines):
    local, lm = engines
    prompts = ["Summarize: the model learns from data.", "Name a colour."]
    completions = ["A model learns from data.", "Blue."]
    want, got = local.score(prompts, completions), lm.score(prompts, completions)
    # float32 both sides: vLLM's kernels differ from eager transformers by ~1e-3 nats per
    # token, so a sequence of ~10 tokens agrees to 2e-2 (bf16 would need ~0.1 per token).
    assert all(math.isfinite(g) for g in got)
    assert got == pytest.approx(want, abs=2e-2)
    assert lm.score(prompts, completions, normalize=True) == pytest.approx(local.score(prompts, completions, normalize=True), abs=2e-3)
