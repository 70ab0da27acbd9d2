"""Preference oracles: Bradley–Terry over a judge, an exact matrix, and a pairwise LLM judge
behind a real (loopback) OpenAI-compatible HTTP server; caching and call counts."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from prefdistill.config.checks import load_config
from prefdistill.config.schema import ApiConfig, ConfigError, OracleConfig
from prefdistill.judges.oracles import BradleyTerryOracle, MatrixOracle, PairwiseAPIOracle, TeacherScorer, build_oracle
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


# ----------------------------------------------------------------------------- the teacher as oracle


class StubTeacher:
    """A scoring teacher with hand-given log-likelihoods: text -> (summed log p(y|x), tokens); records every call."""

    name = "stub-teacher"
    can_score = True
    TABLE = {"a": (-2.0, 1), "bb": (-3.0, 3), "ccc": (-10.0, 4), "dd": (-3.0, 3)}  # means -2, -1, -2.5, -1

    def __init__(self):
        self.calls = []

    def score(self, prompts, completions, *, normalize=False):
        self.calls.append((list(completions), normalize))
        return [self.TABLE[c][0] / self.TABLE[c][1] if normalize else self.TABLE[c][0] for c in completions]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_teacher_oracle_is_bradley_terry_on_the_teachers_mean_log_likelihoods():
    teacher = StubTeacher()
    oracle = BradleyTerryOracle(TeacherScorer(teacher), temperature=0.5)
    texts = ["a", "bb", "ccc"]
    (m,) = oracle.win_matrices(["x"], [texts])
    r = np.array([-2.0, -1.0, -2.5])  # log p(y|x)/|y| of each text
    assert np.allclose(m, _sigmoid((r[:, None] - r[None, :]) / 0.5))  # P[i, j] = σ((r_i − r_j)/τ)
    assert np.allclose(m + m.T, 1.0) and np.allclose(np.diag(m), 0.5)
    assert m[1, 0] == pytest.approx(_sigmoid(2.0))  # a 1-nat gap at τ = 0.5
    # The length-normalised score is the one asked for: summed, "a" (-2) would beat "bb" (-3); per token "bb" wins.
    assert [n for _, n in teacher.calls] == [True] and int(oracle.win_rates(m).argmax()) == 1
    assert oracle.name == "bradley-terry(teacher(stub-teacher))"


def test_teacher_oracle_temperature_limits():
    r = np.array([-2.0, -1.0, -2.5, -1.0])
    texts = ["a", "bb", "ccc", "dd"]  # "bb" and "dd" score alike
    (sharp,) = BradleyTerryOracle(TeacherScorer(StubTeacher()), temperature=1e-4).win_matrices(["x"], [texts])
    argmax = np.where(r[:, None] > r[None, :], 1.0, np.where(r[:, None] < r[None, :], 0.0, 0.5))
    assert np.array_equal(sharp, argmax)  # τ → 0: the teacher's argmax preference, ½ on ties, without overflow
    (flat,) = BradleyTerryOracle(TeacherScorer(StubTeacher()), temperature=1e4).win_matrices(["x"], [texts])
    assert np.allclose(flat, 0.5, atol=1e-4)  # τ → ∞: no preference
    with pytest.raises(ValueError, match="temperature must be positive"):
        BradleyTerryOracle(TeacherScorer(StubTeacher()), temperature=0.0)


def test_teacher_oracle_caches_scores_and_counts_texts_scored():
    teacher = StubTeacher()
    oracle = BradleyTerryOracle(TeacherScorer(teacher), temperature=1.0)
    oracle.win_matrices(["x", "y"], [["a", "bb", "a"], ["a", "ccc"]])  # "a" twice for x: scored once
    assert oracle.counts() == {"comparisons": 2, "queries": 4}  # x: (a, bb) only; y: (a, ccc)
    assert sorted(teacher.calls[0][0]) == ["a", "a", "bb", "ccc"]  # (x, a) and (y, a) are different questions
    oracle.win_matrices(["x"], [["bb", "a"]])  # all known: not asked, not counted
    assert len(teacher.calls) == 1 and oracle.counts() == {"comparisons": 2, "queries": 4}
    oracle.win_matrices(["x"], [["bb", "dd"]])  # one new text, one new pair
    assert teacher.calls[-1] == (["dd"], True) and oracle.counts() == {"comparisons": 3, "queries": 5}


def test_build_oracle_kind_teacher_scores_with_the_teacher_and_builds_no_judge():
    def no_judge():
        raise AssertionError("the training judge was built")

    teacher = StubTeacher()
    oracle = build_oracle(OracleConfig(kind="teacher", temperature=0.3), no_judge, lambda: teacher)
    assert isinstance(oracle, BradleyTerryOracle) and oracle.temperature == 0.3 and oracle.judge.lm is teacher
    with pytest.raises(ValueError, match="no teacher"):
        build_oracle(OracleConfig(kind="teacher"), no_judge)
    judged = build_oracle(OracleConfig(kind="judge"), LengthJudge, lambda: pytest.fail("the teacher was loaded"))
    assert isinstance(judged.judge, LengthJudge)


def test_kind_teacher_is_refused_at_config_time_for_a_teacher_that_cannot_score(monkeypatch):
    from dataclasses import replace

    from prefdistill.models import backends

    api_teacher = {"name_or_path": "m", "backend": "openai", "api": {"base_url": "http://127.0.0.1:9/v1", "logprobs": "off"}}
    base = {"teacher": api_teacher, "student": {"name_or_path": "s"}, "sft": {"teacher": {"enabled": False}},
            "oracle": {"kind": "teacher"}}
    with pytest.raises(ConfigError, match=r"oracle.kind: 'teacher' .*backend openai cannot give \(teacher.api.logprobs is off\)"):
        load_config(base)
    cfg = load_config(base, ["teacher.api.logprobs=auto"])  # the server's echo is probed when the oracle is built
    assert cfg.oracle.kind == "teacher" and cfg.oracle.label == "teacher (τ=1)"
    hf = backends.BACKENDS["hf"]
    monkeypatch.setitem(backends.BACKENDS, "hf", replace(hf, capabilities=replace(hf.capabilities, can_score=False)))
    with pytest.raises(ConfigError, match=r"oracle.kind: 'teacher' .*capabilities: can_score false.*oracle.kind judge or api"):
        load_config({"teacher": {"name_or_path": "t"}, "student": {"name_or_path": "s"}, "oracle": {"kind": "teacher"}})
    with pytest.raises(ConfigError, match="oracle.kind: must be one of"):
        load_config({**base, "oracle": {"kind": "teachr"}})



def test_a_bench_entrys_teacher_oracle_is_checked_against_the_teacher_too():
    from prefdistill.config.checks import load_bench_config

    api_teacher = {"name_or_path": "m", "backend": "openai", "api": {"base_url": "http://127.0.0.1:9/v1", "logprobs": "off"}}
    data = {"teacher": api_teacher, "student": {"name_or_path": "s"}, "sft": {"teacher": {"enabled": False}},
            "bench": {"methods": [{"name": "seqkd", "method": "seqkd"},
                                  {"name": "wind", "method": "wind", "oracle": {"kind": "teacher", "temperature": 0.3}}]}}
    with pytest.raises(ConfigError, match=r"bench.methods\[1\].oracle.kind: 'teacher' .*teacher.api.logprobs is off.*"
                                          r"bench.methods\[1\].oracle.kind judge or api"):
        load_bench_config(data)
    data["bench"]["methods"][1]["oracle"] = {"kind": "api", "model": "m", "api": {"base_url": "http://127.0.0.1:9/v1"}}
    _, bench = load_bench_config(data)  # the text-only chat teacher as an LLM judge instead
    assert bench.methods[1].oracle.label == "api (m)" and bench.methods[0].oracle is None
