"""Train prefdistill's default judge: a small reward head on frozen sentence-encoder features.

    prefdistill run CONFIG --stages reward      # writes RUN/reward/{model,metrics.json}

What this judge measures
------------------------
MiniLM-L6 (frozen, by default) encodes the prompt (means of its first 128 tokens and of
its first 16, where the instruction sits) and the response (its token states); a trained
head of about 0.35M parameters (`prefdistill.judges.reward_model.RewardHead`:
self-attention over the response tokens, attention pooling steered by the prompt, an
MLP, plus MiniLM's own prompt-response cosine similarity as a starting prior) outputs one
score. The head is trained with the Bradley-Terry loss to rank the human reference
summary of *this* document above synthetic negatives built by `make_preference_pairs`:
references about other documents ("mismatched"), about another aspect of the same
document ("sibling"), truncated, word-shuffled, looping ("repeated"), extractive
copies of the document's opening sentences ("copied"), and three kinds that imitate what
models emit: generic templates around a topic word of the prompt ("template"), a short
phrase looped to model length ("loop"), and the untrained student's own answers
("student_init", sampled by the reward stage). It therefore rewards responses that are
on-topic for the prompt's document and aspect, fluent, complete, non-repetitive and
abstractive. Apart from the initial student's answers it never saw a model's output, so it
is a proxy for quality, not a human preference: model outputs can fail in ways no negative
imitates (the bench checks it on the students' test outputs: `evaluation.judge_check`). `metrics.json` reports its held-out pairwise accuracy on the validation
split's pairs, overall and per negative kind.

Cost: the encoder runs once per distinct text, forward only (ACLSum, 450 examples:
~22 s on 2 CPU cores); training touches only the head (300 steps of 64 pairs: ~19 s).
"""
from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

import torch
from prefdistill.progress import bar

from prefdistill.config.schema import RewardConfig
from prefdistill.evaluation.metrics import pairwise_outcomes
from prefdistill.io import Example, read_json, write_json
from prefdistill.judges.negatives import make_preference_pairs
from prefdistill.judges.reward_model import (
    CONFIG_FILE,
    Features,
    FrozenEncoder,
    HeadConfig,
    RewardHead,
    save_reward_model,
    score_features,
)
from prefdistill.losses import bradley_terry_loss
from prefdistill.run.folder import judge_files

MEASURES = (
    "Pairwise-trained reward model (Bradley-Terry): frozen MiniLM features read by a trained attention "
    "head (~0.35M parameters). It learned to prefer the human reference summary of the prompt's own "
    "document over: references of other documents, references of another aspect of the same document, "
    "truncated, word-shuffled and repetitive versions of the reference, extractive copies of the "
    "document's first sentences, generic templates around a topic word of the prompt, short phrases looped "
    "to model length and (when listed) the untrained student's own answers. Higher scores mean more on-topic, "
    "fluent, complete, summary-like (abstractive) responses. Apart from the initial student's answers it was "
    "never trained on model outputs: a proxy for summary quality, not a human preference judgement."
)


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


def training_pairs(train: list[Example], cfg: RewardConfig, seed: int, generated: dict[str, str] | None = None) -> list[dict]:
    """`make_preference_pairs`, plus `cfg.extra_reference_draws` redraws of the kinds whose
    rejected text is another reference ("mismatched", "sibling"): those texts are encoded
    anyway, so more of them cost no encoder time, and relevance overfits less."""
    pairs = make_preference_pairs(train, cfg.negatives, seed, generated)
    free = [k for k in cfg.negatives if k in ("mismatched", "sibling")]
    if free:
        for draw in range(1, cfg.extra_reference_draws + 1):
            pairs += make_preference_pairs(train, free, seed + draw)
    return pairs


def fit_head(head: RewardHead, feats: Features, pairs: list[dict], cfg: RewardConfig, seed: int) -> list[float]:
    """`cfg.steps` AdamW steps of the Bradley-Terry loss on `pairs`; returns the per-step losses."""
    device = next(head.parameters()).device
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / cfg.steps)  # linear decay to 0
    head.train()
    losses = []
    progress = bar(_batches(len(pairs), cfg.batch_size, cfg.steps, random.Random(seed)),
                    total=cfg.steps, desc="reward head", unit="step", mininterval=1.0)
    for batch_idx in progress:
        batch = [pairs[i] for i in batch_idx]
        # chosen and rejected go through one forward pass: rows [0, B) and [B, 2B)
        inputs = feats.batch([p["prompt"] for p in batch] * 2,
                             [p["chosen"] for p in batch] + [p["rejected"] for p in batch], device)
        rewards = head(*inputs)  # (2B,)
        loss = bradley_terry_loss(rewards[: len(batch)], rewards[len(batch) :]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return losses


def pairwise_accuracy(chosen: list[float], rejected: list[float], kinds: list[str]) -> dict:
    """Share of pairs with r_chosen > r_rejected (a tie counts half), overall and per kind."""
    wins = pairwise_outcomes(chosen, rejected, tie_tol=0.0)  # exact ties only
    by_kind: dict[str, list[float]] = {}
    for kind, w in zip(kinds, wins):
        by_kind.setdefault(kind, []).append(w)
    return {
        "heldout_accuracy": sum(wins) / len(wins),
        "per_kind": {k: sum(v) / len(v) for k, v in by_kind.items()},
        "n_val_pairs_by_kind": {k: len(v) for k, v in by_kind.items()},
    }


def evaluate_pairs(head: RewardHead, feats: Features, pairs: list[dict]) -> dict:
    """Held-out pairwise accuracy of the head on `pairs` (features already in `feats`)."""
    n = len(pairs)
    scores = score_features(head, feats, [p["prompt"] for p in pairs] * 2,
                            [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
    return pairwise_accuracy(scores[:n], scores[n:], [p["kind"] for p in pairs])


def recipe(cfg: RewardConfig, seed: int) -> dict:
    """What a trained judge is made from: the reward config and its seed (metrics.json's "recipe")."""
    return {**dataclasses.asdict(cfg), "seed": seed}


def stale_fields(metrics: dict, cfg: RewardConfig, seed: int) -> list[str]:
    """The recipe fields on which the judge of `metrics` differs from (cfg, seed): nonempty means retrain.

    A judge saved before the recipe was recorded is compared on the fields it did record (negatives,
    steps, batch_size, encoder, lengths, extra_reference_draws, seed).
    """
    stored = metrics.get("recipe", metrics)
    return sorted(k for k, v in recipe(cfg, seed).items() if k in stored and stored[k] != v)


def _run_facts(cfg: RewardConfig, head: RewardHead, losses: list[float], n_train: int, n_val: int, seed: int) -> dict:
    """What metrics.json records about how the judge was trained."""
    tail = losses[-10:]
    return {"n_train_pairs": n_train,  # with the extra reference draws
            "extra_reference_draws": cfg.extra_reference_draws, "n_val_pairs": n_val, "steps": cfg.steps,
            "batch_size": cfg.batch_size, "encoder": cfg.encoder, "prompt_max_length": cfg.prompt_max_length,
            "prompt_opening_length": cfg.prompt_opening_length, "response_max_length": cfg.response_max_length,
            "head_parameters": sum(p.numel() for p in head.parameters()), "negatives": list(cfg.negatives), "seed": seed,
            "final_train_loss": sum(tail) / len(tail),  # mean over the last 10 steps
            "recipe": recipe(cfg, seed)}


def train_reward_model(
    train: list[Example],
    val: list[Example],
    cfg: RewardConfig,
    out_dir: Path,
    seed: int,
    device: str = "cpu",
    generated: dict[str, str] | None = None,
) -> dict:
    """Train the default judge on synthetic pairs and save out_dir/{model, metrics.json}.

    generated: text_key(prompt) -> the initial student's answer, for the "student_init" negatives (train and
    validation prompts). Returns the metrics; when both outputs exist and were made with this recipe (`stale_fields`)
    they are returned untouched; made with another, the judge is trained again (a changed config never reuses one).
    """
    out_dir = Path(out_dir)
    model_dir, metrics_path = judge_files(out_dir)
    if (model_dir / CONFIG_FILE).is_file() and metrics_path.is_file():
        stale = stale_fields(read_json(metrics_path), cfg, seed)
        if not stale:
            return read_json(metrics_path)
        print(f"[prefdistill] reward: {out_dir} was trained with other {', '.join(stale)}; training it again (scores it "
              "gave before, under eval/ and bench/, are the old judge's)", flush=True)
        metrics_path.unlink()
    train_pairs = training_pairs(train, cfg, seed, generated)
    val_pairs = make_preference_pairs(val, cfg.negatives, seed, generated)
    if not train_pairs or not val_pairs:
        raise ValueError(
            f"no preference pairs to train/validate the reward model on ({len(train_pairs)} train, "
            f"{len(val_pairs)} val): the train and validation examples need reference targets"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    start_time = time.time()
    encoder = FrozenEncoder(cfg.encoder, cfg.prompt_max_length, cfg.prompt_opening_length,
                            cfg.response_max_length, device)
    all_pairs = train_pairs + val_pairs
    feats = encoder.encode([p["prompt"] for p in all_pairs],
                           [text for p in all_pairs for text in (p["chosen"], p["rejected"])])
    encode_time = time.time() - start_time
    dev = torch.device(device)
    # Seed a private copy of the RNG state, so training is reproducible without
    # changing the caller's random streams.
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        head = RewardHead(HeadConfig(hidden_size=encoder.hidden_size, dim=cfg.head_dim,
                                     max_length=cfg.response_max_length)).to(dev)
        losses = fit_head(head, feats, train_pairs, cfg, seed)
    train_time = time.time() - start_time - encode_time
    metrics = evaluate_pairs(head, feats, val_pairs)
    save_reward_model(head, encoder, cfg.encoder, model_dir)
    metrics = {**metrics, **_run_facts(cfg, head, losses, len(train_pairs), len(val_pairs), seed),
               "encode_time_s": round(encode_time, 2),  # encoder loading + features of every distinct text
               "train_time_s": round(train_time, 2), "wall_time_s": round(time.time() - start_time, 2), "measures": MEASURES}
    write_json(metrics_path, metrics)
    return metrics
