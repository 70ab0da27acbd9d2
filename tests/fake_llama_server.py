"""A stand-in for `python -m llama_cpp.server` that fails the way a miscompiled llama.cpp does:
it answers /v1/models and one-token completions, then dies of SIGSEGV on a multi-token request.

    python tests/fake_llama_server.py --model X --host 127.0.0.1 --port N [ignored llama_cpp.server flags]
"""
import argparse
import json
import os
import signal
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply({"data": [{"id": "fake"}]})

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if payload.get("max_tokens", 16) > 1:
            print("ggml_compute_forward: evaluating a batch of tokens", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        self._reply({"choices": [{"text": " ok"}]})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args, _ = parser.parse_known_args()
    print("llama_model_loader: loaded meta data (fake)", flush=True)
    HTTPServer((args.host, args.port), Handler).serve_forever()
