"""Negatives of the kinds models produce, built from a judge's own documents: python -m pytest -q tests/judges/test_negatives.py"""
from __future__ import annotations

import re

import pytest

from prefdistill.config.schema import RewardConfig
from prefdistill.errors import ConfigError
from prefdistill.evaluation.metrics import STOP_WORDS, content_words, repeated_ngram_share
from prefdistill.io import Example, text_key, write_json
from prefdistill.judges import judges_current
from prefdistill.judges import reward as reward_module
from prefdistill.judges.heldout import split_by_document
from prefdistill.judges.negatives import TEMPLATE_VERBS, TEMPLATES, make_preference_pairs, topic_words
from prefdistill.judges.reward import recipe, stale_fields, train_reward_model
from prefdistill.run.folder import HELDOUT, RunFolder

PROMPT = ("Summarize the approach of this paper.\n\n"
          "We parse sentences with a neural parser. The parser reads tokens and the parser writes trees.")
REFERENCE = "They train a neural parser that turns tokens into trees with one pass over each sentence."
EXAMPLE = Example(id="p1", prompt=PROMPT, target=REFERENCE, meta={"group": "paper1"})


def pairs_of(kind: str, seed: int, examples=(EXAMPLE,), generated=None) -> list[str]:
    return [p["rejected"] for p in make_preference_pairs(list(examples), [kind], seed, generated) if p["kind"] == kind]


def test_content_and_topic_words_skip_stop_words():
    assert content_words("The parser of THE paper, and its 2 trees.") == ["parser", "trees"]
    # "parser" three times first; then the rest in order of first occurrence ("paper", "summarize": stop words)
    assert topic_words(PROMPT) == ["parser", "approach", "parse", "sentences", "neural"]
    assert not set(topic_words(PROMPT)) & STOP_WORDS
    assert topic_words("Summarize this paper.") == []


def test_template_is_a_generic_phrase_around_a_topic_word_of_the_prompt():
    seen_templates, seen_topics = set(), set()
    patterns = {t: re.compile("^" + re.escape(t).replace(re.escape("{t}"), "(?P<t>[a-z]+)", 1)
                              .replace(re.escape("{t}"), "(?P=t)").replace(re.escape("{T}"), "[A-Z][a-z]+")
                              .replace(re.escape("{v}"), "[a-z]+").replace(re.escape("{V}"), "[A-Z][a-z]+") + "$")
                for t in TEMPLATES}
    for seed in range(80):
        [text] = pairs_of("template", seed)
        matched = [t for t, pattern in patterns.items() if pattern.match(text)]
        assert matched, text
        seen_templates.add(matched[0])
        topic = next(w for w in content_words(text) if w in topic_words(PROMPT))
        seen_topics.add(topic)
        assert not set(content_words(text)) - set(topic_words(PROMPT)) - set(TEMPLATE_VERBS) - {"presents", "authors",
                                                                                                    "propose"}
    assert seen_templates == set(TEMPLATES) and seen_topics == set(topic_words(PROMPT))
    # A prompt of stop words only has no topic: no template
    assert pairs_of("template", 0, [Example(id="s", prompt="Summarize this.", target="a b c")]) == []


def test_loop_repeats_a_short_phrase_to_about_the_reference_length():
    n_ref = len(REFERENCE.split())  # 16 words: loops of 12-24 words
    units = set()
    for seed in range(60):
        [text] = pairs_of("loop", seed)
        words = text.split()
        assert max(8, round(0.75 * n_ref)) <= len(words) <= round(1.5 * n_ref), text
        period = next(k for k in range(2, 5) if words[k:] == words[:-k])  # a 2-4 word unit, looped
        unit = " ".join(words[:period])
        assert unit in REFERENCE or unit in PROMPT or re.fullmatch(r"the (\w+) of", unit), unit
        units.add("the_of" if re.fullmatch(r"the (\w+) of", unit) else "phrase")
        assert repeated_ngram_share(text) >= 0.5
    assert units == {"the_of", "phrase"}
    short = Example(id="s", prompt="Summarize.\n\nTiny parsers.", target="a parser")
    [text] = pairs_of("loop", 0, [short])
    assert len(text.split()) == 8  # model length has a floor: a 2-word reference still loops to 8 words


def test_repeated_ngram_share_by_hand():
    assert repeated_ngram_share("the cat of the cat of the cat") == pytest.approx(1 / 2)  # 6 trigrams, 3 distinct
    assert repeated_ngram_share("a b c d") == 0.0 and repeated_ngram_share("a b") == 0.0
    assert repeated_ngram_share("x x x x x", n=1) == pytest.approx(4 / 5)


def test_student_init_reads_the_given_answers_by_prompt():
    answers = {text_key(PROMPT): "We present the parser."}
    assert pairs_of("student_init", 0, generated=answers) == ["We present the parser."]
    assert pairs_of("student_init", 0, generated={}) == []  # no answer to this prompt: skipped
    assert pairs_of("student_init", 0, generated={text_key(PROMPT): "  "}) == []  # an empty answer: skipped
    assert pairs_of("student_init", 0, generated={text_key(PROMPT): REFERENCE}) == []  # a reference is never a negative
    with pytest.raises(ValueError, match="pass generated="):
        make_preference_pairs([EXAMPLE], ["loop", "student_init"], seed=0)


def test_new_kinds_are_deterministic_per_seed():
    many = [Example(id=f"e{i}", prompt=PROMPT.replace("parser", f"parser{i}"), target=REFERENCE) for i in range(6)]
    kinds = ["template", "loop"]
    assert make_preference_pairs(many, kinds, seed=3) == make_preference_pairs(many, kinds, seed=3)
    assert make_preference_pairs(many, kinds, seed=3) != make_preference_pairs(many, kinds, seed=4)


def documents(n: int) -> list[Example]:
    """n documents of their own words (doc{d}w{k}), two aspects each."""
    out = []
    for d in range(n):
        words = [f"doc{d}w{k}" for k in range(8)]
        for aspect in ("approach", "outcome"):
            out.append(Example(id=f"{d}-{aspect}", prompt=f"Summarize the {aspect}.\n\n" + " ".join(words) + ".",
                               target=" ".join(words[:5]) + f" {aspect} holds.", meta={"group": f"doc{d}"}))
    return out


def test_no_negative_of_one_judge_is_built_from_the_other_judges_documents():
    examples = documents(10)
    answers = {text_key(e.prompt): f"doc{e.meta['group'][3:]}w0 answer" for e in examples}  # both halves' answers
    first, second = split_by_document(examples, seed=0)
    kinds = list(RewardConfig().negatives)
    for mine, other in ((first, second), (second, first)):
        theirs = {w for e in other for w in (e.prompt + " " + e.target).replace(".", " ").split() if w.startswith("doc")}
        pairs = make_preference_pairs(mine, kinds, seed=0, generated=answers)
        assert {p["kind"] for p in pairs} == set(kinds)  # every kind made
        for p in pairs:
            assert not set(p["rejected"].replace(".", " ").replace(":", " ").split()) & theirs, p
            assert text_key(p["prompt"]) in {text_key(e.prompt) for e in mine}


def test_the_default_list_holds_the_model_like_kinds_and_config_checks_them():
    from prefdistill.config.checks import load_config

    assert {"template", "loop", "student_init"} <= set(RewardConfig().negatives)
    base = {"teacher": {"name_or_path": "t"}, "student": {"name_or_path": "s"}}
    with pytest.raises(ConfigError, match="reward.negatives: unknown kind"):
        load_config({**base, "reward": {"negatives": ["loop", "paraphrased"]}})


def fake_judge(folder, cfg: RewardConfig, seed: int, *, legacy: bool = False) -> dict:
    """A judge folder as the reward stage leaves it (model/reward_head.json + metrics.json), without training."""
    model = folder / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "reward_head.json").write_text("{}")
    facts = {"negatives": list(cfg.negatives), "steps": cfg.steps, "seed": seed, "encoder": cfg.encoder}
    metrics = {"heldout_accuracy": 0.9, **(facts if legacy else {**facts, "recipe": recipe(cfg, seed)})}
    write_json(folder / "metrics.json", metrics)
    return metrics


def test_a_judge_trained_with_other_negatives_is_trained_again(tmp_path, monkeypatch):
    cfg = RewardConfig()
    old = RewardConfig(negatives=["mismatched", "sibling", "truncated", "shuffled", "repeated", "copied"])
    assert stale_fields(fake_judge(tmp_path / "a", old, 0, legacy=True), cfg, 0) == ["negatives"]  # written before recipes
    assert stale_fields(fake_judge(tmp_path / "b", cfg, 0), cfg, 0) == []
    assert stale_fields(fake_judge(tmp_path / "c", cfg, 0), RewardConfig(lr=2e-3), 0) == ["lr"]
    assert stale_fields(fake_judge(tmp_path / "d", cfg, 0), cfg, 1) == ["seed"]

    class Retrained(Exception):
        pass

    def encoder(*args, **kwargs):
        raise Retrained

    monkeypatch.setattr(reward_module, "FrozenEncoder", encoder)
    monkeypatch.setattr(reward_module, "training_pairs", lambda *a: [{"kind": "x"}])
    monkeypatch.setattr(reward_module, "make_preference_pairs", lambda *a: [{"kind": "x"}])
    current = fake_judge(tmp_path / "b", cfg, 0)
    assert train_reward_model([], [], cfg, tmp_path / "b", seed=0) == current  # same recipe: reused
    fake_judge(tmp_path / "a", old, 0, legacy=True)
    with pytest.raises(Retrained):
        train_reward_model([], [], cfg, tmp_path / "a", seed=0)
    assert not (tmp_path / "a" / "metrics.json").exists()  # the old metrics never stand beside a new model


def test_judges_current_reads_every_judge_of_the_run(tmp_path):
    folder, cfg = RunFolder(tmp_path), RewardConfig()
    seeds = {"training": 0, HELDOUT: 1}
    assert not judges_current(folder, cfg, seeds)
    fake_judge(folder.judge_dir(), cfg, 0)
    assert not judges_current(folder, cfg, seeds)  # the held-out judge is missing
    fake_judge(folder.judge_dir(HELDOUT), cfg, 1)
    assert judges_current(folder, cfg, seeds)
    assert not judges_current(folder, RewardConfig(negatives=["loop"]), seeds)  # a config change retrains
