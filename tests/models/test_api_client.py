"""The OpenAI-compatible client and API teacher against loopback stand-ins (fast; no model).

The same code against a real llama.cpp server is in test_api_teacher.py.
"""
import json
import time

import pytest

from prefdistill.config.checks import load_config
from prefdistill.config.schema import ConfigError
from prefdistill.models.api import APILM, GenerationFailure, completion_token_logps
from prefdistill.models.api_client import APIClient, RequestFailed, parse_retry_after
from prefdistill.testing import FAULTS, FaultProxy
from servers import FakeOpenAI


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def client(url: str, **kw) -> APIClient:
    return APIClient(url + "/v1", **{"timeout_s": 2.0, "max_retries": 3, "backoff_s": 0.01, **kw})


def test_every_transient_fault_is_retried_until_the_reply_arrives(fake):
    kinds = [f for f in FAULTS if f not in ("stall", "empty")]  # a stall costs the timeout; "empty" is valid JSON
    plan = lambda n, payload: kinds[n] if n < len(kinds) else None  # noqa: E731
    with FaultProxy(fake.url, plan) as proxy:
        c = client(proxy.url, max_retries=len(kinds))
        reply = c.post("/completions", {"model": "m", "prompt": "hello"})
    assert reply["choices"][0]["text"] == "reply to: hello"
    assert proxy.requests == len(kinds) + 1 == c.stats["requests"]
    assert c.stats["retries"] == len(kinds) and c.stats["failed"] == 0
    assert c.stats["fault_connection"] == 1 and c.stats["fault_rate_limited"] == 1 and c.stats["fault_malformed"] == 1


def test_retry_after_is_honoured(fake):
    with FaultProxy(fake.url, lambda n, p: "rate_limited" if n == 0 else None) as proxy:
        t0 = time.monotonic()
        client(proxy.url).post("/completions", {"prompt": "x"})
    assert time.monotonic() - t0 >= 1.0  # the proxy says Retry-After: 1; the backoff alone is ~0.01 s


def test_client_errors_are_not_retried(fake):
    with FaultProxy(fake.url, lambda n, p: "http_400") as proxy:
        c = client(proxy.url)
        with pytest.raises(RequestFailed, match="HTTP 400") as e:
            c.post("/completions", {"prompt": "x"})
    assert proxy.requests == 1 and e.value.kind == "http_400"


def test_the_timeout_is_a_hard_deadline(fake):
    with FaultProxy(fake.url, lambda n, p: "stall", stall_s=3.0):
        pass
    with FaultProxy(fake.url, lambda n, p: "stall", stall_s=3.0) as proxy:
        c = client(proxy.url, timeout_s=0.5, max_retries=1)
        t0 = time.monotonic()
        with pytest.raises(RequestFailed, match="within 0.5 s") as e:
            c.post("/completions", {"prompt": "x"})
    assert e.value.kind == "timeout" and e.value.attempts == 2
    assert time.monotonic() - t0 < 2.0


def test_unreachable_server_fails_with_the_url(tmp_path):
    from prefdistill.models.llama_server import free_port

    c = client(f"http://127.0.0.1:{free_port()}", max_retries=1)
    with pytest.raises(RequestFailed, match="connection failed"):
        c.post("/completions", {"prompt": "x"})


def test_api_key_goes_only_into_the_header(fake, monkeypatch):
    monkeypatch.setenv("PD_TEST_KEY", "sk-very-secret-123")
    lm = APILM(client(fake.url, api_key_env="PD_TEST_KEY"), "m", endpoint="completions")
    assert "sk-very-secret-123" not in repr(vars(lm)) + repr(vars(lm.client))
    lm.generate(["hi"], _sampling(), seed=0, desc="")
    assert fake.headers_seen[-1]["Authorization"] == "Bearer sk-very-secret-123"
    with FaultProxy(fake.url, lambda n, p: "http_400") as proxy:
        with pytest.raises(RequestFailed) as e:
            client(proxy.url, api_key_env="PD_TEST_KEY").post("/completions", {"prompt": "x"})
    assert "sk-very-secret-123" not in str(e.value)


def _sampling(**kw):
    from prefdistill.config.schema import SamplingConfig

    return SamplingConfig(**{"max_new_tokens": 8, "num_samples": 2, **kw})


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_generate_reports_each_prompt_once_and_failures_as_values(fake, endpoint):
    poison = "never answered"
    emptied = set()

    def plan(n, payload):  # the poison prompt always fails; the third prompt's first request comes back empty, once
        text = json.dumps(payload)
        if poison in text:
            return "http_500"
        if "third prompt" in text and not emptied:  # by prompt, not by request number: threads reorder requests
            emptied.add(n)
            return "empty"
        return None

    prompts = ["first prompt", poison, "third prompt", "fourth prompt"]
    with FaultProxy(fake.url, plan) as proxy:
        lm = APILM(client(proxy.url, max_retries=2), "m", endpoint=endpoint, max_concurrency=3)
        seen = []
        out = lm.generate(prompts, _sampling(), seed=0, desc="", on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2, 3]
    assert isinstance(out[1], GenerationFailure) and out[1].kind == "http_500" and out[1].attempts == 3
    for i in (0, 2, 3):
        assert out[i] == [f"reply to: {prompts[i]}"] * 2
    assert proxy.faults["empty"] > 0 and lm.stats["fault_empty"] == proxy.faults["empty"]
    assert lm.stats["retries"] + lm.stats["failed"] == sum(proxy.faults.values())


def test_scoring_through_echoed_logprobs(fake):
    lm = APILM(client(fake.url), "m", endpoint="completions")
    assert lm.can_score
    # "Q\n" + "one two three": the fake gives −1 per word after the first; the completion has 3 words.
    assert lm.score(["Q"], ["one two three"]) == [-3.0]
    assert lm.score(["Q"], ["one two three"], normalize=True) == [-1.0]


def test_a_server_without_logprobs_falls_back_to_text_only_with_a_reason():
    with FakeOpenAI(logprobs=False) as server:
        lm = APILM(client(server.url), "m", endpoint="chat")
        assert not lm.can_score and "log-probs" in lm.score_unavailable
        with pytest.raises(ValueError, match="cannot score"):
            lm.score(["Q"], ["a"])
        strict = APILM(client(server.url), "m", logprobs="on")
        with pytest.raises(ValueError, match="logprobs is 'on'"):
            strict.can_score


def test_implausible_echoed_logprobs_are_not_trusted():
    with FakeOpenAI(word_logp=-12.0) as server:  # what a server with shifted log-probs gives on the counting probe
        lm = APILM(client(server.url), "m", endpoint="completions")
        assert not lm.can_score and "sanity check" in lm.score_unavailable


def test_completion_token_logps_picks_the_completion_tokens():
    # text "ab|cd" with the completion starting at 2; token "bc" straddles the border.
    reply = {"choices": [{"logprobs": {"tokens": ["a", "bc", "d", "X"], "token_logprobs": [None, -1.0, -2.0, -9.0],
                                       "text_offset": [0, 1, 3, 4]}}]}
    assert completion_token_logps(reply, 2, 4) == [-1.0, -2.0]  # "X" at offset 4 was generated, not echoed
    with pytest.raises(Exception, match="logprobs"):
        completion_token_logps({"choices": [{"text": "x"}]}, 0, 1)


def test_parse_retry_after():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # a date in the past: no wait


def _api_cfg(tiny_assets, tmp_path, **overrides):
    from prefdistill.models.tiny import tiny_config

    cfg = tiny_config(tiny_assets, tmp_path)
    cfg["teacher"] = {"name_or_path": "m", "backend": "openai", "api": {"base_url": "http://127.0.0.1:9/v1"}}
    cfg["sft"]["teacher"] = {"enabled": False}
    return load_config(cfg, [f"{k}={v}" for k, v in overrides.items()])


def test_config_says_what_an_api_teacher_cannot_do(tiny_assets, tmp_path):
    assert _api_cfg(tiny_assets, tmp_path).teacher.api.endpoint == "chat"
    with pytest.raises(ConfigError, match="sft.teacher.enabled"):
        _api_cfg(tiny_assets, tmp_path, **{"sft.teacher.enabled": True})
    with pytest.raises(ConfigError, match="api.base_url"):
        _api_cfg(tiny_assets, tmp_path, **{"teacher.api.base_url": ""})
    with pytest.raises(ConfigError, match="next-token distributions"):
        _api_cfg(tiny_assets, tmp_path, **{"distill.method": "kd", "distill.params": {}})
    with pytest.raises(ConfigError, match="student.backend"):
        _api_cfg(tiny_assets, tmp_path, **{"student.backend": "openai"})
    with pytest.raises(ConfigError, match="endpoint"):
        _api_cfg(tiny_assets, tmp_path, **{"teacher.api.endpoint": "stream"})


def test_dpkd_with_an_api_teacher_uses_its_echoed_logprobs(tiny_assets, tmp_path):
    from prefdistill.io import read_jsonl
    from prefdistill.run.pipeline import Pipeline

    with FakeOpenAI() as server:
        cfg = _api_cfg(tiny_assets, tmp_path, **{"teacher.api.base_url": server.url + "/v1", "teacher.api.endpoint": "completions",
                                                 "distill.method": "dpkd", "distill.params": {}})
        pipe = Pipeline(cfg)
        pipe.run(["sft", "pairs", "distill"])
    pair, logps = read_jsonl(pipe.run_dir / "pairs" / "pairs.jsonl")[0], read_jsonl(pipe.run_dir / "pairs" / "teacher_logps.jsonl")[0]
    assert logps["teacher_sample"] == -len(pair["chosen"].split())  # the fake gives −1 per echoed word
    assert logps["student_sample"] == -len(pair["rejected"].split())


def test_dpkd_refuses_a_text_only_api_teacher_with_the_reason(tiny_assets, tmp_path):
    from prefdistill.run.pipeline import Pipeline

    with FakeOpenAI(logprobs=False) as server:
        cfg = _api_cfg(tiny_assets, tmp_path, **{"teacher.api.base_url": server.url + "/v1", "distill.method": "dpkd",
                                                 "distill.params": {}})
        with pytest.raises(ValueError, match="returns text only .*no usable log-probs"):
            Pipeline(cfg).run(["sft", "pairs", "distill"])


def test_serve_refuses_what_is_not_a_gguf(tmp_path, capsys):
    from prefdistill.cli import main

    (tmp_path / "model.bin").write_bytes(b"x")
    assert main(["serve", str(tmp_path / "model.bin")]) == 2
    err = capsys.readouterr().err
    assert "not a .gguf file" in err or "llama-cpp-python" in err  # the latter where the server is not installed
