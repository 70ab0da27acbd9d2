"""A served or cached teacher whose tokens of a row do not line up with the student's fails that row, not the run.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/signal/test_signal_failures.py

The tokenizer is a byte-level BPE trained in memory on a few sentences (no download): a student
can sample a non-canonical split of a text ("t" "h" "e" for "the"), which is re-tokenised before
it is trained on and scored, and a character the merges never saw ("日", or the "ï" of "naïve")
is split into byte tokens that no server names one for one. With `vocabulary: shared` such a row is recorded with its id
and reason, left out of the distillation term, counted in the training log, and above
`distill.signal_max_failed_fraction` the run stops naming the rows; with `auto` (the default) a
served row is read by character offset instead (tests/signal/test_served_across_tokenizers.py). Teacher and student are tiny
random Llamas over that vocabulary; the teacher is served by `servers.LogitServer`. A random
model cannot count, so the echo probe (tests/signal/test_topk_sources.py) is skipped here.
"""
import json
import math

import pytest
import torch

from prefdistill.methods import ResolvedMethod, resolve_method
from prefdistill.methods import get_method
from prefdistill.methods.gkd import GKDParams
from prefdistill.methods.kd import KDParams
from prefdistill.models.common import plain_prompt
from prefdistill.models.rollout import Rollout
from prefdistill.signal.topk_cache import build_topk_cache
from servers import LogitServer, api_lm
from prefdistill.run.artifacts import Artifacts
from prefdistill.run.train_job import train_job
from prefdistill.training.job import TrainingData, TrainJob

SENTENCES = ["the model learns a short summary of each paper", "we propose a small student and a large teacher",
             "the café serves a naïve crème brûlée", "data training results improve the accuracy of the task"]
GOOD = ["the model learns a short summary", "the café serves a small teacher", "we propose data results"]
BAD = "the student learns 日本"  # 日 and 本 are no merge: three byte tokens each, which decode to no text of their own


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=330, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _lm(tok, seed: int, name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefdistill.models.hf import LocalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LocalLM(LlamaForCausalLM(config), tok, name=name, prompt_format="plain")


@pytest.fixture(scope="module")
def teacher(bpe):
    lm = _lm(bpe, 0, "bpe-teacher")
    lm.model.eval().requires_grad_(False)
    return lm


@pytest.fixture
def student(bpe):
    lm = _lm(bpe, 1, "bpe-student")
    lm.model.requires_grad_(True)
    return lm


def _served(server):
    lm = api_lm(server.url, max_concurrency=2)
    lm._can_score = True  # a random model cannot count: the probe is tested in test_topk_sources.py
    return lm


def _many(n_good: int, bad: str) -> list[str]:
    """n_good aligned texts (GOOD in turn), then `bad`: one row in n_good + 1, within the default share of failures."""
    return [GOOD[i % len(GOOD)] for i in range(n_good)] + [bad]


def _pairs(teacher_texts):
    return [{"id": f"{i}#0", "prompt": f"Summarize : doc {i}", "chosen": text, "rejected": "a small paper"}
            for i, text in enumerate(teacher_texts)]


def _loss(student, rows, params, **extras):
    student.model.zero_grad()
    torch.manual_seed(0)
    loss, stats = get_method("gkd").loss(student, rows, params, **extras)
    loss.backward()
    return loss.item(), stats


# ----------------------------------------------------------------------------- canonical samples
def test_non_canonical_student_samples_are_retokenised_before_they_are_trained_on_and_scored(bpe, teacher, student,
                                                                                             monkeypatch):
    texts = ["the model learns", "the café serves"]
    eos = bpe.eos_token_id
    canonical = [bpe(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
    by_character = [[bpe.convert_tokens_to_ids(c) for c in t.replace(" ", "Ġ").replace("é", "Ã©")] + [eos] for t in texts]
    assert [bpe.decode(ids) for ids in by_character] == [bpe.decode(ids) for ids in canonical] and by_character != canonical
    monkeypatch.setattr("prefdistill.methods.gkd.rollout", lambda *a, **k: Rollout(by_character, [[1.0] * len(c) for c in by_character]))
    rows = _pairs(["a paper", "a task"])
    with LogitServer(teacher) as server:
        loss, stats = _loss(student, rows, GKDParams(signal="served", k=4, on_policy_fraction=1.0), served_teacher=_served(server))
    assert math.isfinite(loss) and stats.get("count_signal_failed_rows", 0) == 0
    assert stats["tokens_teacher_scored"] == sum(len(c) for c in canonical) < sum(len(c) for c in by_character)
    assert sorted(p["prompt"] for p in server.payloads) == sorted(plain_prompt(r["prompt"]) + t + "</s>" for r, t in zip(rows, texts))


# ----------------------------------------------------------------------------- served: per row
def test_a_row_the_server_cannot_align_is_left_out_of_the_distillation_term(bpe, teacher, student):
    params = GKDParams(signal="served", k=4, on_policy_fraction=0.0, vocabulary="shared")  # the teacher's side: fixed text
    with LogitServer(teacher) as server:
        served = _served(server)
        alone = _loss(student, _pairs(GOOD[:2]), params, served_teacher=served)
        grads_alone = {n: p.grad.clone() for n, p in student.model.named_parameters()}
        both = _loss(student, _pairs([*GOOD[:2], BAD]), params, served_teacher=served)
    assert both[0] == pytest.approx(alone[0], rel=1e-5) and math.isfinite(both[0])
    for name, p in student.model.named_parameters():
        assert torch.allclose(p.grad, grads_alone[name], rtol=1e-4, atol=1e-7), name
    assert both[1]["count_signal_failed_rows"] == 1 and alone[1]["count_signal_failed_rows"] == 0
    assert both[1]["tokens_teacher_scored"] == alone[1]["tokens_teacher_scored"]  # the failed row's tokens are not counted


def test_by_default_a_row_split_otherwise_is_read_by_character_offset(bpe, teacher, student):
    """vocabulary: auto (the default): the row no server token lines up with is not failed but read by offset, its
    byte-split character's positions left out of the term and the rest of the row in it."""
    params = GKDParams(signal="served", k=4, on_policy_fraction=0.0)
    with LogitServer(teacher) as server:
        alone = _loss(student, _pairs(GOOD[:2]), params, served_teacher=_served(server))
        both = _loss(student, _pairs([*GOOD[:2], BAD]), params, served_teacher=_served(server))
    assert math.isfinite(both[0]) and both[1]["count_signal_failed_rows"] == 0
    assert alone[1]["tokens_teacher_scored"] < both[1]["tokens_teacher_scored"] < both[1]["tokens_completion"]


def test_a_batch_of_one_failed_row_has_no_distillation_term_and_finite_gradients(bpe, teacher, student):
    params = GKDParams(signal="served", k=4, on_policy_fraction=0.0, vocabulary="shared")
    with LogitServer(teacher) as server:
        loss, stats = _loss(student, _pairs([BAD]), params, served_teacher=_served(server))
    assert loss == 0.0 and stats["count_signal_failed_rows"] == 1 and stats["tokens_teacher_scored"] == 0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in student.model.parameters())
    assert all(p.grad is None or not p.grad.any() for p in student.model.parameters())  # nothing pulls the weights


def _pipeline(tiny_assets, tmp_path, name, student_dir, url, monkeypatch, batch_size=2, grad_accum=1, **distill):
    from prefdistill.config.checks import load_config
    from prefdistill.models.api import APILM
    from prefdistill.run.pipeline import Pipeline
    from prefdistill.models.tiny import tiny_config

    monkeypatch.setattr(APILM, "can_score", property(lambda self: True))  # a random model cannot count (see above)
    raw = tiny_config(tiny_assets, tmp_path, name=name)
    raw["teacher"] = {"name_or_path": "teacher", "backend": "openai", "api": {"base_url": url, "max_retries": 1,
                                                                            "endpoint": "completions"}}
    raw["student"] = {"name_or_path": str(student_dir), "prompt_format": "plain"}
    raw["sft"] = {"teacher": {**raw["sft"]["teacher"], "enabled": False}, "student": {**raw["sft"]["student"], "enabled": False}}
    raw["distill"] = {"method": "gkd", "params": {"signal": "served", "k": 4, "on_policy_fraction": 0.0, "vocabulary": "shared"},
                      "train": {**raw["distill"]["train"], "steps": 10, "save_every": 100, "batch_size": batch_size,
                                "grad_accum": grad_accum}, **distill}
    return Pipeline(load_config(raw)).artifacts


@pytest.mark.parametrize("batch_size, grad_accum", [(2, 1), (1, 2)])
def test_served_training_records_the_rows_counts_them_and_stops_above_the_share(tiny_assets, tmp_path, bpe, teacher, student,
                                                                               monkeypatch, batch_size, grad_accum):
    student_dir = tmp_path / "student"
    student.model.save_pretrained(student_dir)
    bpe.save_pretrained(student_dir)
    spec, rows = get_method("gkd"), _pairs(_many(19, BAD))
    params = GKDParams(signal="served", k=4, on_policy_fraction=0.0, vocabulary="shared")
    with LogitServer(teacher) as server:
        url = server.url + "/v1"
        pipe = _pipeline(tiny_assets, tmp_path, "ok", student_dir, url, monkeypatch, batch_size=batch_size,
                         grad_accum=grad_accum)  # the default share: 0.05
        log = train_job(TrainJob(ResolvedMethod.of(spec, params), TrainingData(rows), pipe.cfg.distill.train, tmp_path / "ckpt" / "ok", seed=0), pipe).log  # 10 steps of 2 rows: each row once
        strict = _pipeline(tiny_assets, tmp_path, "strict", student_dir, url, monkeypatch,
                           signal_max_failed_fraction=0.01)
        with pytest.raises(ValueError) as err:
            train_job(TrainJob(ResolvedMethod.of(spec, params), TrainingData(rows), strict.cfg.distill.train, tmp_path / "ckpt" / "strict", seed=0), strict).log
    assert len(log) == 10 and all(math.isfinite(r["loss"]) for r in log)
    assert sum(r["count_signal_failed_rows"] for r in log) == 1
    (record,) = [json.loads(line) for line in (tmp_path / "ckpt" / "ok.signal_failures.jsonl").read_text().splitlines()]
    assert record["id"] == "19#0" and "do not line up" in record["reason"] and record["prompt"] == rows[19]["prompt"]
    message = str(err.value)
    assert "19#0" in message and "distill.signal_max_failed_fraction=0.01" in message and "strict.signal_failures.jsonl" in message
    assert not (tmp_path / "ckpt" / "strict").exists()  # stopped: no finished checkpoint


# ----------------------------------------------------------------------------- cached: per row, once
def test_a_cache_records_the_rows_it_cannot_align_and_a_rerun_does_not_ask_again(bpe, teacher, student, tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"Summarize : doc {i}", "target": t} for i, t in enumerate(_many(19, "a naïve student"))]
    path = tmp_path / "topk_k4.bin"

    def build(teacher_model, **kw):
        return build_topk_cache(teacher_model, [dict(r) for r in rows], 4, path, tokenizer=bpe, teacher_id="t", **kw).stats

    def never():
        raise AssertionError("the teacher was asked again")

    with LogitServer(teacher) as server:
        stats = build(_served(server))  # 1 row in 20: within the default share
        assert len(server.payloads) == 20
        again = build(never)  # the failure is recorded: not retried
        retried = build(_served(server), retry_failed=True)
        asked = len(server.payloads)
        with pytest.raises(ValueError) as err:
            build(never, max_failed_fraction=0.01)
    assert (stats["computed"], stats["failed"]) == (20, 1) and (again["computed"], again["failed"]) == (0, 1)
    assert (retried["computed"], retried["failed"]) == (1, 1) and asked == 21  # asked for the failed row only
    records = [json.loads(line) for line in (tmp_path / "topk_k4.failures.jsonl").read_text().splitlines()]
    assert {r["id"] for r in records} == {"r19"} and "do not line up" in records[0]["reason"]
    assert "r19" in str(err.value) and "signal_max_failed_fraction" in str(err.value) and "signal_retry_failed" in str(err.value)
    cached = [dict(r) for r in rows[16:]]
    cache = build_topk_cache(never, cached, 4, path, tokenizer=bpe, teacher_id="t", max_failed_fraction=0.5)  # 1 row in 4
    _, _, mask = cache.rows()
    assert mask[3].sum() == 0 and (mask[:3].sum(-1) > 0).all()
    params = KDParams(signal="topk", k=4)
    both, stats_both = get_method("kd").loss(student, cached, params, teacher_topk=cache)
    alone, stats_alone = get_method("kd").loss(student, cached[:3], params, teacher_topk=cache)
    assert both.item() == pytest.approx(alone.item(), rel=1e-5)  # the failed row is left out of the KL
    assert stats_both["count_signal_failed_rows"] == 1 and stats_alone["count_signal_failed_rows"] == 0
