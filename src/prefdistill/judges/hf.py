"""Reward models from Hugging Face: any `AutoModelForSequenceClassification` with one label.

    judge = HFRewardJudge("runs/demo/reward/model")
    judge.score(["Summarize ..."], ["They propose ..."])  # -> [1.73]

A (prompt, response) pair is encoded as a text pair, `[CLS] prompt [SEP] response [SEP]`
for BERT-like encoders, the way cross-encoder reward models (e.g. OpenAssistant's
DeBERTa reward models) are trained. When the pair is too long the prompt is cut first,
so the judge always reads the response. Reward models that expect a chat template
(decoder reward models) are not formatted for here.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import torch
from prefdistill.progress import bar
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BatchEncoding
from transformers.utils import logging as hf_logging

from prefdistill.judges.base import check_inputs
from prefdistill.models.assets import load_pretrained, looks_local


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports for a moment, restoring the caller's verbosity."""
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)


def encode_pairs(tokenizer, prompts: list[str], responses: list[str], max_length: int) -> BatchEncoding:
    """Tokenise (prompt, response) text pairs into one padded batch of at most `max_length` tokens.

    The prompt is truncated first ("only_first"); a pair whose response alone leaves no
    room for a prompt token falls back to "longest_first", which cuts the response too.
    """
    check_inputs(prompts, responses)
    n_special = tokenizer.num_special_tokens_to_add(pair=True)
    response_lens = [len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"]]
    features = []
    for prompt, response, n_response in zip(prompts, responses, response_lens):
        strategy = "only_first" if n_response + n_special < max_length else "longest_first"
        features.append(tokenizer(prompt, response, truncation=strategy, max_length=max_length))
    return tokenizer.pad(features, return_tensors="pt")


def score_pairs(
    model,
    tokenizer,
    prompts: list[str],
    responses: list[str],
    *,
    batch_size: int,
    max_length: int,
    desc: str = "scoring",
) -> list[float]:
    """One scalar reward per (prompt, response): `model(pair).logits[:, 0]`, in eval mode, no grad."""
    check_inputs(prompts, responses)
    n = len(prompts)
    # Batches of similar length waste less compute on padding; results go back in input order.
    order = sorted(range(n), key=lambda i: len(prompts[i]) + len(responses[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = [0.0] * n
    starts = range(0, n, batch_size)
    try:
        with torch.no_grad():
            for start in bar(starts, desc=desc, unit="batch", disable=len(starts) <= 2, leave=False):
                idx = order[start : start + batch_size]
                batch = encode_pairs(tokenizer, [prompts[i] for i in idx], [responses[i] for i in idx], max_length)
                logits = model(**batch.to(device)).logits  # (B, 1)
                for i, value in zip(idx, logits[:, 0].float().tolist()):
                    scores[i] = value
    finally:
        model.train(was_training)
    return scores


def load_reward_model(name_or_path: str | Path, device: str = "cpu"):
    """Load (model, tokenizer) of a one-label sequence-classification model, or explain why not."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"reward model folder {path} has no config.json: not a Hugging Face model folder")
        name = str(path)
    elif looks_local(name):
        raise FileNotFoundError(f"reward model path does not exist: {path}")
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False)  # a judge never runs a repo's code
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        raise OSError(
            f"could not load reward model {name!r}: not a local folder, and not available from the "
            f"Hugging Face Hub or its cache (HF_HUB_OFFLINE={offline}): {e}"
        ) from e
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"{name} is not a sequence-classification (reward) model: its architectures are {architectures}; "
            "a judge needs an AutoModelForSequenceClassification checkpoint with num_labels == 1"
        )
    if config.num_labels != 1:
        raise ValueError(
            f"{name} has num_labels={config.num_labels}, but a reward model has num_labels == 1 "
            "(one scalar score per response); a multi-class classifier cannot be used as a judge"
        )
    try:
        with quiet_transformers():
            model, info = load_pretrained(AutoModelForSequenceClassification, name, output_loading_info=True)
    except ValueError as e:  # e.g. a model type with no sequence-classification class
        raise ValueError(f"{name} cannot be loaded as a sequence-classification model: {e}") from e
    if info["missing_keys"]:
        raise ValueError(
            f"{name} lacks weights {sorted(info['missing_keys'])[:4]}: its score head would be random. "
            "Train one first (the `reward` stage) or use a trained reward model"
        )
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:  # decoder reward models
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


class HFRewardJudge:
    """A Hugging Face reward model (num_labels == 1) as a `Judge`, by hub name or local path.

    Pairs longer than `max_length` tokens (or the tokenizer's `model_max_length`, whichever
    is smaller: prefdistill's trained judge stores the length it was trained at there)
    lose the end of their prompt.
    """

    def __init__(
        self,
        name_or_path: str | Path,
        *,
        batch_size: int = 32,
        max_length: int = 512,
        device: str = "cpu",
        name: str | None = None,
    ):
        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        self.model, self.tokenizer = load_reward_model(name_or_path, device)
        self.name = name or str(name_or_path)
        self.batch_size = batch_size
        self.max_length = min(max_length, self.tokenizer.model_max_length)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return score_pairs(
            self.model,
            self.tokenizer,
            list(prompts),
            list(responses),
            batch_size=self.batch_size,
            max_length=self.max_length,
            desc=f"judge {self.name}",
        )

    def __repr__(self) -> str:
        return f"HFRewardJudge({self.name!r}, max_length={self.max_length})"
