"""One JSON-over-HTTP client for OpenAI-compatible servers: deadlines, retries, counts.

    client = APIClient("http://127.0.0.1:8000/v1", api_key_env="OPENAI_API_KEY", timeout_s=30)
    reply = client.post("/completions", {"model": "m", "prompt": "Hi", "max_tokens": 8})

Every request has a hard deadline (connection to last byte, not per socket read), and is
retried with exponential backoff and full jitter after a timeout, a dropped connection,
HTTP 429, HTTP 5xx or a reply that is not JSON; a server's `Retry-After` is honoured. Other
4xx answers are not retried; a caller's `parse` that finds no usable content in a reply
gets the request retried too. When the retries are spent, `RequestFailed` says why. The API
key is read from the environment at each request and only ever put in the Authorization
header: it is never logged, stored in `self`, or included in an error message.
"""
from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any, Callable

RETRIED_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class RequestFailed(RuntimeError):
    """A request that failed for good; `kind` is one of timeout/connection/http_NNN/malformed/..."""

    def __init__(self, message: str, *, kind: str, attempts: int):
        super().__init__(message)
        self.kind, self.attempts = kind, attempts


class MalformedReply(ValueError):
    """A reply that is valid JSON but lacks what the caller needs; `kind` names the fault (malformed, empty)."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message)
        self.kind = kind


class _Retryable(Exception):
    def __init__(self, kind: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class APIClient:
    """Thread-safe: one instance serves every worker thread of a run (each request opens its own connection)."""

    def __init__(self, base_url: str, *, api_key_env: str | None = None, timeout_s: float = 60.0, max_retries: int = 5,
                 backoff_s: float = 1.0, backoff_max_s: float = 30.0, seed: int = 0):
        url = urllib.parse.urlsplit(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"api.base_url: {base_url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
        self.base_url, self._url = base_url.rstrip("/"), url
        self.api_key_env, self.timeout_s, self.max_retries = api_key_env, timeout_s, max_retries
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.stats: Counter = Counter()  # requests, retries, failures and each fault kind seen
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def post(self, path: str, payload: dict, parse: Callable[[dict], Any] | None = None) -> Any:
        """POST `payload` to base_url + path; the parsed JSON reply, or RequestFailed after the retries.

        `parse(reply)` turns the reply into what the caller needs; when it raises
        MalformedReply (valid JSON without usable content) the request is retried like a
        transport fault, within the same retry budget.
        """
        body = json.dumps(payload).encode()
        for attempt in range(self.max_retries + 1):
            self.count("requests")
            try:
                reply = self._post_once(path, body)
                return reply if parse is None else parse(reply)
            except MalformedReply as e:
                fault = _Retryable(e.kind, str(e))
            except _Retryable as e:
                fault = e
            except RequestFailed:
                self.count("failed")
                raise
            self.count(f"fault_{fault.kind}")
            if attempt == self.max_retries:
                self.count("failed")
                raise RequestFailed(f"{self.base_url}{path}: {fault.detail} (gave up after {attempt + 1} attempts)",
                                    kind=fault.kind, attempts=attempt + 1) from None
            self.count("retries")
            time.sleep(self._wait(attempt, fault.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        with self._lock:
            jitter = self._rng.random()
        backoff = jitter * min(self.backoff_max_s, self.backoff_s * 2 ** attempt)  # full jitter
        return max(backoff, retry_after) if retry_after is not None else backoff

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post_once(self, path: str, body: bytes) -> dict:
        deadline = time.monotonic() + self.timeout_s
        u = self._url
        conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(u.hostname, u.port, timeout=self.timeout_s)
        try:
            conn.request("POST", u.path + path, body=body, headers=self._headers())
            _set_timeout(conn, deadline)
            resp = conn.getresponse()
            chunks = []
            while True:
                _set_timeout(conn, deadline)
                chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
        except TimeoutError:
            raise _Retryable("timeout", f"no complete reply within {self.timeout_s:g} s") from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Retryable("connection", f"connection failed ({type(e).__name__}: {e})") from None
        finally:
            conn.close()
        if resp.status in RETRIED_STATUS:
            kind = "rate_limited" if resp.status == 429 else f"http_{resp.status}"
            raise _Retryable(kind, f"HTTP {resp.status}: {_snippet(data)}", parse_retry_after(resp.getheader("Retry-After")))
        if resp.status >= 400:
            raise RequestFailed(f"{self.base_url}{path}: HTTP {resp.status}: {_snippet(data)}", kind=f"http_{resp.status}", attempts=1)
        try:
            reply = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable("malformed", f"reply is not valid JSON ({len(data)} bytes: {_snippet(data)})") from None
        if not isinstance(reply, dict):
            raise _Retryable("malformed", f"reply is JSON but not an object: {_snippet(data)}")
        return reply


def _set_timeout(conn: http.client.HTTPConnection, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(left)


def _snippet(data: bytes, n: int = 200) -> str:
    return repr(data[:n].decode("utf-8", "replace")) + ("…" if len(data) > n else "")
