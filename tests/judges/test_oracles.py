"""Preference oracles: Bradley–Terry over a judge, an exact matrix, and a pairwise LLM judge
behind a real (loopback) OpenAI-compatible HTTP server; caching and call counts."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from prefdistill.config.checks import load_config
from prefdistill.config.schema import ApiConfig, ConfigError, OracleConfig
from prefdistill.judges.oracles import BradleyTerryOracle, MatrixOracle, PairwiseAPIOracle, build_oracle
from prefdistill.models.api_client import APIClient


class LengthJudge:
    name = "length"

    def __init__(self):
        self.calls = 0

    def score(self, prompts, responses):
        self.calls += len(responses)
        return [float(len(r)) for r in responses]


def test_bradley_terry_matrix_is_a_preference_matrix_and_cached():
    judge = LengthJudge()
    oracle = BradleyTerryOracle(judge, temperature=2.0)
    (m,) = oracle.win_matrices(["x"], [["a", "abc", "ab"]])
    assert np.allclose(m + m.T, 1.0) and np.allclose(np.diag(m), 0.5)
    assert m[1, 0] == pytest.approx(1 / (1 + np.exp(-(3 - 1) / 2.0)))
    assert oracle.counts() == {"comparisons": 3, "queries": 3}
    oracle.win_matrices(["x"], [["abc", "a"]])  # all cached: nothing new asked or counted
    assert oracle.counts() == {"comparisons": 3, "queries": 3} and judge.calls == 3
    assert oracle.win_rates(m).tolist() == pytest.approx([(m[0, 1] + m[0, 2]) / 2, (m[1, 0] + m[1, 2]) / 2, (m[2, 0] + m[2, 1]) / 2])


def test_matrix_oracle_indexes_actions_and_rejects_bad_matrices():
    p = np.array([[[0.5, 0.9], [0.1, 0.5]]])
    (m,) = MatrixOracle(p).win_matrices([0], [[1, 0, 1]])
    assert m.tolist() == [[0.5, 0.1, 0.5], [0.9, 0.5, 0.9], [0.5, 0.1, 0.5]]
    with pytest.raises(ValueError, match="P \\+ Pᵀ = 1"):
        MatrixOracle(np.array([[[0.5, 0.9], [0.9, 0.5]]]))


class _Judge(BaseHTTPRequestHandler):
    """An A/B judge that prefers the longer response, but says "A" on ties and has a position bias
    toward A whenever the two lengths differ by one character."""

    requests = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"]
        a = text.split("Response A:\n", 1)[1].split("\n\nResponse B:", 1)[0]
        b = text.split("Response B:\n", 1)[1].split("\n\nWhich response", 1)[0]
        type(self).requests.append((a, b, self.headers.get("Authorization")))
        answer = "A" if len(a) >= len(b) or abs(len(a) - len(b)) == 1 else "B"
        if a == "garbled" or b == "garbled":
            answer = "I cannot decide."
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_server():
    _Judge.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_pairwise_api_oracle_asks_both_orders_and_cancels_position_bias(judge_server, monkeypatch):
    monkeypatch.setenv("PD_JUDGE_KEY", "secret")
    oracle = PairwiseAPIOracle(APIClient(judge_server, api_key_env="PD_JUDGE_KEY"), "judge-model", max_workers=4)
    (m,) = oracle.win_matrices(["x"], [["aaaa", "aa", "aaa"]])
    assert np.allclose(m + m.T, 1.0)
    assert m[0, 1] == 1.0 and m[1, 0] == 0.0  # clear preference, both orders agree
    assert m[0, 2] == 0.5 and m[2, 0] == 0.5  # 4 vs 3 characters: the biased judge says "A" both ways, a tie
    assert oracle.counts() == {"comparisons": 3, "queries": 6}
    assert {r[2] for r in _Judge.requests} == {"Bearer secret"}
    oracle.win_matrices(["x"], [["aa", "aaaa"]])  # cached
    assert oracle.counts()["queries"] == 6 and len(_Judge.requests) == 6


def test_unparseable_answers_count_as_ties(judge_server):
    oracle = PairwiseAPIOracle(APIClient(judge_server), "judge-model")
    (m,) = oracle.win_matrices(["x"], [["garbled", "zz"]])
    assert m[0, 1] == 0.5 and oracle.unparsed == 2


def test_unreachable_server_names_the_url():
    oracle = PairwiseAPIOracle(APIClient("http://127.0.0.1:9/v1", max_retries=0, timeout_s=2), "m")
    with pytest.raises(RuntimeError, match="http://127.0.0.1:9/v1/chat/completions: connection failed"):
        oracle.win_matrices(["x"], [["a", "b"]])


def test_oracle_config():
    base = {"teacher": {"name_or_path": "t"}, "student": {"name_or_path": "s"}}
    with pytest.raises(ConfigError, match="oracle.api.base_url and oracle.model"):
        load_config(base, ["oracle.kind=api"])
    oracle = build_oracle(OracleConfig(kind="judge", temperature=0.5), LengthJudge)
    assert isinstance(oracle, BradleyTerryOracle) and oracle.temperature == 0.5
    api = build_oracle(OracleConfig(kind="api", model="m", api=ApiConfig(base_url="http://h/v1", timeout_s=7.0, max_retries=2,
                                                                        max_concurrency=3)), LengthJudge)
    assert isinstance(api, PairwiseAPIOracle) and api.max_workers == 3  # the oracle takes every ApiConfig setting
    assert (api.client.timeout_s, api.client.max_retries) == (7.0, 2)
