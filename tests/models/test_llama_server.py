"""A llama.cpp server that dies is reported with its exit status, its log and the portable reinstall command."""
import subprocess
import sys
from pathlib import Path

import pytest

from prefdistill.cli import supervise
from prefdistill.models.llama_server import PORTABLE_CMAKE_ARGS, LlamaServer, ServerDied, describe_exit

FAKE = (sys.executable, str(Path(__file__).parents[1] / "fake_llama_server.py"))


def test_describe_exit_names_the_signal():
    assert describe_exit(-11) == "signal 11 (SIGSEGV)" and describe_exit(1) == "status 1"


def test_a_server_that_dies_on_its_first_real_completion_fails_at_start_with_its_log(tmp_path):
    server = LlamaServer(tmp_path / "m.gguf", launcher=FAKE, log_dir=tmp_path, startup_s=20)
    with pytest.raises(ServerDied) as err:
        server.__enter__()
    message = str(err.value)
    assert "signal 11 (SIGSEGV)" in message and "evaluating a batch of tokens" in message  # status and log tail
    assert PORTABLE_CMAKE_ARGS in message and "-DGGML_NATIVE=OFF" in message


def test_a_server_that_answers_one_token_is_alive_until_asked_for_more(tmp_path):
    with LlamaServer(tmp_path / "m.gguf", launcher=FAKE, log_dir=tmp_path, warm_up_tokens=1, startup_s=20) as server:
        assert server.alive() and server.complete("hi", max_tokens=1) == " ok"
        with pytest.raises(ServerDied, match="SIGSEGV"):
            server.complete("hi", max_tokens=16)  # not a bare connection error
        assert not server.alive()


def test_serve_explains_an_unexpected_exit(capsys):
    code = "import os, signal; print('loading model', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    assert supervise([sys.executable, "-c", code]) == 2
    out = capsys.readouterr()
    assert "loading model" in out.out
    assert "exited unexpectedly with signal 11 (SIGSEGV)" in out.err and "loading model" in out.err
    assert "scripts/setup.sh --server" in out.err


def test_serve_returns_quietly_when_the_server_stops_normally(capsys):
    assert supervise([sys.executable, "-c", "print('bye')"]) == 0
    assert "unexpectedly" not in capsys.readouterr().err


def test_the_setup_builds_llama_cpp_portably():
    """The build script takes its flags from the one place they are defined, and they exclude native/AMX kernels."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "build_llama_server.sh"
    text = script.read_text()
    assert "PORTABLE_CMAKE_ARGS" in text and "--no-cache-dir" in text and "--check" in text
    for flag in ("-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AVX512=OFF"):
        assert flag in PORTABLE_CMAKE_ARGS
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
