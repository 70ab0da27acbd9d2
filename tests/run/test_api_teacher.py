"""The API teacher against a REAL OpenAI-compatible server: llama-cpp-python serving SmolLM2 on loopback.

A fault-injecting proxy sits between client and server for the reliability checks. The
server is started once per session (`llama_server` in conftest.py); .ci/run builds it.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import yaml

from prefdistill.config.checks import load_config
from prefdistill.config.schema import SamplingConfig
from prefdistill.io import read_jsonl
from prefdistill.models.tiny import tiny_config
from prefdistill.run.pipeline import Pipeline
from prefdistill.testing import FAULTS, FaultProxy, prompt_of


def api_lm(url: str, endpoint: str = "completions", **kw):
    from prefdistill.models.api_client import APIClient
    from prefdistill.models.api import APILM

    client = APIClient(url + "/v1", timeout_s=kw.pop("timeout_s", 30.0), max_retries=3, backoff_s=0.05)
    return APILM(client, "smollm2", endpoint=endpoint, **kw)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_generate_on_a_real_server(llama_server, endpoint):
    """A re-run sends exactly the same seeded requests (one per sample, in whatever order the workers send them)."""
    sampling = SamplingConfig(max_new_tokens=12, num_samples=2)
    prompts = ["Summarize: the cat slept all day in the sun.", "Name three colours."]
    with FaultProxy(llama_server.url) as proxy:
        lm = api_lm(proxy.url, endpoint, max_concurrency=2)
        out = lm.generate(prompts, sampling, seed=3, desc="")
        sent = len(proxy.payloads)
        # Sets: a request the client retried (a timeout on a loaded machine) is sent twice with one seed.
        first = sorted({(prompt_of(p), p["seed"]) for p in proxy.payloads})
        lm.generate(prompts, sampling, seed=3, desc="")
        second = sorted({(prompt_of(p), p["seed"]) for p in proxy.payloads[sent:]})
    assert [len(o) for o in out] == [2, 2] and all(t.strip() for o in out for t in o)
    assert first == second and len({seed for _, seed in first}) == 4  # same seeds on a re-run, one per sample


def test_a_seeded_request_is_reproduced_from_the_same_server_state(llama_server):
    """What llama.cpp's server guarantees: the same seeded request gives the same text when the request before it
    shares no prompt prefix with it. (After one that does, the server reuses that prefix's KV cache, evaluates only
    the rest, and the log-probs move by up to ~0.1 nats: the text then differs. See docs/api_teacher.md.)"""
    lm = api_lm(llama_server.url, "completions", max_concurrency=1)
    sampling = SamplingConfig(max_new_tokens=16, num_samples=1)
    outs = []
    for _ in range(2):
        llama_server.complete("Name three colours.", max_tokens=2)  # the same state before each request
        outs.append(lm.generate(["Summarize: the cat slept all day in the sun."], sampling, seed=3, desc=""))
    assert outs[0] == outs[1] and outs[0][0][0].strip()


def test_echoed_logprobs_are_used_only_when_they_are_right(llama_server):
    """llama-cpp-python 0.3.36 shifts echoed log-probs by one token; the probe must catch that,
    and if a server passes the probe its scores must match the same weights scored locally."""
    lm = api_lm(llama_server.url)
    if not lm.can_score:
        assert "sanity check" in lm.score_unavailable
        return
    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.hf import LocalLM

    local = LocalLM.load(ModelConfig(name_or_path="builtin:smollm2-135m-instruct", prompt_format="plain"))
    prompt, completion = "Summarize: the cat sat on the mat.", "A cat sat on a mat."
    ids = local.tokenizer(completion, add_special_tokens=False)["input_ids"]
    per_token, mask = local.completion_logps([prompt], [ids])
    assert lm.score([prompt], [completion])[0] == pytest.approx(float((per_token * mask).sum()), abs=1.5)  # Q4 vs fp32


def faulty_plan(poison: str):
    """Each distinct request (prompt, seed) meets at most one fault, on its first try, kinds in turn;
    requests for the poisoned prompt always get HTTP 500."""
    seen, lock = Counter(), threading.Lock()

    def plan(n, payload):
        if poison in prompt_of(payload):
            return "http_500"
        key = (prompt_of(payload), payload.get("seed"))
        with lock:
            first, seen[key] = key not in seen, seen[key] + 1
            index = len(seen)
        return FAULTS[(index // 2) % len(FAULTS)] if first and index % 2 == 0 else None

    return plan


def api_run_config(tiny_assets, tmp_path, url: str, **teacher_api) -> dict:
    cfg = tiny_config(tiny_assets, tmp_path)
    cfg["teacher"] = {"name_or_path": "smollm2", "backend": "openai",
                      "api": {"base_url": url + "/v1", "endpoint": "completions", "api_key_env": "PD_TEST_API_KEY",
                              "backoff_s": 0.05, **teacher_api}}
    cfg["sft"]["teacher"] = {"enabled": False}
    cfg["pairs"]["teacher_sampling"] = {"max_new_tokens": 12, "num_samples": 2}
    cfg["pairs"]["student_sampling"] = {**cfg["pairs"]["student_sampling"], "num_samples": 2}
    cfg["pairs"]["max_failed_fraction"] = 0.2
    return cfg


def test_pair_generation_survives_every_fault(llama_server, tiny_assets, tmp_path, monkeypatch):
    monkeypatch.setenv("PD_TEST_API_KEY", "sk-never-written-9f3a")
    cfg = load_config(api_run_config(tiny_assets, tmp_path, "http://placeholder"))
    examples = Pipeline(cfg).artifacts.splits["distill"]
    poison = examples[3].prompt
    with FaultProxy(llama_server.url, faulty_plan(poison), stall_s=6.0) as proxy:
        raw = api_run_config(tiny_assets, tmp_path, proxy.url, timeout_s=5.0, max_retries=3, max_concurrency=2)
        pipe = Pipeline(load_config(raw), allow_config_change=True)
        pipe.run(["sft", "pairs"])
    run = pipe.run_dir
    journal = read_jsonl(run / "samples" / "teacher" / "samples.jsonl")
    ids = [r["id"] for r in journal]
    assert len(ids) == len(set(ids)) == len(examples) - 1  # every prompt answered exactly once, but the poisoned one
    assert set(ids) == {e.id for e in examples} - {examples[3].id}
    assert all(len(r["samples"]) == 2 and all(s.strip() for s in r["samples"]) for r in journal)
    failures = read_jsonl(run / "pairs" / "failures.jsonl")
    assert [(f["role"], f["id"], f["prompt"], f["kind"]) for f in failures] == [("teacher", examples[3].id, poison, "http_500")]
    stats = json.loads((run / "samples" / "teacher" / "api_stats.json").read_text())
    assert set(proxy.faults) == set(FAULTS) | {"http_500"}  # every kind of fault was met
    assert stats["requests"] == proxy.requests
    # Each fault (and each healthy reply that came after the client's deadline) cost one retry or ended one request.
    assert stats["retries"] + stats["failed"] == sum(proxy.faults.values()) + proxy.abandoned
    pairs = read_jsonl(run / "pairs" / "pairs.jsonl")
    summary = json.loads((run / "pairs" / "summary.json").read_text())
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert len(pairs) + summary["skipped_empty"] + summary["skipped_identical"] == 2 * (len(examples) - 1)  # no pair lost
    assert summary["failed_prompts"] == 1
    everything = "".join(p.read_text(errors="replace") for p in run.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".yaml"))
    assert "sk-never-written-9f3a" not in everything and "PD_TEST_API_KEY" in everything  # the variable's name, not its value


def test_sigkill_mid_generation_loses_and_repeats_nothing(llama_server, tiny_assets, tmp_path):
    """Kill pair generation with SIGKILL mid-way; the restart keeps every finished prompt and asks only for the rest."""
    with FaultProxy(llama_server.url, delay_s=0.4) as slow:
        raw = api_run_config(tiny_assets, tmp_path, slow.url, max_concurrency=2)
        raw["stages"] = ["sft", "pairs"]
        config = tmp_path / "api.yaml"
        config.write_text(yaml.safe_dump(raw))
        Pipeline(load_config(str(config))).run(["sft"])
        journal = tmp_path / "tiny" / "samples" / "teacher" / "samples.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "prefdistill", "run", str(config), "--stages", "pairs"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not journal.is_file() or journal.read_text().count("\n") < 4):
            assert proc.poll() is None, "pair generation ended before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = journal.read_text()
    before = text[:text.rfind("\n") + 1]  # complete lines; a line cut by the kill is not a finished prompt
    finished = {r["id"]: r for r in map(json.loads, before.splitlines())}
    examples = Pipeline(load_config(str(config))).artifacts.splits["distill"]
    assert 4 <= len(finished) < len(examples)
    with FaultProxy(llama_server.url) as proxy:  # the same run, restarted against a healthy path
        raw["teacher"]["api"]["base_url"] = proxy.url + "/v1"
        config.write_text(yaml.safe_dump(raw))
        Pipeline(load_config(str(config)), allow_config_change=True).run(["pairs"])
    after = journal.read_text()
    assert after.startswith(before)  # every finished line kept, byte for byte
    rows = read_jsonl(journal)
    assert sorted(r["id"] for r in rows) == sorted(e.id for e in examples)  # complete, no duplicates
    asked = {p.strip() for p in proxy.forwarded}
    assert not asked & {r["prompt"].strip() for r in finished.values()}  # nothing finished was generated again
    assert asked == {e.prompt.strip() for e in examples if e.id not in finished}
