"""The one training loop: plain PyTorch on `accelerate`, for every registered method.

    log = train(lm, get_method("plad"), params, rows, cfg.distill.train, cfg.student.lora,
                out_dir=run_dir / "checkpoints" / "student_distill", parent=sft_dir, seed=0)

The method's loss function turns a list of rows into a scalar; the loop never looks at
the method's name. Training state (trainable weights, optimizer, scheduler, step, loss
log) is saved atomically every `save_every` steps, so a crash resumes where it stopped;
the finished checkpoint is a LoRA adapter (or a full model folder) plus metadata naming
its parent, which `LocalLM.load(..., checkpoint=...)` follows.
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from prefdistill.config import LoraConfig, TrainConfig
from prefdistill.io import atomic_dir, atomic_open, read_jsonl, write_json, write_jsonl
from prefdistill.methods import MethodSpec
from prefdistill.methods.common import COUNT_PREFIX
from prefdistill.models.hf import CHECKPOINT_META

LOG_FILE = "train_log.jsonl"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def total_steps(cfg: TrainConfig, n_rows: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * n_rows / (cfg.batch_size * cfg.grad_accum)))


def batch_indices(step: int, micro: int, cfg: TrainConfig, n_rows: int, seed: int) -> list[int]:
    """Rows of a micro-batch: a pure function of (step, micro), so resuming needs no sampler state.

    Positions run through one seeded permutation of the data per epoch.
    """
    first = (step * cfg.grad_accum + micro) * cfg.batch_size
    out = []
    for pos in range(first, first + cfg.batch_size):
        epoch, offset = divmod(pos, n_rows)
        perm = np.random.default_rng([seed, epoch]).permutation(n_rows)
        out.append(int(perm[offset]))
    return out


def _wrap_lora(model, lora: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    target = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    peft_cfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target, task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg)


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save_state(path: Path, model, optimizer, scheduler, step: int, log: list[dict]) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(
            {"step": step, "model": _trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "log": log, "rng": torch.get_rng_state()},
            f,
        )


def _load_state(path: Path, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["model"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return state["step"], state["log"]


def _save_checkpoint(model, tokenizer, out_dir: Path, meta: dict, log: list[dict]) -> None:
    """Weights, metadata and loss log appear together or not at all (`is_done` trusts them)."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if meta["kind"] == "full":
            tokenizer.save_pretrained(tmp)
        write_jsonl(tmp / LOG_FILE, log)
        write_json(tmp / CHECKPOINT_META, meta)


def is_done(out_dir: Path) -> bool:
    return (Path(out_dir) / CHECKPOINT_META).is_file()


def train(lm, spec: MethodSpec, params, rows: list[dict], cfg: TrainConfig, lora: LoraConfig, *,
          out_dir: Path, parent: Path | None, seed: int, desc: str, extras: dict | None = None) -> list[dict]:
    """Train `lm` in place with `spec.loss` on `rows`; returns the per-step log.

    `extras` are keyword arguments of the loss that the caller provides from the method's
    `needs` (e.g. teacher=...); the loop passes them through without looking.
    """
    from accelerate import Accelerator

    out_dir = Path(out_dir)
    if is_done(out_dir):
        return read_jsonl(out_dir / LOG_FILE)
    if not rows:
        raise ValueError(f"{desc}: no training rows")
    seed_everything(seed)
    device = next(lm.model.parameters()).device
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=device.type == "cpu")
    model = _wrap_lora(lm.model, lora) if lora.enabled else lm.model.requires_grad_(True)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = total_steps(cfg, len(rows))
    warmup = int(cfg.warmup_ratio * steps)
    # Linear warm-up, then linear decay to zero.
    schedule = lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    lm.model = model

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    state_path = out_dir.with_name(out_dir.name + ".state.pt")
    start, log = (0, [])
    if state_path.is_file():
        start, log = _load_state(state_path, accelerator.unwrap_model(model), optimizer, scheduler)
        print(f"[prefdistill] {desc}: resuming at step {start}/{steps}", flush=True)

    bar = tqdm(range(start, steps), desc=desc, unit="step", initial=start, total=steps)
    t0 = time.time()
    for step in bar:
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            micro_rows = [rows[i] for i in batch_indices(step, micro, cfg, len(rows), seed)]
            with accelerator.accumulate(model):
                loss, stats = spec.loss(lm, micro_rows, params, **(extras or {}))
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            for k, v in {"loss": loss.item(), **stats}.items():  # token counts add up, the rest is averaged
                totals[k] = totals.get(k, 0.0) + (v if k.startswith(COUNT_PREFIX) else v / cfg.grad_accum)
        log.append({"step": step + 1, "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 2), **totals})
        bar.set_postfix(loss=f"{totals['loss']:.4f}")
        if (step + 1) % cfg.log_every == 0:
            bar.write(f"{desc} step {step + 1}/{steps} " + " ".join(f"{k}={v:.4g}" for k, v in totals.items()))
        if (step + 1) % cfg.save_every == 0 and step + 1 < steps and accelerator.is_main_process:
            _save_state(state_path, accelerator.unwrap_model(model), optimizer, scheduler, step + 1, log)

    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        # The parent is stored relative to this checkpoint so a run folder can be moved.
        rel_parent = os.path.relpath(Path(parent).resolve(), out_dir.resolve()) if parent and lora.enabled else None
        meta = {"kind": "adapter" if lora.enabled else "full", "parent": rel_parent,
                "method": spec.name, "steps": steps, "rows": len(rows)}
        _save_checkpoint(unwrapped, lm.tokenizer, out_dir, meta, log)
        state_path.unlink(missing_ok=True)
    unwrapped.eval()
    lm.model = unwrapped.merge_and_unload() if lora.enabled else unwrapped
    lm.model.requires_grad_(False)
    return log
