"""DistiLLM, GKD and f-distill trained from the teacher's cached top-k: the coarsened divergences, the methods, the refusals."""
import math

import pytest
import torch

from prefdistill.methods import ResolvedMethod, resolve_method
from prefdistill.config.schema import ModelConfig
from prefdistill.losses import (coarsen, forward_kl, generalized_jsd, generalized_jsd_from_log_probs, js_divergence, js_from_log_probs,
                                kl_from_log_probs, reverse_kl, skew_forward_kl, skew_forward_kl_from_log_probs, skew_reverse_kl,
                                skew_reverse_kl_from_log_probs, total_variation, total_variation_from_log_probs)
from prefdistill.methods.common import teacher_side
from prefdistill.models.tiny import tiny_rows
from prefdistill.signal.topk_cache import build_topk_cache, scan

# name -> (the divergence on full logits, the same divergence on (log q, log p))
DIVERGENCES = {
    "forward_kl": (forward_kl, lambda q, p: kl_from_log_probs(p, q)),
    "reverse_kl": (reverse_kl, lambda q, p: kl_from_log_probs(q, p)),
    "tv": (total_variation, total_variation_from_log_probs),
    "js": (js_divergence, js_from_log_probs),
    "jsd_0.1": (lambda s, t: generalized_jsd(s, t, beta=0.1), lambda q, p: generalized_jsd_from_log_probs(q, p, beta=0.1)),
    "jsd_0.5": (lambda s, t: generalized_jsd(s, t, beta=0.5), lambda q, p: generalized_jsd_from_log_probs(q, p, beta=0.5)),
    "jsd_1": (lambda s, t: generalized_jsd(s, t, beta=1.0), lambda q, p: generalized_jsd_from_log_probs(q, p, beta=1.0)),
    "skew_forward": (lambda s, t: skew_forward_kl(s, t, alpha=0.1), lambda q, p: skew_forward_kl_from_log_probs(q, p, alpha=0.1)),
    "skew_reverse": (lambda s, t: skew_reverse_kl(s, t, alpha=0.1), lambda q, p: skew_reverse_kl_from_log_probs(q, p, alpha=0.1)),
}


def teacher_topk(teacher_logits, k):
    values, ids = torch.log_softmax(teacher_logits, -1).topk(k, dim=-1)
    return ids, values


def coarsened(name, s, t, k):
    log_p, log_q = coarsen(s, *teacher_topk(t, k))
    return DIVERGENCES[name][1](log_q, log_p)


# ----------------------------------------------------------------------------- the coarsened pair
def test_coarsen_is_the_image_of_both_distributions_under_one_partition():
    """p̄ and q̄ against the definition: each kept id its own outcome, every other token summed into the last one."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 9) * 2, torch.randn(2, 3, 9) * 2
    ids, logprobs = teacher_topk(t, 4)
    ids[0, 0, 3], logprobs[0, 0, 3] = 0, float("-inf")  # a padded slot: its id stays in the rest
    log_p, log_q = coarsen(s, ids, logprobs)
    assert log_p.shape == log_q.shape == (2, 3, 5)
    p, q = torch.softmax(t.double(), -1), torch.softmax(s.double(), -1)
    for b in range(2):
        for i in range(3):
            kept = [(slot, v) for slot, (v, lp) in enumerate(zip(ids[b, i].tolist(), logprobs[b, i].tolist())) if lp > -math.inf]
            rest = [v for v in range(9) if v not in {v for _, v in kept}]
            want_p, want_q = [0.0] * 5, [0.0] * 5
            for slot, v in kept:
                want_p[slot], want_q[slot] = p[b, i, v].item(), q[b, i, v].item()
            want_p[4], want_q[4] = p[b, i, rest].sum().item(), q[b, i, rest].sum().item()
            assert torch.allclose(log_p[b, i].exp().double(), torch.tensor(want_p, dtype=torch.float64), atol=1e-6)
            assert torch.allclose(log_q[b, i].exp().double(), torch.tensor(want_q, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_the_coarsened_divergence_never_exceeds_the_full_one(name):
    """The data-processing inequality, for every divergence a method uses, at every k, by the same function on both sides.

    In float64: the pure reverse KL reads log p̄_rest, which float32 log-probs fix only to ~1e-7 (`coarsen`).
    """
    fn = DIVERGENCES[name][1]
    for seed in range(3):
        torch.manual_seed(seed)
        s, t = torch.randn(3, 5, 16, dtype=torch.float64) * 3, torch.randn(3, 5, 16, dtype=torch.float64) * 3
        full = fn(torch.log_softmax(s, -1), torch.log_softmax(t, -1))
        for k in (1, 2, 4, 8, 15):
            got = coarsened(name, s, t, k)
            assert got.dtype == torch.float64 and torch.isfinite(got).all() and (got >= -1e-12).all(), (name, k)
            assert (got <= full + 1e-10).all(), (name, seed, k, (got - full).max().item())


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_k_equal_to_the_vocabulary_is_the_full_divergence_with_its_gradients(name):
    torch.manual_seed(1)
    s = (torch.randn(2, 4, 11) * 3).requires_grad_(True)
    t = torch.randn(2, 4, 11) * 3
    got, want = coarsened(name, s, t, 11), DIVERGENCES[name][0](s, t)
    assert torch.isfinite(got).all() and torch.allclose(got, want, atol=1e-5)
    (g_got,) = torch.autograd.grad(got.sum(), s)
    (g_want,) = torch.autograd.grad(want.sum(), s)
    assert torch.isfinite(g_got).all() and torch.allclose(g_got, g_want, atol=1e-5)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_zero_at_student_equal_teacher_and_finite_gradients_with_padding(name):
    torch.manual_seed(2)
    t = torch.randn(2, 3, 10) * 2
    for k in (1, 4, 10):
        assert coarsened(name, t, t, k).abs().max() < 1e-5, (name, k)
    s = torch.randn(2, 3, 10, requires_grad=True)
    ids, logprobs = teacher_topk(t, 10)
    logprobs = logprobs.half().float()  # rounded: Σ p ≠ 1 with every id kept
    logprobs[0, :, -2:] = float("-inf")  # padded slots
    log_p, log_q = coarsen(s, ids, logprobs)
    value = DIVERGENCES[name][1](log_q, log_p)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- the methods from a cache
@pytest.fixture(scope="module")
def teacher(tiny_assets):
    from prefdistill.models.hf import LocalLM

    return LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))


@pytest.fixture(scope="module")
def student(tiny_assets):
    from prefdistill.models.hf import LocalLM

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    lm.model.requires_grad_(True)
    return lm


def _target_rows(n):
    return [{"prompt": f"Summarize : {r['document']}", "target": r["summary"]} for r in tiny_rows(n, seed=5)]


def _pair_rows(n):
    """Pairs whose teacher side is the reference; the second is swapped, so its teacher sample is `rejected`."""
    rows = []
    for i, r in enumerate(tiny_rows(n, seed=5)):
        teacher_text, student_text = r["summary"], " ".join(r["document"].split()[:3])
        row = {"id": f"{i}#0", "prompt": f"Summarize : {r['document']}", "chosen": teacher_text, "rejected": student_text}
        if i == 1:
            row.update(chosen=student_text, rejected=teacher_text, chosen_source="student", rejected_source="teacher")
        rows.append(row)
    return rows


CASES = {  # method -> (rows, live params); the topk runs add signal / k / topk_dtype
    "distillm[skew_forward]": ("distillm", _target_rows, {"temperature": 1.5}),
    "distillm[skew_reverse]": ("distillm", _target_rows, {"divergence": "skew_reverse", "alpha": 0.2}),
    "gkd": ("gkd", _pair_rows, {"beta": 0.5, "on_policy_fraction": 0.0, "temperature": 1.5}),
    "fdistill[tv]": ("fdistill", _pair_rows, {"student_prefixes": False}),
    "fdistill[js]": ("fdistill", _pair_rows, {"divergence": "js", "student_prefixes": False, "temperature": 2.0}),
}


def _loss_and_grads(method, lm, rows, params, **extras):
    from prefdistill.methods import get_method

    lm.model.zero_grad()
    loss, stats = get_method(method).loss(lm, rows, params, **extras)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in lm.model.named_parameters()}, stats


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_method_from_a_cache_equals_live_at_k_equal_v_and_bounds_it_below(case, teacher, student, tmp_path):
    from prefdistill.config.schema import from_dict
    from prefdistill.methods import get_method

    method, make_rows, given = CASES[case]
    spec, rows, vocab = get_method(method), make_rows(3), len(student.tokenizer)
    text = "target" if spec.consumes == "targets" else teacher_side
    live = from_dict(spec.params_cls, given)
    loss_live, grads_live, _ = _loss_and_grads(method, student, rows, live, teacher=teacher)
    for k in (vocab, 3):
        params = from_dict(spec.params_cls, {**given, "signal": "topk", "k": k, "topk_dtype": "float32"})
        assert params.requirements()[1] >= {"teacher_topk"} and "teacher" not in params.requirements()[1]
        cached = [dict(r) for r in rows]
        cache = build_topk_cache(teacher, cached, k, tmp_path / f"k{k}.bin", tokenizer=student.tokenizer, teacher_id="t",
                                 temperature=params.temperature, dtype="float32", text_key=text)
        loss, grads, stats = _loss_and_grads(method, student, cached, params, teacher_topk=cache)
        assert math.isfinite(loss) and "tokens_teacher_scored" not in stats
        if k == vocab:
            assert loss == pytest.approx(loss_live, rel=1e-5, abs=1e-6)
            assert stats["topk_teacher_mass"] == pytest.approx(1.0, abs=1e-5)
            for name, g in grads_live.items():
                assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6), name
        else:
            assert loss <= loss_live + 1e-6 and 0 < stats["topk_teacher_mass"] < 1


def test_a_cache_of_the_wrong_side_of_the_pairs_is_refused(teacher, student, tmp_path):
    """GKD trains on each pair's teacher side: a cache of `chosen` misses the swapped pair's tokens."""
    from prefdistill.methods import get_method
    from prefdistill.methods.gkd import GKDParams

    rows = _pair_rows(2)
    cache = build_topk_cache(teacher, rows, 4, tmp_path / "c.bin", tokenizer=student.tokenizer, teacher_id="t", text_key="chosen")
    with pytest.raises(ValueError, match="does not cover these rows"):  # keyed by the tokens: the swapped side has none
        get_method("gkd").loss(student, rows, GKDParams(signal="topk", k=4, on_policy_fraction=0.0), teacher_topk=cache)


def test_a_method_called_for_fresh_samples_from_a_cache_says_why(student):
    from prefdistill.errors import ConfigError
    from prefdistill.methods import get_method
    from prefdistill.methods.distillm import DistiLLMParams
    from prefdistill.methods.fdistill import FDistillParams
    from prefdistill.methods.gkd import GKDParams

    for method, params, rows in (("gkd", GKDParams(signal="topk", on_policy_fraction=1.0), _pair_rows(2)),
                                 ("fdistill", FDistillParams(signal="topk"), _pair_rows(2)),
                                 ("distillm", DistiLLMParams(signal="topk", student_fraction=1.0), _target_rows(2))):
        with pytest.raises(ConfigError, match="or signal: live"):
            get_method(method).loss(student, rows, params)


# ----------------------------------------------------------------------------- config-time refusals
def _config(tiny_assets, tmp_path, method, params, **changes):
    from prefdistill.models.tiny import tiny_config

    raw = tiny_config(tiny_assets, tmp_path)
    raw["distill"] = {**raw["distill"], "method": method, "params": params}
    for key, value in changes.items():
        raw[key] = {**raw[key], **value}
    return raw


@pytest.mark.parametrize("method, params, message", [
    ("gkd", {"signal": "topk"}, r"distill.params.on_policy_fraction: 0.5 .* set on_policy_fraction: 0, or signal: live"),
    ("fdistill", {"signal": "topk"}, r"distill.params.student_prefixes: True .* set student_prefixes: false, or signal: live"),
    ("distillm", {"signal": "topk", "student_fraction": 0.25},
     r"distill.params.student_fraction: 0.25 .* set student_fraction: 0, or signal: live"),
    ("minillm", {"signal": "topk"}, r"distill.params.signal: minillm takes live or served, not topk: .*: distillm, fdistill, gkd, kd$"),
    ("plad", {"signal": "topk"}, r"distill.params.signal: plad has no signal option .*: distillm, fdistill, gkd, kd$"),
])
def test_what_a_cache_cannot_give_is_refused_when_the_config_loads(tiny_assets, tmp_path, method, params, message):
    from prefdistill.config.checks import load_config
    from prefdistill.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(_config(tiny_assets, tmp_path, method, params))


@pytest.mark.parametrize("method, params", [("gkd", {"on_policy_fraction": 0.0}), ("fdistill", {"student_prefixes": False}),
                                            ("distillm", {})])
def test_a_topk_teacher_of_another_vocabulary_with_vocabulary_shared_is_refused_naming_the_methods_that_work(
        tiny_assets, tmp_path, method, params):
    from prefdistill.config.checks import load_config
    from prefdistill.errors import ConfigError
    from prefdistill.methods import method_params
    from prefdistill.methods.registry import across_tokenizers

    raw = _config(tiny_assets, tmp_path, method, {**params, "signal": "topk", "vocabulary": "shared"})
    assert method_params(load_config(raw)).requirements()[1] >= {"teacher_topk"}  # the same config, one vocabulary: accepted
    raw["teacher"] = {**raw["teacher"], "name_or_path": str(tiny_assets["foreign"])}
    with pytest.raises(ConfigError, match="one vocabulary") as e:
        load_config(raw)
    assert ", ".join(across_tokenizers()) in str(e.value)


# ----------------------------------------------------------------------------- the pipeline
def test_the_pipeline_caches_the_teacher_samples_once_and_trains_without_the_teacher(tiny_assets, tmp_path, student):
    from prefdistill.config.checks import load_config
    from prefdistill.io import write_jsonl
    from prefdistill.methods import get_method, method_params
    from prefdistill.run.artifacts import Artifacts
    from prefdistill.run.pipeline import Pipeline
    from prefdistill.run.train_job import train_job
    from prefdistill.training.job import TrainJob

    raw = _config(tiny_assets, tmp_path, "gkd", {"signal": "topk", "k": 5, "on_policy_fraction": 0.0},
                  sft={"teacher": {"enabled": False}, "student": {"enabled": False}})
    cfg = load_config(raw)
    art, spec, params = Pipeline(cfg).artifacts, get_method("gkd"), method_params(cfg)
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, _pair_rows(4))
    data = art.training_data(ResolvedMethod.of(spec, params), pairs)
    rows, path = data.rows, art.folder.topk_cache(5)
    assert len(scan(path)[0]) == 4
    _, _, mask = data.teacher_topk.rows()  # the teacher side of each pair, the swapped one included
    lengths = [len(student.tokenizer(teacher_side(r), add_special_tokens=False)["input_ids"]) + 1 for r in rows]
    assert mask.sum(-1).tolist() == lengths
    size, loaded = path.stat().st_size, []

    def load(role, *a, **k):
        assert role != "teacher", "the teacher was loaded"
        loaded.append(role)
        return Artifacts.load(art, role, *a, **k)

    art.load = load
    again = art.training_data(ResolvedMethod.of(spec, params), pairs)
    assert again.teacher_topk == data.teacher_topk and path.stat().st_size == size
    log = train_job(TrainJob(ResolvedMethod.of(spec, params), again, cfg.distill.train, tmp_path / "ckpt", seed=0), art).log
    assert len(log) == 2 and loaded == ["student"] and all(math.isfinite(r["loss"]) for r in log)
