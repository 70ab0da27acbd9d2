"""The top-k teacher signal: the coarsened forward KL, the resumable cache, and KD trained from it."""
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from prefdistill.methods import ResolvedMethod, resolve_method
from prefdistill.config.schema import LoraConfig, ModelConfig, TrainConfig
from prefdistill.losses import forward_kl, topk_forward_kl
from prefdistill.models.tiny import tiny_rows
from prefdistill.signal.topk_cache import HEADER, CRC, build_topk_cache, bytes_per_token, scan, topk_of


# ----------------------------------------------------------------------------- the loss
def naive_topk_kl(student_logits, ids, logprobs) -> torch.Tensor:
    """The definition, one position at a time, in Python floats."""
    out = torch.zeros(student_logits.shape[:2], dtype=torch.float64)
    for b in range(student_logits.shape[0]):
        for t in range(student_logits.shape[1]):
            q = torch.softmax(student_logits[b, t].double(), -1).tolist()
            p = [math.exp(x) for x in logprobs[b, t].tolist()]
            q_top = [q[i] for i in ids[b, t].tolist()]
            p_rest, q_rest = max(0.0, 1 - sum(p)), 1 - sum(q_top)
            kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q_top) if pi > 0)
            out[b, t] = kl + (p_rest * math.log(p_rest / q_rest) if p_rest > 0 else 0.0)
    return out


def teacher_topk(teacher_logits, k, temperature=1.0):
    values, ids = torch.log_softmax(teacher_logits / temperature, -1).topk(k, dim=-1)
    return ids, values


def test_hand_example():
    # V = 4; the teacher keeps ids 3 and 0 with p = 0.5 and 0.3, so 0.2 is left for ids 1 and 2.
    s = torch.tensor([[[1.0, 0.0, -1.0, 2.0]]])
    q = torch.softmax(s[0, 0].double(), -1).tolist()
    expected = 0.5 * math.log(0.5 / q[3]) + 0.3 * math.log(0.3 / q[0]) + 0.2 * math.log(0.2 / (q[1] + q[2]))
    got = topk_forward_kl(s, torch.tensor([[[3, 0]]]), torch.tensor([[[math.log(0.5), math.log(0.3)]]]))
    assert got.shape == (1, 1)
    # float32 log-probs near log 0.1 are rounded to ~1e-7 (log Z = 2.44 has a half-ulp of 1.2e-7): the bound of exactness here
    assert got.item() == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_a_naive_loop(k):
    torch.manual_seed(k)
    s, t = torch.randn(2, 3, 6) * 2, torch.randn(2, 3, 6) * 2
    ids, logprobs = teacher_topk(t, k)
    got = topk_forward_kl(s, ids, logprobs)
    assert torch.allclose(got.double(), naive_topk_kl(s, ids, logprobs), atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_k_equal_to_the_vocabulary_is_the_forward_kl(temperature):
    torch.manual_seed(0)
    s = (torch.randn(2, 4, 11) * 3).requires_grad_(True)
    t = torch.randn(2, 4, 11) * 3
    ids, logprobs = teacher_topk(t, 11, temperature)  # every id, most likely first
    got = topk_forward_kl(s / temperature, ids, logprobs)
    want = forward_kl(s, t, temperature=temperature)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, want, atol=1e-6)
    (g_got,) = torch.autograd.grad(got.sum(), s)
    (g_want,) = torch.autograd.grad(want.sum(), s)
    assert torch.isfinite(g_got).all()
    assert torch.allclose(g_got, g_want, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_never_exceeds_the_full_forward_kl(seed):
    torch.manual_seed(seed)
    s, t = torch.randn(3, 5, 16) * 3, torch.randn(3, 5, 16) * 3
    full = forward_kl(s, t)
    for k in (1, 2, 4, 8, 15, 16):
        assert (topk_forward_kl(s, *teacher_topk(t, k)) <= full + 1e-5).all(), k


@pytest.mark.parametrize("k", [1, 4, 9, 10])
def test_zero_when_the_student_is_the_teacher(k):
    torch.manual_seed(k)
    t = torch.randn(2, 3, 10) * 2
    assert topk_forward_kl(t, *teacher_topk(t, k)).abs().max() < 1e-5


def test_gradient_finite_when_the_ids_cover_all_mass():
    """k = V with float16-rounded log-probs (Σ p ≠ 1) and ids the teacher gives no mass (log-prob -inf)."""
    torch.manual_seed(0)
    s = torch.randn(2, 3, 8, requires_grad=True)
    ids, logprobs = teacher_topk(torch.randn(2, 3, 8), 8)
    logprobs = logprobs.half().float()
    logprobs[..., -1] = float("-inf")
    kl = topk_forward_kl(s, ids, logprobs)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(s.grad).all()
    assert s.grad.abs().sum() > 0


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="must"):
        topk_forward_kl(torch.zeros(1, 2, 5), torch.zeros(1, 3, 2, dtype=torch.long), torch.zeros(1, 3, 2))


# ----------------------------------------------------------------------------- the cache
def _rows(n: int) -> list[dict]:
    return [{"prompt": f"Summarize : {r['document']}", "target": r["summary"]} for r in tiny_rows(n, seed=3)]


@pytest.fixture(scope="module")
def teacher(tiny_assets):
    from prefdistill.models.hf import LocalLM

    return LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))


class Counting:
    """A teacher that counts the rows it is asked for."""

    def __init__(self, lm):
        self.lm, self.prompts = lm, []

    def completion_logits(self, prompts, completions):
        self.prompts += prompts
        return self.lm.completion_logits(prompts, completions)


def _never():
    raise AssertionError("the teacher was loaded although every row is cached")


def test_topk_of_keeps_the_most_likely_ids():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    ids, logprobs = topk_of(logits, 2)
    assert ids.dtype == torch.int32 and logprobs.dtype == torch.float16
    assert ids.tolist() == [[1, 3]]
    assert torch.allclose(logprobs.float(), torch.log_softmax(logits, -1)[:, [1, 3]], atol=2e-3)
    assert topk_of(logits, 9, dtype="float32")[1].shape == (1, 4)  # k is cut to the vocabulary


def test_cache_round_trip_layout_and_bytes_per_token(teacher, tmp_path):
    rows, k, path = _rows(5), 8, tmp_path / "topk_k8.bin"
    cache = build_topk_cache(teacher, rows, k, path, tokenizer=teacher.tokenizer, teacher_id="t", dtype="float32")
    assert cache.stats["computed"] == 5 and cache.path == path and len(cache.keys) == 5
    ids, logprobs, mask = cache.rows()
    completions = [teacher.tokenizer(r["target"], add_special_tokens=False)["input_ids"] + [teacher.tokenizer.eos_token_id]
                   for r in rows]
    logits, _, live_mask = teacher.completion_logits([r["prompt"] for r in rows], completions)  # (B, C, V)
    want_ids, want_logps = topk_of(logits, k, dtype="float32")
    assert torch.equal(mask, live_mask)
    on = mask.bool()
    assert torch.equal(ids[on], want_ids[on].long()) and torch.equal(logprobs[on], want_logps[on])
    assert torch.isfinite(topk_forward_kl(torch.zeros_like(logits), ids, logprobs)).all()  # padding positions too
    # float16 log-probs and 2-byte ids (a vocabulary under 65,536): 4k bytes per token + 32 per row.
    path16 = tmp_path / "f16.bin"
    signal16 = build_topk_cache(teacher, rows, k, path16, tokenizer=teacher.tokenizer, teacher_id="t")
    tokens = sum(len(c) for c in completions)
    assert HEADER.size + CRC.size == 32
    assert path16.stat().st_size == 32 * len(rows) + tokens * k * 4
    assert bytes_per_token(path16) == pytest.approx(4 * k + 32 * len(rows) / tokens)
    assert torch.allclose(signal16.rows()[1][on], want_logps[on], atol=1e-2)


def test_a_rerun_reuses_the_cache_without_the_teacher(teacher, tmp_path):
    rows, path = _rows(4), tmp_path / "c.bin"
    cache = build_topk_cache(teacher, rows, 4, path, tokenizer=teacher.tokenizer, teacher_id="t")
    before = path.read_bytes()
    again = _rows(4)
    again_signal = build_topk_cache(_never, again, 4, path, tokenizer=teacher.tokenizer, teacher_id="t")
    assert again_signal.stats["computed"] == 0 and path.read_bytes() == before
    assert again_signal.keys == cache.keys and again_signal == cache
    other = Counting(teacher)  # another teacher id or k is another key
    assert build_topk_cache(other, _rows(4), 4, path, tokenizer=teacher.tokenizer, teacher_id="t2").stats["computed"] == 4


def test_a_torn_last_record_is_dropped_and_only_missing_rows_are_computed(teacher, tmp_path):
    rows, path = _rows(6), tmp_path / "c.bin"
    build_topk_cache(teacher, rows[:3], 4, path, tokenizer=teacher.tokenizer, teacher_id="t")
    index, end, last = scan(path)
    assert len(index) == 3 and end == path.stat().st_size
    with open(path, "r+b") as f:  # a crash in the middle of writing the third record
        f.truncate(last.offset + last.size // 2)
    assert len(scan(path)[0]) == 2
    counting = Counting(teacher)
    cache = build_topk_cache(counting, rows, 4, path, tokenizer=teacher.tokenizer, teacher_id="t")
    assert cache.stats["computed"] == 4 and counting.prompts == [r["prompt"] for r in rows[2:]]
    assert len(scan(path)[0]) == 6 and cache.rows()[0].shape[0] == 6


def test_a_record_whose_checksum_fails_is_recomputed(teacher, tmp_path):
    rows, path = _rows(3), tmp_path / "c.bin"
    build_topk_cache(teacher, rows, 4, path, tokenizer=teacher.tokenizer, teacher_id="t")
    data = bytearray(path.read_bytes())
    data[-10:-4] = bytes(6)  # the last record's payload never reached the disk
    path.write_bytes(bytes(data))
    counting = Counting(teacher)
    assert build_topk_cache(counting, rows, 4, path, tokenizer=teacher.tokenizer, teacher_id="t").stats["computed"] == 1
    assert counting.prompts == [rows[2]["prompt"]]


SLOW_BUILD = """
import json, sys, time
from prefdistill.config.schema import ModelConfig
from prefdistill.models.hf import LocalLM
from prefdistill.signal.topk_cache import build_topk_cache
lm = LocalLM.load(ModelConfig(name_or_path=sys.argv[1]))
class Slow:
    def completion_logits(self, prompts, completions):
        time.sleep(0.3)
        return lm.completion_logits(prompts, completions)
build_topk_cache(Slow(), json.loads(sys.argv[3]), 4, sys.argv[2], tokenizer=lm.tokenizer, teacher_id="t", batch_size=1)
"""


def test_sigkill_mid_build_keeps_every_finished_row(teacher, tiny_assets, tmp_path):
    import json

    rows, path = _rows(12), tmp_path / "c.bin"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(tiny_assets["teacher"]), str(path), json.dumps(rows)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(scan(path)[0]) < 3:
        assert proc.poll() is None, "the build ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    index, end, _ = scan(path)
    before = path.read_bytes()[:end]
    assert 3 <= len(index) < len(rows)
    counting = Counting(teacher)
    cache = build_topk_cache(counting, rows, 4, path, tokenizer=teacher.tokenizer, teacher_id="t")
    assert cache.stats["computed"] == len(rows) - len(index)
    assert len(counting.prompts) == len(rows) - len(index)
    assert path.read_bytes().startswith(before)  # every finished record kept, byte for byte
    assert len(scan(path)[0]) == len(rows)


# ----------------------------------------------------------------------------- KD from the cache
def _kd_loss_and_grads(lm, rows, params, **extras):
    from prefdistill.methods import get_method

    lm.model.zero_grad()
    loss, stats = get_method("kd").loss(lm, rows, params, **extras)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in lm.model.named_parameters()}, stats


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_from_a_full_vocabulary_cache_equals_live_kd(teacher, tiny_assets, tmp_path, temperature):
    from prefdistill.methods.kd import KDParams
    from prefdistill.models.hf import LocalLM

    student = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    student.model.requires_grad_(True)
    rows, vocab = _rows(3), len(student.tokenizer)
    live = KDParams(temperature=temperature, ce_weight=0.5)
    cached = KDParams(temperature=temperature, ce_weight=0.5, signal="topk", k=vocab, topk_dtype="float32")
    assert cached.requirements() == ("targets", {"teacher_topk"})
    cache = build_topk_cache(teacher, rows, vocab, tmp_path / "c.bin", tokenizer=student.tokenizer, teacher_id="t",
                              temperature=temperature, dtype="float32")
    loss_live, grads_live, _ = _kd_loss_and_grads(student, rows, live, teacher=teacher)
    loss_topk, grads_topk, stats = _kd_loss_and_grads(student, rows, cached, teacher_topk=cache)
    assert loss_topk == pytest.approx(loss_live, rel=1e-5, abs=1e-6)
    assert stats["topk_teacher_mass"] == pytest.approx(1.0, abs=1e-5)
    for name, g in grads_live.items():
        assert torch.allclose(grads_topk[name], g, rtol=1e-4, atol=1e-6), name
    # The default float16 cache rounds the log-probs: close, not equal.
    half = KDParams(temperature=temperature, signal="topk", k=vocab)
    half_signal = build_topk_cache(teacher, rows, vocab, tmp_path / "h.bin", tokenizer=student.tokenizer, teacher_id="t",
                                   temperature=temperature)
    loss_half, _, _ = _kd_loss_and_grads(student, rows, half, teacher_topk=half_signal)
    loss_full, _, _ = _kd_loss_and_grads(student, rows, KDParams(temperature=temperature), teacher=teacher)
    assert loss_half == pytest.approx(loss_full, rel=2e-2, abs=1e-3)


def test_kd_topk_trains_two_steps_without_the_teacher(teacher, tiny_assets, tmp_path):
    from prefdistill.methods import get_method
    from prefdistill.methods.kd import KDParams
    from prefdistill.models.hf import LocalLM
    from prefdistill.training.loop import train

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    rows = _rows(4)
    cache = build_topk_cache(teacher, rows, 5, tmp_path / "c.bin", tokenizer=lm.tokenizer, teacher_id="t")
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    log = train(lm, get_method("kd"), KDParams(signal="topk", k=5), rows, TrainConfig(steps=2, batch_size=2, lr=1e-2, save_every=100),
                LoraConfig(enabled=False), out_dir=tmp_path / "ckpt", parent=None, seed=0, desc="kd topk",
                extras={"teacher_topk": cache})
    assert len(log) == 2 and all(math.isfinite(r["loss"]) and 0 < r["topk_teacher_mass"] <= 1.001 for r in log)
    after = dict(lm.model.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n])]
    assert not unchanged, unchanged[:5]


def test_the_pipeline_caches_once_and_trains_without_loading_the_teacher(tiny_assets, tmp_path):
    from prefdistill.config.checks import load_config
    from prefdistill.methods import get_method, method_params
    from prefdistill.run.artifacts import Artifacts
    from prefdistill.run.pipeline import Pipeline
    from prefdistill.run.train_job import train_job
    from prefdistill.training.job import TrainJob
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path, name="kd-topk")
    raw["sft"] = {"teacher": {"enabled": False}, "student": {"enabled": False}}
    raw["distill"] = {**raw["distill"], "method": "kd", "params": {"signal": "topk", "k": 6}}
    cfg = load_config(raw)
    art = Pipeline(cfg).artifacts
    spec, params = get_method("kd"), method_params(cfg)
    data = art.training_data(ResolvedMethod.of(spec, params))
    path = art.folder.topk_cache(6)
    assert data.teacher_topk.path == path and len(scan(path)[0]) == len(set(data.teacher_topk.keys)) > 0
    size = path.stat().st_size
    loaded = []

    def load(role, *a, **k):
        assert role != "teacher", "the teacher was loaded"
        loaded.append(role)
        return Artifacts.load(art, role, *a, **k)

    art.load = load
    assert art.training_data(ResolvedMethod.of(spec, params)).teacher_topk == data.teacher_topk
    assert path.stat().st_size == size
    log = train_job(TrainJob(ResolvedMethod.of(spec, params), data, cfg.distill.train, tmp_path / "ckpt", seed=0), art).log
    assert len(log) == 2 and loaded == ["student"]


def test_the_cache_key_follows_the_teachers_weights_and_chat_template(tiny_assets, tmp_path):
    """A teacher retrained into the same folder, or its chat template edited, gets new keys (and is run again);
    unchanged, the cache is reused without loading it."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefdistill.config.checks import load_config
    from prefdistill.methods import get_method, method_params
    from prefdistill.run.artifacts import Artifacts
    from prefdistill.run.pipeline import Pipeline
    from prefdistill.models.tiny import CHAT_TEMPLATE, tiny_config

    folder = tmp_path / "teacher"
    shutil.copytree(tiny_assets["teacher"], folder)
    raw = tiny_config(tiny_assets, tmp_path, name="kd-key")
    raw["teacher"]["name_or_path"] = str(folder)
    raw["sft"] = {"teacher": {"enabled": False}, "student": {"enabled": False}}
    raw["distill"] = {**raw["distill"], "method": "kd", "params": {"signal": "topk", "k": 4}}

    def keys() -> tuple[list[str], list[str]]:
        art, loaded = Pipeline(load_config(raw)).artifacts, []

        def load(role, *a, **k):
            loaded.append(role)
            return Artifacts.load(art, role, *a, **k)

        art.load = load
        return list(art.training_data(resolve_method(art.cfg)).teacher_topk.keys), loaded

    first, loaded = keys()
    assert loaded == ["teacher"]
    assert keys() == (first, [])  # unchanged: every record reused, the teacher not loaded
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(folder)  # "retrained" into the same folder: same path, config and prompt format
    retrained, loaded = keys()
    assert set(retrained).isdisjoint(first) and loaded == ["teacher"]
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT_TEMPLATE  # prompt_format auto: the teacher now formats prompts with it
    tok.save_pretrained(folder)
    chat, loaded = keys()
    assert set(chat).isdisjoint(retrained) and loaded == ["teacher"]
    tok.chat_template = CHAT_TEMPLATE.replace("<|assistant|> ", "<|assistant|> Summary: ")
    tok.save_pretrained(folder)
    edited, loaded = keys()
    assert set(edited).isdisjoint(chat) and loaded == ["teacher"]
    assert keys() == (edited, [])


def test_a_topk_teacher_of_another_vocabulary_is_aligned_unless_told_otherwise(tiny_assets, tmp_path):
    from prefdistill.config.checks import load_config
    from prefdistill.errors import ConfigError
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path)
    raw["teacher"]["name_or_path"] = str(tiny_assets["foreign"])
    raw["distill"] = {**raw["distill"], "method": "kd", "params": {"signal": "topk"}}
    load_config(raw)  # vocabulary: auto builds an aligned cache (tests/methods/test_across_tokenizers.py)
    raw["distill"]["params"] = {"signal": "topk", "vocabulary": "shared"}
    with pytest.raises(ConfigError, match="one vocabulary"):
        load_config(raw)


def test_kd_says_what_it_is_missing(tiny_assets):
    from prefdistill.methods import get_method
    from prefdistill.methods.kd import KDParams
    from prefdistill.models.hf import LocalLM

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    with pytest.raises(ValueError, match="build the cache"):
        get_method("kd").loss(lm, _rows(2), KDParams(signal="topk"))
    with pytest.raises(ValueError, match="needs the teacher"):
        get_method("kd").loss(lm, _rows(2), KDParams())


def test_the_signal_finds_any_subset_of_its_rows_in_any_order_by_their_tokens(teacher, tmp_path):
    """The loss is handed a TopkSignal, not a path in a row: a batch's records are found by its prompts and tokens."""
    from prefdistill.models.logprobs import completion_token_ids

    rows = _rows(5)
    cache = build_topk_cache(teacher, rows, 4, tmp_path / "c.bin", tokenizer=teacher.tokenizer, teacher_id="t")
    assert all(set(r) == {"prompt", "target"} for r in rows)  # nothing written into the rows
    pick = [4, 1, 2]
    ids = completion_token_ids(teacher.tokenizer, [rows[i]["target"] for i in pick])
    got, want = cache.lookup([rows[i]["prompt"] for i in pick], ids), cache.rows(pick)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    other = build_topk_cache(teacher, rows, 4, tmp_path / "c.bin", tokenizer=teacher.tokenizer, teacher_id="t2")
    assert other.keys != cache.keys  # another teacher: other records in the same file
    with pytest.raises(KeyError, match="no cached top-k"):
        cache.lookup(["an unseen prompt"], ids[:1])
