"""Every token-level method with a teacher of another tokenizer (an `AlignedTeacher`, prefdistill.models.alignment).

Exactness: through the aligned path, the teacher itself and the same teacher re-indexed to another vocabulary (every
token under another id) give the same-vocabulary losses and gradients; a teacher of a byte-level BPE tokenizer gives
the divergence of a naive loop over the aligned positions; and the choice is wired: auto aligns a foreign tokenizer,
shared refuses it, aligned forces the path."""
import pytest
import torch

from prefdistill.config.schema import ModelConfig, from_dict
from prefdistill.errors import ConfigError
from prefdistill.losses import kl_from_log_probs, shared_outcomes
from prefdistill.methods import get_method
from prefdistill.methods.registry import teacher_for
from prefdistill.models.alignment import AlignedTeacher, TokenizerBridge
from prefdistill.models.hf import LocalLM
from prefdistill.models.tiny import tiny_rows
from prefdistill.testing.tokenizers import byte_level_bpe, tiny_causal_lm

CASES = {  # case -> (method, params, consumes); sampling methods are seeded alike on both paths
    "kd": ("kd", {"temperature": 1.5, "ce_weight": 0.5}, "targets"),
    "gkd[on_policy]": ("gkd", {"beta": 0.3, "on_policy_fraction": 1.0, "max_new_tokens": 4}, "pairs"),
    "gkd[off_policy]": ("gkd", {"beta": 1.0, "on_policy_fraction": 0.0, "temperature": 1.5}, "pairs"),
    "distillm[skew_forward]": ("distillm", {"student_fraction": 0.5, "max_new_tokens": 4}, "targets"),
    "distillm[skew_reverse]": ("distillm", {"divergence": "skew_reverse", "alpha": 0.2}, "targets"),
    "fdistill[tv]": ("fdistill", {"max_new_tokens": 4}, "pairs"),
    "fdistill[js]": ("fdistill", {"divergence": "js", "student_prefixes": False, "temperature": 2.0}, "pairs"),
    "minillm": ("minillm", {"mix_weight": 0.0, "max_new_tokens": 4, "temperature": 1.2}, "pairs"),
}


def _rows(kind: str, n: int = 3) -> list[dict]:
    out = []
    for i, r in enumerate(tiny_rows(n, seed=5)):
        prompt, words = f"Summarize : {r['document']}", r["document"].split()
        if kind == "targets":
            out.append({"prompt": prompt, "target": r["summary"]})
        else:
            out.append({"id": f"{i}#0", "prompt": prompt, "chosen": r["summary"], "rejected": " ".join(words[:2 + i]),
                        "reference": " ".join(words[:3]), "chosen_score": 0.9, "rejected_score": 0.1})
    return out


@pytest.fixture(scope="module")
def models(tiny_assets, tmp_path_factory):
    """(teacher, student, the teacher re-indexed to the foreign vocabulary, a byte-level BPE teacher)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    teacher = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))
    student = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    student.model.requires_grad_(True)
    # The teacher's weights with every token under the foreign tokenizer's id for the same word.
    foreign_tok = AutoTokenizer.from_pretrained(tiny_assets["foreign"])
    model = LlamaForCausalLM.from_pretrained(tiny_assets["teacher"])
    own = teacher.tokenizer.get_vocab()
    order = torch.tensor([own[w] for w, _ in sorted(foreign_tok.get_vocab().items(), key=lambda kv: kv[1])])
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[order])
        model.lm_head.weight.copy_(model.lm_head.weight[order])
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.config, key, getattr(foreign_tok, key))
    folder = tmp_path_factory.mktemp("reindexed")
    model.save_pretrained(folder)
    foreign_tok.save_pretrained(folder)
    reindexed = LocalLM.load(ModelConfig(name_or_path=str(folder)))
    texts = [r["document"] for r in tiny_rows(60)] + ["Summarize :"]
    bpe = tiny_causal_lm(tmp_path_factory.mktemp("bpe_teacher"), byte_level_bpe(texts, vocab_size=120), layers=1, hidden=32)
    return teacher, student, reindexed, LocalLM.load(ModelConfig(name_or_path=str(bpe)))


def aligned(student, teacher) -> AlignedTeacher:
    return AlignedTeacher(teacher, TokenizerBridge(student.tokenizer, teacher.tokenizer))


def loss_and_grads(case: str, lm, teacher, rows):
    name, raw, _ = CASES[case]
    spec = get_method(name)
    params = from_dict(spec.params_cls, raw)
    torch.manual_seed(0)  # the same samples on every path
    lm.model.zero_grad()
    loss, stats = spec.loss(lm, rows, params, teacher=teacher)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, stats


def _assert_same(case, student, want_teacher, got_teacher, chunk):
    student.logits_chunk = chunk
    rows = _rows(CASES[case][2])
    want_loss, want, _ = loss_and_grads(case, student, want_teacher, rows)
    loss, grads, stats = loss_and_grads(case, student, got_teacher, rows)
    assert want and any(g.abs().sum() > 0 for g in want.values()), f"{case}: no gradient to compare"
    assert stats["tokens_aligned"] == stats["tokens_completion"] > 0  # word-level tokens: every position pairs
    torch.testing.assert_close(loss, want_loss, atol=1e-5, rtol=1e-5)
    assert set(grads) == set(want)
    for n in want:
        torch.testing.assert_close(grads[n], want[n], atol=1e-5, rtol=1e-4, msg=lambda m: f"{case}, {n}: {m}")


@pytest.mark.parametrize("chunk", [0, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_vocabulary_through_the_aligned_path_is_exact(case, chunk, models):
    teacher, student, _, _ = models
    _assert_same(case, student, teacher, aligned(student, teacher), chunk)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_reindexed_vocabulary_is_exact(case, models):
    """The teacher under other token ids (the foreign tokenizer: the same words reversed) is the same teacher."""
    teacher, student, reindexed, _ = models
    spec = get_method(CASES[case][0])
    assert isinstance(teacher_for(spec, from_dict(spec.params_cls, CASES[case][1]), student, reindexed), AlignedTeacher)
    _assert_same(case, student, teacher, aligned(student, reindexed), 0)


def test_kd_across_tokenizers_equals_a_naive_loop(models):
    """A byte-level BPE teacher: KL over the shared tokens at each paired position, each side run on its own tokens."""
    _, student, _, bpe = models
    rows = _rows("targets", 2)
    student.logits_chunk = 0
    bridge_teacher = aligned(student, bpe)
    loss, grads, stats = loss_and_grads("kd", student, bridge_teacher, rows)
    assert 0 < stats["tokens_aligned"] <= stats["tokens_completion"] and grads
    s_ids, t_ids = (torch.tensor(x) for x in bridge_teacher.bridge.shared)
    terms, ce = [], []
    for r in rows:
        ids = student.tokenizer(r["target"], add_special_tokens=False)["input_ids"] + [student.tokenizer.eos_token_id]
        row = bridge_teacher.bridge.align(ids)
        with torch.no_grad():
            s_logits = _completion_logits(student, r["prompt"], ids)
            t_logits = _completion_logits(bpe, r["prompt"], row.teacher_ids)
        for j, i in row.pairs:
            log_q, log_p = shared_outcomes(s_logits[j] / 1.5, t_logits[i] / 1.5, s_ids, t_ids)
            terms.append(kl_from_log_probs(log_p, log_q))
        ce.extend(torch.log_softmax(s_logits, -1)[range(len(ids)), ids].tolist())
    want = torch.stack(terms).mean() * 1.5 ** 2 + 0.5 * -torch.tensor(ce).mean()
    torch.testing.assert_close(loss, want.float(), atol=1e-4, rtol=1e-4)


def _completion_logits(lm, prompt: str, ids: list[int]) -> torch.Tensor:
    """(len(ids), V) the logits predicting each completion token, from one forward over the prompt and the completion."""
    prompt_ids = lm.prompt_ids(prompt)
    out = lm.model(torch.tensor([prompt_ids + ids])).logits[0].float()
    return out[len(prompt_ids) - 1:len(prompt_ids) + len(ids) - 1, :len(lm.tokenizer)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_method_trains_across_tokenizers(case, models):
    _, student, _, bpe = models
    student.logits_chunk = 2
    loss, grads, stats = loss_and_grads(case, student, aligned(student, bpe), _rows(CASES[case][2]))
    assert torch.isfinite(loss) and any(g.abs().sum() > 0 for g in grads.values())
    assert 0 < stats["tokens_aligned"] <= stats["tokens_completion"]


def test_the_choice_of_vocabulary(models):
    teacher, student, reindexed, bpe = models
    spec, params = get_method("kd"), from_dict(get_method("kd").params_cls, {})
    assert teacher_for(spec, params, student, teacher) is teacher  # one vocabulary: the exact path
    assert isinstance(teacher_for(spec, params, student, bpe), AlignedTeacher)  # auto: aligned
    forced = from_dict(spec.params_cls, {"vocabulary": "aligned"})
    assert isinstance(teacher_for(spec, forced, student, teacher), AlignedTeacher)
    with pytest.raises(ConfigError, match=r"distill.method=kd .*one vocabulary.*vocabulary: auto"):
        teacher_for(spec, from_dict(spec.params_cls, {"vocabulary": "shared"}), student, bpe)
    with pytest.raises(ConfigError, match=r"only with signal: live or topk"):
        teacher_for(spec, from_dict(spec.params_cls, {"signal": "served"}), student, bpe)
    minillm = get_method("minillm")
    with pytest.raises(ConfigError, match=r"mix_weight: 0"):
        teacher_for(minillm, from_dict(minillm.params_cls, {}), student, bpe)
    dpkd = get_method("dpkd")  # its token mode compares argmax tokens: one vocabulary only
    with pytest.raises(ConfigError, match=r"distill.method=dpkd .*one vocabulary"):
        teacher_for(dpkd, from_dict(dpkd.params_cls, {"mode": "token_argmax"}), student, bpe)


@pytest.mark.parametrize("method", ["kd", "distillm"])
def test_an_aligned_topk_cache_at_k_v_gives_the_live_aligned_loss(method, models, tmp_path):
    """signal: topk across tokenizers: the teacher's top-k over its whole vocabulary, on its own tokens, placed at the
    paired student positions in the student's ids, gives the same loss and gradients as the live aligned teacher."""
    from prefdistill.signal.topk_cache import build_topk_cache

    _, student, _, bpe = models
    student.logits_chunk = 0
    rows = _rows("targets", 3)
    vocab = len(bpe.tokenizer)
    signal = build_topk_cache(bpe, rows, vocab, tmp_path / "topk.bin", tokenizer=student.tokenizer, teacher_id="bpe",
                              dtype="float32", aligned=True)
    spec = get_method(method)
    extra = {"ce_weight": 0.5} if method == "kd" else {}
    cached = from_dict(spec.params_cls, {"signal": "topk", "k": vocab, "topk_dtype": "float32", **extra})
    live = from_dict(spec.params_cls, {**extra})
    torch.manual_seed(0)
    student.model.zero_grad()
    loss, _ = spec.loss(student, rows, cached, teacher_topk=signal)
    loss.backward()
    got = {n: p.grad.clone() for n, p in student.model.named_parameters() if p.grad is not None}
    torch.manual_seed(0)
    student.model.zero_grad()
    want_loss, stats = spec.loss(student, rows, live, teacher=aligned(student, bpe))
    want_loss.backward()
    assert 0 < stats["tokens_aligned"] <= stats["tokens_completion"]
    torch.testing.assert_close(loss.detach(), want_loss.detach(), atol=1e-5, rtol=1e-5)
    for n, p in student.model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[n], p.grad, atol=1e-5, rtol=1e-4)
    again = build_topk_cache(bpe, rows, vocab, tmp_path / "topk.bin", tokenizer=student.tokenizer, teacher_id="bpe",
                             dtype="float32", aligned=False)  # the same teacher id unaligned: other records
    assert set(again.keys).isdisjoint(signal.keys)


@pytest.mark.parametrize("params", [{}, {"signal": "topk", "k": 8}, {"vocabulary": "aligned"}])
def test_the_pipeline_distils_kd_from_a_teacher_of_another_tokenizer(params, tiny_assets, tmp_path):
    """`prefdistill run` with KD and the foreign tokenizer's teacher: live (aligned at load), from an aligned top-k cache,
    and the aligned path forced on one vocabulary; the training log counts the aligned positions (live)."""
    from prefdistill.config.checks import load_config
    from prefdistill.io import read_jsonl
    from prefdistill.models.tiny import tiny_config
    from prefdistill.run.folder import LOG_FILE
    from prefdistill.run.pipeline import Pipeline

    data = tiny_config(tiny_assets, tmp_path)
    if params.get("vocabulary") != "aligned":
        data["teacher"]["name_or_path"] = str(tiny_assets["foreign"])
    data["distill"] = {**data["distill"], "method": "kd", "params": params}
    pipe = Pipeline(load_config(data))
    pipe.run(["sft", "pairs", "distill"])
    log = [r for p in pipe.run_dir.rglob(LOG_FILE) for r in read_jsonl(p) if "forward_kl" in r]  # the distill stage's
    assert log and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    if params.get("signal") != "topk":
        assert all(0 < r["tokens_aligned"] <= r["tokens_completion"] for r in log)
    else:
        assert list(pipe.run_dir.rglob("topk_k8.bin"))
