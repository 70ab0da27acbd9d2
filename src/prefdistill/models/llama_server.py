"""llama-cpp-python's OpenAI-compatible server as a child process that says why it died.

    python -m prefdistill.models.llama_server --check builtin:smollm2-135m-instruct   # set-up's self-check

    with LlamaServer(gguf) as server:          # tests and `prefdistill serve`
        ... server.url ...; server.raise_if_dead()

pip compiles llama.cpp for the CPU it builds on. On CPUs with AMX / AVX-512 that build
crashes the server on its first multi-token evaluation on some virtual machines (a general
protection fault in libggml-cpu.so), after it has already answered a one-token request.
So a dead server is reported with its exit status, the tail of its log and the portable
reinstall command, instead of as connection-refused errors in whatever asked it next.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"
# No native CPU detection, no AVX-512 / AMX kernels: the wheel runs on every x86-64 machine with AVX2.
PORTABLE_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                       "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
REINSTALL_HINT = (
    "llama-cpp-python may have been compiled for CPU features this machine cannot run (pip builds it with "
    "native detection, which puts AMX / AVX-512 kernels in on such CPUs). Reinstall it portably: "
    "`bash scripts/setup.sh --server`, or "
    f"`CMAKE_ARGS=\"{PORTABLE_CMAKE_ARGS}\" pip install --force-reinstall --no-cache-dir "
    f"'llama-cpp-python[server]=={LLAMA_CPP_VERSION}'`.")


class ServerDied(RuntimeError):
    """The server process exited while it was needed; the message has its status and log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe_exit(returncode: int) -> str:
    """'status 1', or 'signal 11 (SIGSEGV)' for a process killed by a signal."""
    if returncode < 0:
        try:
            return f"signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(the log is empty)"


def death_message(returncode: int, log: Path, what: str = "llama.cpp server") -> str:
    return (f"the {what} exited with {describe_exit(returncode)}. Last lines of its log ({log}):\n"
            f"{log_tail(log)}\n{REINSTALL_HINT}")


class LlamaServer:
    """`python -m llama_cpp.server` on a free loopback port, ready once a `warm_up_tokens` completion answers.

    The warm-up asks for several tokens, not one: a miscompiled build answers a one-token request and
    then dies on its first multi-token evaluation. (The first evaluation after start is also slow, 35 s seen.)
    """

    def __init__(self, gguf: Path, *, n_ctx: int = 2048, n_threads: int = 2, startup_s: float = 120.0,
                 warm_up_tokens: int = 16, log_dir: Path | None = None, extra_args: tuple[str, ...] = (),
                 launcher: tuple[str, ...] = (sys.executable, "-m", "llama_cpp.server")):
        self.gguf, self.n_ctx, self.n_threads, self.startup_s = Path(gguf), n_ctx, n_threads, startup_s
        self.warm_up_tokens, self.extra_args, self.launcher = warm_up_tokens, extra_args, launcher
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_dir or tempfile.gettempdir()) / f"llama_server_{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LlamaServer":
        cmd = [*self.launcher, "--model", str(self.gguf), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
               "--verbose", "false", *self.extra_args]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
            self.complete("Once upon a time", max_tokens=self.warm_up_tokens, timeout_s=self.startup_s)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            self.raise_if_dead()
            try:
                urllib.request.urlopen(self.url + "/v1/models", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        raise ServerDied(f"the llama.cpp server did not answer within {self.startup_s:.0f} s. "
                         f"Last lines of its log ({self.log_path}):\n{log_tail(self.log_path)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def raise_if_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerDied(death_message(self.proc.returncode, self.log_path))

    def complete(self, prompt: str, *, max_tokens: int, timeout_s: float = 60.0) -> str:
        """One plain completion; a connection error from a server that has died becomes ServerDied."""
        body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}).encode()
        req = urllib.request.Request(self.url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read())["choices"][0]["text"]
        except OSError:
            time.sleep(0.5)  # give a crashing process the moment it needs to be reaped
            self.raise_if_dead()
            raise

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def self_check(gguf: Path, tokens: int = 16) -> str:
    """Start the server, ask for a `tokens`-token completion, stop it; raises ServerDied with the reason."""
    with LlamaServer(gguf, warm_up_tokens=tokens) as server:
        return server.complete("The capital of France is", max_tokens=tokens)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from prefdistill.models.assets import builtin_gguf

    parser = argparse.ArgumentParser(description="Check that llama-cpp-python's server answers a real completion.")
    parser.add_argument("--check", required=True, metavar="GGUF", help="a .gguf file or builtin:NAME")
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args(argv)
    gguf = builtin_gguf(args.check[len("builtin:"):]) if args.check.startswith("builtin:") else Path(args.check)
    t0 = time.monotonic()
    try:
        text = self_check(gguf, args.tokens)
    except ServerDied as e:
        print(f"[llama-server check] FAILED: {e}", file=sys.stderr)
        return 1
    print(f"[llama-server check] ok: {args.tokens}-token completion in {time.monotonic() - t0:.1f} s: {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
