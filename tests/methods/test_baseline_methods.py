"""Token-level baselines on tiny offline models: vocabulary check, rollouts, KD / GKD wiring, token counts in the loop."""
import math

import pytest
import torch

from prefdistill.config.checks import load_config
from prefdistill.config.schema import ConfigError, LoraConfig, ModelConfig, TrainConfig
from prefdistill.methods import get_method
from prefdistill.methods.common import completion_ids
from prefdistill.methods.gkd import GKDParams
from prefdistill.methods.kd import KDParams
from prefdistill.methods.registry import across_tokenizers
from prefdistill.models.hf import LocalLM
from prefdistill.models.rollout import rollout
from prefdistill.models.tiny import tiny_config
from prefdistill.training.loop import batch_indices, train

PROMPTS = ["Summarize : the model learns data", "Summarize : data"]  # different lengths: left padding in play
TARGETS = [{"prompt": "Summarize : the model learns data", "target": "the model learns a short summary"},
           {"prompt": "Summarize : data", "target": "data"},
           {"prompt": "Summarize : teacher student", "target": "teacher student better"}]


@pytest.fixture(scope="module")
def student(tiny_assets):
    return LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))


@pytest.fixture(scope="module")
def teacher(tiny_assets):
    return LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))


def _log_probs(logits):
    return torch.log_softmax(logits.double(), -1)


# ---------------------------------------------------------------- config-time vocabulary check
def _config(tiny_assets, tmp_path, method, teacher_key):
    data = tiny_config(tiny_assets, tmp_path)
    data["teacher"]["name_or_path"] = str(tiny_assets[teacher_key])
    data["distill"] = {**data["distill"], "method": method, "params": {"beta": 0.5} if method == "plad" else {}}
    return data


def test_token_level_method_refuses_a_foreign_vocabulary_when_told_to(tiny_assets, tmp_path):
    sequence_level = across_tokenizers()
    assert {"sft", "seqkd", "plad"} <= set(sequence_level) and "kd" not in sequence_level
    assert load_config(_config(tiny_assets, tmp_path, "kd", "foreign")).distill.method == "kd"  # auto: aligned
    data = _config(tiny_assets, tmp_path, "kd", "foreign")
    data["distill"]["params"] = {"vocabulary": "shared"}
    with pytest.raises(ConfigError) as err:
        load_config(data)
    message = str(err.value)
    assert "distill.method=kd" in message and "vocabulary" in message
    for name in sequence_level:
        assert name in message


def test_vocabulary_check_passes_where_it_should(tiny_assets, tmp_path):
    assert load_config(_config(tiny_assets, tmp_path, "plad", "foreign")).distill.method == "plad"  # sequence-level
    assert load_config(_config(tiny_assets, tmp_path, "kd", "teacher")).distill.method == "kd"  # same vocabulary


# ---------------------------------------------------------------- rollouts
def test_rollout_without_mixing_has_unit_weights(student):
    torch.manual_seed(0)
    out = rollout(student, PROMPTS, max_new_tokens=6)
    eos = student.tokenizer.eos_token_id
    assert len(out.completions) == len(PROMPTS) == len(out.importance)
    for ids, w in zip(out.completions, out.importance):
        assert 1 <= len(ids) <= 6 and len(w) == len(ids)
        assert eos not in ids[:-1]  # decoding stops at EOS
        assert all(x == 1.0 for x in w)
    assert out.n_tokens == sum(len(c) for c in out.completions)


def test_rollout_is_reproducible_under_a_seed(student, teacher):
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(rollout(student, PROMPTS, max_new_tokens=6, mix=teacher, mix_weight=0.5))
    assert runs[0].completions == runs[1].completions and runs[0].importance == runs[1].importance
    torch.manual_seed(124)
    others = [rollout(student, PROMPTS, max_new_tokens=6).completions for _ in range(3)]
    assert any(o != runs[0].completions for o in others)  # the seed matters at all


def test_mixed_rollout_weights_are_q_over_mixture(student, teacher):
    """Weights lie in (0, 1/(1 − w)] and equal q(y)/(w·p(y) + (1 − w)·q(y)) of the scored tokens."""
    mix = 0.5
    torch.manual_seed(1)
    out = rollout(student, PROMPTS * 2, max_new_tokens=6, mix=teacher, mix_weight=mix)
    flat = [x for w in out.importance for x in w]
    assert all(0 < x <= 1 / (1 - mix) + 1e-6 for x in flat)
    assert any(abs(x - 1) > 1e-3 for x in flat)  # the teacher differs from the student: weights are not all 1
    with torch.no_grad():
        s, labels, mask = student.completion_logits(PROMPTS * 2, out.completions)
        t, _, _ = teacher.completion_logits(PROMPTS * 2, out.completions)
    log_q = _log_probs(s).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    log_p = _log_probs(t).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    expected = log_q.exp() / (mix * log_p.exp() + (1 - mix) * log_q.exp())
    for i, w in enumerate(out.importance):  # completions sit at the right edge
        assert torch.allclose(torch.tensor(w, dtype=torch.float64), expected[i, -len(w):], atol=1e-4)
        assert mask[i, -len(w):].all() and not mask[i, :-len(w)].any()


@pytest.mark.parametrize("training", [True, False])
def test_rollout_restores_training_mode(student, teacher, training):
    student.model.train(training)
    teacher.model.train(not training)
    try:
        rollout(student, PROMPTS, max_new_tokens=2, mix=teacher, mix_weight=0.2)
        assert student.model.training is training and teacher.model.training is (not training)
    finally:
        student.model.eval()
        teacher.model.eval()


# ---------------------------------------------------------------- KD and GKD against hand computations
def _hand_forward_kl(student, teacher, prompts, ids, temperature=1.0):
    """Masked mean over completion tokens of Σ_v p_v (log p_v − log q_v), from the models' logits."""
    with torch.no_grad():
        s, _, mask = student.completion_logits(prompts, ids)
        t, _, _ = teacher.completion_logits(prompts, ids)
    log_q, log_p = _log_probs(s / temperature), _log_probs(t / temperature)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, C)
    return float((kl * mask).sum() / mask.sum()), int(mask.sum())


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_loss_is_the_masked_mean_forward_kl(student, teacher, temperature):
    prompts = [r["prompt"] for r in TARGETS]
    ids = completion_ids(student, [r["target"] for r in TARGETS])
    assert len({len(x) for x in ids}) == 3 and all(x[-1] == student.tokenizer.eos_token_id for x in ids)
    expected, n_tokens = _hand_forward_kl(student, teacher, prompts, ids, temperature)
    loss, stats = get_method("kd").loss(student, TARGETS, KDParams(temperature=temperature), teacher=teacher)
    assert loss.item() == pytest.approx(temperature ** 2 * expected, rel=1e-4, abs=1e-6)
    assert stats["tokens_teacher_scored"] == n_tokens == sum(len(x) for x in ids)


def test_gkd_offline_forward_kl_equals_kd_on_teacher_texts(student, teacher):
    texts = [r["target"] for r in TARGETS]
    # the teacher's text sits on either side, as relabelling may leave it
    pairs = [{"prompt": TARGETS[0]["prompt"], "chosen": texts[0], "rejected": "data data", "chosen_source": "teacher"},
             {"prompt": TARGETS[1]["prompt"], "chosen": "the model", "rejected": texts[1], "chosen_source": "student"},
             {"prompt": TARGETS[2]["prompt"], "chosen": texts[2], "rejected": "results", "chosen_source": "teacher"}]
    kd_loss, _ = get_method("kd").loss(student, TARGETS, KDParams(), teacher=teacher)
    gkd_loss, stats = get_method("gkd").loss(student, pairs, GKDParams(beta=0.0, on_policy_fraction=0.0), teacher=teacher)
    assert stats["on_policy"] == 0.0
    assert gkd_loss.item() == pytest.approx(kd_loss.item(), rel=1e-5, abs=1e-7)
    assert kd_loss.item() > 1e-3  # the two random models differ: the equality is not 0 == 0


# ---------------------------------------------------------------- token counts in the training loop
def test_loop_sums_token_counts_and_averages_the_rest(tiny_assets, tmp_path):
    rows = TARGETS + [{"prompt": "Summarize : results", "target": "results method"},
                      {"prompt": "Summarize : small task", "target": "small"}]
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    cfg = TrainConfig(steps=1, batch_size=2, grad_accum=2, lr=1e-3, save_every=100)
    seed = 0
    micro_rows = [[rows[i] for i in batch_indices(0, micro, cfg, len(rows), seed)] for micro in range(2)]
    teacher_lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    tokens, kls = [], []
    for mb in micro_rows:  # the weights do not move within one accumulated step
        ids = completion_ids(lm, [r["target"] for r in mb])  # target tokens + EOS
        kl, n = _hand_forward_kl(lm, teacher_lm, [r["prompt"] for r in mb], ids)
        assert n == sum(len(x) for x in ids)
        tokens.append(n)
        kls.append(kl)
    log = train(lm, get_method("kd"), KDParams(), rows, cfg, LoraConfig(enabled=False), out_dir=tmp_path / "ckpt",
                parent=None, seed=seed, desc="kd", extras={"teacher": teacher_lm})
    assert len(log) == 1
    assert log[0]["tokens_teacher_scored"] == sum(tokens)  # counts add up over micro-batches
    assert log[0]["forward_kl"] == pytest.approx(sum(kls) / 2, rel=1e-4)  # other statistics are averaged
    assert math.isfinite(log[0]["loss"])
    assert log[0]["sampling_time_s"] == 0.0  # KD samples nothing in the loop


def test_loop_logs_each_steps_in_loop_sampling_time(tiny_assets, tmp_path, monkeypatch):
    """sampling_time_s: the seconds spent inside rollout during the step, its micro-batches summed."""
    from types import SimpleNamespace

    import prefdistill.models.rollout as sampler

    clock = iter(range(100))  # the clock rollout reads (only rollout's): every reading one second later
    monkeypatch.setattr(sampler, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    teacher_lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    cfg = TrainConfig(steps=2, batch_size=2, grad_accum=2, lr=1e-3, save_every=100)
    log = train(lm, get_method("gkd"), GKDParams(on_policy_fraction=1.0, max_new_tokens=3), TARGETS, cfg, LoraConfig(enabled=False),
                out_dir=tmp_path / "ckpt", parent=None, seed=0, desc="gkd", extras={"teacher": teacher_lm})
    assert [r["sampling_time_s"] for r in log] == [2.0, 2.0]  # two rollouts of 1 s per step


def test_vocabulary_is_checked_again_on_loaded_models(tiny_assets):
    from prefdistill.methods.registry import require_shared_vocabulary

    student = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    foreign = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["foreign"])))
    teacher = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    with pytest.raises(ConfigError, match=r"distill.method=gkd .*one vocabulary.*token ids differ"):
        require_shared_vocabulary(get_method("gkd"), student, foreign)
    require_shared_vocabulary(get_method("gkd"), student, teacher)


def test_unreachable_tokenizer_defers_the_check_with_a_warning(tiny_assets, tmp_path):
    data = tiny_config(tiny_assets, tmp_path)
    data["teacher"]["name_or_path"] = "no-such-org/no-such-model"  # a hub name: not loadable offline
    data["distill"] = {"method": "kd", "params": {}}
    with pytest.warns(UserWarning, match="checked again when the models load"):
        load_config(data)
