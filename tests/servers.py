"""Stand-in OpenAI-compatible servers for the API-teacher tests: FakeOpenAI (canned word log-probs) and
LogitServer (a local model's own log-probs and top-k). The fault-injecting proxy is `prefdistill.testing.FaultProxy`.

    with LogitServer(lm) as server:
        teacher = api_lm(server.url)                            # an APILM on it
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prefdistill.models.common import plain_prompt
from prefdistill.models.llama_server import free_port
from prefdistill.testing.servers import Served, prompt_of, send_json


def api_lm(url: str, endpoint: str = "completions", **kw):
    """An API teacher (`APILM`) on a stand-in server's `url`: quick timeouts, one retry."""
    from prefdistill.models.api_client import APIClient
    from prefdistill.models.api import APILM

    return APILM(APIClient(url + "/v1", timeout_s=60.0, max_retries=1, backoff_s=0.05), "teacher", endpoint=endpoint, **kw)


def json_server(reply) -> tuple[ThreadingHTTPServer, str]:
    """(a threaded local server, its url): each POST's JSON payload is answered 200 with `reply(handler, payload)` as JSON."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            send_json(self, 200, json.dumps(reply(self, payload)).encode())

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class FakeOpenAI(Served):
    """A stand-in server for fast tests: answers "reply to: PROMPT"; echoes word-level log-probs (`word_logp`
    per word, each word its own top-1 entry) when `logprobs` is true, else returns `logprobs: null` like a chat-only server."""

    def __init__(self, *, logprobs: bool = True, word_logp: float = -1.0):
        self.logprobs, self.word_logp = logprobs, word_logp
        self.headers_seen: list[dict] = []

        def reply(h: BaseHTTPRequestHandler, payload: dict) -> dict:
            self.headers_seen.append(dict(h.headers))
            return self.answer(h.path, payload)

        self.server, self.url = json_server(reply)

    def answer(self, path: str, payload: dict) -> dict:
        text = "reply to: " + prompt_of(payload).strip()
        if path.endswith("/chat/completions"):
            return {"choices": [{"message": {"role": "assistant", "content": text}}]}
        if not payload.get("echo"):
            return {"choices": [{"text": text}]}
        prompt = payload["prompt"]
        found = list(re.finditer(r"\s*\S+", prompt))  # a "token" is a word with the whitespace before it
        words, offsets = [m.group() for m in found], [m.start() for m in found]
        logprobs = {"tokens": words, "token_logprobs": [None] + [self.word_logp] * (len(words) - 1), "text_offset": offsets,
                    "top_logprobs": [None] + [{w: self.word_logp} for w in words[1:]]}
        return {"choices": [{"text": prompt, "logprobs": logprobs if self.logprobs else None}]}



class LogitServer(Served):
    """An OpenAI-compatible stand-in whose log-probs are a local model's own (a `LocalLM` on plain prompts).

    /v1/completions (echo, logprobs=k) and /v1/chat/completions (logprobs, top_logprobs=k) answer
    as llama-cpp-python does: tokens by their text (`decode([id])`) at their character offsets,
    the first echoed token without log-probs, each top-k dict holding the token itself too,
    greedy or seeded sampling. The text is tokenised by the model's tokenizer; generated tokens
    are joined by spaces (a word-level tokenizer's text). Token i's log-probs come from the
    distribution that produced it or, with `shift_echo` (echoed tokens) / `shift_generated`,
    from the next position's, as llama-cpp-python 0.3.x reports echoed text of a model without BOS.
    Log-probs are the model's at temperature 1 whatever the request says, or, with
    `logprob_temperature`, scaled by the request's temperature ("request", as providers whose
    log-probs follow it do: one-hot at 0) or by a fixed one (0: greedy log-probs). `tamper(logprobs)`
    edits each /v1/completions reply's logprobs in place (a server's bugs).
    """

    def __init__(self, lm, *, shift_echo: bool = False, shift_generated: bool = False,
                 logprob_temperature: str | float | None = None, tamper=None):
        self.lm, self.shift_echo, self.shift_generated = lm, shift_echo, shift_generated
        self.logprob_temperature, self.tamper = logprob_temperature, tamper
        self.payloads: list[dict] = []
        self._lock = threading.Lock()

        def reply(h: BaseHTTPRequestHandler, payload: dict) -> dict:
            with self._lock:
                self.payloads.append(payload)
                return self.answer(h.path, payload)

        self.server, self.url = json_server(reply)

    def run(self, text: str, max_tokens: int, temperature: float, seed: int):
        """(ids, character offsets, prompt tokens, log-probs (T, V) of the whole sequence) of `text` and its continuation.

        The log-probs are at temperature 1, or at `logprob_temperature` (0 taken as 1e-4: one-hot).
        """
        import torch

        tok = self.lm.tokenizer
        enc = tok(text, add_special_tokens=self.lm.add_special_tokens, return_offsets_mapping=True)
        ids, offsets, n_prompt = list(enc["input_ids"]), [o for o, _ in enc["offset_mapping"]], len(enc["input_ids"])
        end, gen = len(text), torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _ in range(max_tokens):
                logits = self.lm.model(torch.tensor([ids])).logits[0, -1].float()  # (V,)
                nxt = (int(logits.argmax()) if temperature == 0 else
                       int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)))
                ids.append(nxt)
                offsets.append(end + 1)  # after a space
                end += 1 + len(tok.decode([nxt]))
                if nxt == tok.eos_token_id:
                    break
            scale = {None: 1.0, "request": temperature}.get(self.logprob_temperature, self.logprob_temperature)
            logits = self.lm.model(torch.tensor([ids])).logits[0].float()  # (T, V)
            logps = torch.log_softmax(logits / max(float(scale), 1e-4), -1)
        return ids, offsets, n_prompt, logps

    def step(self, ids, logps, a: int, k: int, shift: bool) -> tuple[str, float | None, dict | None]:
        """(text of token a, its log-prob, {text: log-prob} of the k most likely and of token a itself)."""
        piece = self.lm.tokenizer.decode([ids[a]])
        if a == 0:
            return piece, None, None
        dist = logps[a] if shift else logps[a - 1]  # logps[a - 1] is the distribution that produced ids[a]
        values, top = dist.topk(min(k, dist.shape[-1]))
        entry = {self.lm.tokenizer.decode([i]): v for i, v in zip(top.tolist(), values.tolist())}
        entry[piece] = float(dist[ids[a]])
        return piece, float(dist[ids[a]]), entry

    def answer(self, path: str, payload: dict) -> dict:
        chat = path.endswith("/chat/completions")
        text = plain_prompt(payload["messages"][-1]["content"]) if chat else payload["prompt"]
        ids, offsets, n_prompt, logps = self.run(text, payload.get("max_tokens", 16), payload.get("temperature", 1.0),
                                                 payload.get("seed") or 0)
        generated = "".join(" " + self.lm.tokenizer.decode([i]) for i in ids[n_prompt:])
        k = (payload.get("top_logprobs") or 0) if chat else (payload.get("logprobs") or 0)
        echo = bool(payload.get("echo")) and not chat
        shown = range(0 if echo else n_prompt, len(ids))
        steps = [self.step(ids, logps, a, k, self.shift_echo if a < n_prompt else self.shift_generated) for a in shown]
        if chat:
            content = [{"token": p, "logprob": lp, "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()]}
                       for p, lp, top in steps]
            logprobs = {"content": content} if payload.get("logprobs") else None
            return {"choices": [{"message": {"role": "assistant", "content": generated}, "logprobs": logprobs}]}
        logprobs = {"tokens": [p for p, _, _ in steps], "token_logprobs": [lp for _, lp, _ in steps],
                    "top_logprobs": [top for _, _, top in steps], "text_offset": [offsets[a] for a in shown]}
        if self.tamper is not None:
            self.tamper(logprobs)
        return {"choices": [{"text": (text if echo else "") + generated, "logprobs": logprobs if k else None}]}
