"""The one training loop: plain PyTorch on `accelerate`, for every registered method.

    log = train(lm, get_method("plad"), params, rows, cfg.distill.train, cfg.student.lora,
                out_dir=run_dir / "checkpoints" / "student_distill", parent=sft_dir, seed=0)

The method's loss function turns a list of rows into a scalar; the loop never looks at
the method's name. The training state (`prefdistill.training.state`: trainable weights,
optimizer, scheduler, step, loss log, every RNG) is saved atomically every `save_every`
steps, so a crash resumes where it stopped, bitwise; the finished checkpoint is a LoRA
adapter (or a full model folder) plus metadata naming its parent, which
`LocalLM.load(..., checkpoint=...)` follows.

Many processes (`accelerate launch`, docs/distributed.md): `train.batch_size` is the
global batch; each process takes a contiguous share of it and the wrapped model (DDP /
FSDP / DeepSpeed) averages gradients. The update equals the 1-process one on the same
global batch for losses that are a mean over rows (PLaD's and DPKD's preference terms);
a mean over tokens (SFT, SeqKD, KD, GKD...) weights each process's tokens as gradient
accumulation weights each micro-batch's: W processes equal 1 process with batch_size / W
and grad_accum · W.

A step whose loss or gradient norm is NaN / inf is skipped (weights, optimizer and
scheduler untouched; `skipped_nonfinite` in the log counts them); after
`train.max_nonfinite_in_a_row` in a row the loop saves the last good state and stops.
"""
from __future__ import annotations

import math
import os
import random
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from prefdistill.progress import bar as progress_bar

from prefdistill.config.schema import LoraConfig, TrainConfig
from prefdistill.data.rows import training_rows
from prefdistill.io import atomic_dir, read_jsonl, write_json, write_jsonl
from prefdistill.methods import MethodSpec
from prefdistill.methods.common import COUNT_PREFIX
from prefdistill.models.hf import CHECKPOINT_META
from prefdistill.models.rollout import sampling_seconds
from prefdistill.run.folder import LOG_FILE, checkpoint_done as is_done  # where a checkpoint's files are: the run folder's rule
from prefdistill.training.state import capture_rng, load_state, restore_rng, resumable, save_state, stop_nonfinite

SNAPSHOT_RECORD = "snapshot.json"  # what the caller of snapshot(path, record) saved with the weights


def state_file(out_dir: Path) -> Path:
    """The resumable training state of the run that will finish as `out_dir` (there until that run finishes)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".state.pt")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def total_steps(cfg: TrainConfig, n_rows: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * n_rows / (cfg.batch_size * cfg.grad_accum)))


def per_process_batch(batch_size: int, world: int) -> int:
    """Rows each of `world` processes takes from a global micro-batch of `batch_size` rows."""
    if batch_size % world:
        raise ValueError(f"train.batch_size={batch_size} is the global batch (all processes together) and must be "
                         f"divisible by the number of processes ({world}); use a multiple of {world}")
    return batch_size // world


def batch_indices(step: int, micro: int, cfg: TrainConfig, n_rows: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Rows of process `rank`'s share of a micro-batch: a pure function of its arguments, so resuming needs no sampler state.

    Positions run through one seeded permutation of the data per epoch. `cfg.batch_size`
    is the global micro-batch; process `rank` of `world` takes the contiguous block
    [rank·b, (rank+1)·b) of it (b = batch_size / world). So W processes with
    (batch_size, grad_accum) see exactly the micro-batches of one process with
    (batch_size / W, grad_accum · W).
    """
    share = per_process_batch(cfg.batch_size, world)
    first = (step * cfg.grad_accum + micro) * cfg.batch_size + rank * share
    out = []
    for pos in range(first, first + share):
        epoch, offset = divmod(pos, n_rows)
        perm = np.random.default_rng([seed, epoch]).permutation(n_rows)
        out.append(int(perm[offset]))
    return out


def _wrap_lora(model, lora: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    from prefdistill.models.common import peft_call

    target = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    peft_cfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target, task_type="CAUSAL_LM")
    with peft_call():
        return get_peft_model(model, peft_cfg)


def _save_checkpoint(accelerator, model, tokenizer, out_dir: Path, meta: dict, log: list[dict], record: dict | None = None) -> None:
    """Weights, metadata, loss log (and `record`, as SNAPSHOT_RECORD) appear together or not at all (`is_done` trusts them).

    Every process calls this: sharded weights (FSDP, ZeRO-3) are first gathered by all of
    them; the main process writes.
    """
    state_dict = None if resumable(accelerator) else accelerator.get_state_dict(model)
    meta = {**meta, "parent": os.path.relpath(meta["parent"], out_dir.resolve()) if meta.get("parent") else None}
    if accelerator.is_main_process:
        with atomic_dir(out_dir) as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict)
            if meta["kind"] == "full":
                tokenizer.save_pretrained(tmp)
            write_jsonl(tmp / LOG_FILE, log)
            write_json(tmp / CHECKPOINT_META, meta)
            if record is not None:
                write_json(tmp / SNAPSHOT_RECORD, record)
    accelerator.wait_for_everyone()


def _process_mean(accelerator, totals: dict[str, float]) -> dict[str, float]:
    """A step's statistics over all processes: token counts add up, the rest is averaged (a missing key counts 0).

    Every process gets the same numbers, so decisions taken on them (skip a step) agree.
    """
    if accelerator.num_processes == 1:
        return totals
    from accelerate.utils import gather_object

    parts = gather_object([totals])
    keys = dict.fromkeys(k for part in parts for k in part)
    return {k: sum(p.get(k, 0.0) for p in parts) / (1 if k.startswith(COUNT_PREFIX) else len(parts)) for k in keys}


def _accumulate(accelerator, model, loss_fn, batches: list[list[dict]], cfg: TrainConfig) -> dict[str, float]:
    """Forward and backward every micro-batch of one optimizer step; clip; the step's statistics over processes.

    Token counts add up over micro-batches, the rest is averaged; `grad_norm` is the norm before clipping;
    `sampling_time_s` is this process's time in the in-loop sampler (rollout) during the step.
    """
    totals: dict[str, float] = {}
    sampled_s = sampling_seconds()
    for batch in batches:
        with accelerator.accumulate(model):
            loss, stats = loss_fn(batch)
            accelerator.backward(loss)
        for k, v in {"loss": loss.item(), **stats}.items():
            totals[k] = totals.get(k, 0.0) + (v if k.startswith(COUNT_PREFIX) else v / cfg.grad_accum)
    # Gradients are averaged over processes by now, so every process computes the same norm.
    norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
    totals = _process_mean(accelerator, totals)
    if norm is not None:  # DeepSpeed clips inside its engine and reports nothing here
        totals["grad_norm"] = float(norm)
    totals["sampling_time_s"] = round(sampling_seconds() - sampled_s, 3)
    return totals


def _update(optimizer, scheduler, loss: float, grad_norm: float, fp16: bool) -> bool:
    """Step optimizer and scheduler unless the loss or the gradient norm is NaN / inf; True if stepped.

    A skipped step changes nothing: no weight, no optimizer moment, no scheduler step. Under
    fp16 an infinite gradient is the grad scaler's business (it skips the step itself and
    lowers its scale), so there only the loss is checked.
    """
    if not math.isfinite(loss) or not (fp16 or math.isfinite(grad_norm)):
        optimizer.zero_grad()
        return False
    optimizer.step()
    if not optimizer.step_was_skipped:
        scheduler.step()
    optimizer.zero_grad()
    return True


def mean_loss(lm, spec: MethodSpec, params, rows: list[dict], batch_size: int) -> float:
    """`spec.loss` over `rows` in batches, weighted by rows, without gradients and in eval mode (e.g. SFT's
    validation loss); the model's train / eval mode is restored afterwards."""
    rows = training_rows(rows, "validation rows")
    was_training = lm.model.training
    lm.model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for i in range(0, len(rows), batch_size):
                batch = rows[i:i + batch_size]
                total += float(spec.loss(lm, batch, params)[0]) * len(batch)
    finally:
        lm.model.train(was_training)
    return total / len(rows)


def _prepare(lm, cfg: TrainConfig, lora: LoraConfig, n_rows: int, seed: int):
    """(accelerator, model, optimizer, scheduler, steps) with `lm.model` wrapped for this process."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    device = next(lm.model.parameters()).device
    # Buffers (rotary tables) are constants: not broadcasting them lets processes run different
    # numbers of forward passes (on-policy samples of different lengths) without a collective each.
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                              cpu=device.type == "cpu", kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    share = per_process_batch(cfg.batch_size, accelerator.num_processes)  # refuse an uneven split before any work
    if accelerator.distributed_type.value == "DEEPSPEED":  # no dataloader tells DeepSpeed the per-process batch
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = share
    seed_everything(seed)  # the same initial (LoRA) weights in every process
    model = _wrap_lora(lm.model, lora) if lora.enabled else lm.model.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = total_steps(cfg, n_rows)
    warmup = int(cfg.warmup_ratio * steps)
    # Linear warm-up, then linear decay to zero.
    schedule = lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    # The scheduler is not prepared: accelerate would step it once per process; the loop steps it once per update.
    model, optimizer = accelerator.prepare(model, optimizer)
    lm.model = model
    lm.logits_chunk = cfg.logits_chunk  # positions whose logits the losses compute at once (prefdistill.losses.chunked)
    if accelerator.process_index:  # dropout and sampling draw from each process's own stream; process 0 keeps the 1-process one
        seed_everything(seed + 7919 * accelerator.process_index)
    return accelerator, model, optimizer, scheduler, steps


def train(lm, spec: MethodSpec, params, rows: list[dict], cfg: TrainConfig, lora: LoraConfig, *,
          out_dir: Path, parent: Path | None, seed: int, desc: str, extras: dict | None = None, on_step=None) -> list[dict]:
    """Train `lm` in place with `spec.loss` on `rows`; returns the per-step log.

    `extras` are keyword arguments of the loss that the caller provides from the method's
    `needs` (e.g. teacher=...); the loop passes them through without looking, and saves the
    dict-valued ones (the `state` need) with the training state.

    Under `accelerate launch` every process calls this alike: each takes its share of the
    global batch (`batch_indices`), the wrapped model averages gradients over processes,
    and only the main process writes the state, the checkpoint and the log.

    `on_step(step, lm, snapshot) -> dict | None`, when given, is called after every step
    (1-based) in eval mode, without gradients and with every RNG restored afterwards, so
    it can evaluate (validation loss, validation generations) without changing training:
    the same weights come out with or without it. `snapshot(path, record=None)` writes the current
    weights as a checkpoint (parent and kind as the final one), with `record` (JSON) in the same atomic
    write; every process takes the same snapshots. Its dict is added to that step's log line.
    """
    out_dir = Path(out_dir)
    if is_done(out_dir):
        return read_jsonl(out_dir / LOG_FILE)
    if not rows:
        raise ValueError(f"{desc}: no training rows")
    rows, extras = training_rows(rows, f"{desc} rows"), extras or {}  # rows checked once, before any model work
    accelerator, model, optimizer, scheduler, steps = _prepare(lm, cfg, lora, len(rows), seed)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    state_path, method_state = state_file(out_dir), {k: v for k, v in extras.items() if isinstance(v, dict)}
    start, log, counters = _resume(state_path, accelerator, model, optimizer, scheduler, method_state, f"{desc} (of {steps} steps)")
    save = partial(save_state, state_path, accelerator, accelerator.unwrap_model(model), optimizer, scheduler, method_state=method_state)
    good = {"step": start, "rng": capture_rng()}  # the last step whose update was applied

    bar = progress_bar(range(start, steps), desc=desc, unit="step", initial=start, total=steps, disable=not main)
    t0 = time.time()
    for step in bar:
        batches = [[rows[i] for i in batch_indices(step, micro, cfg, len(rows), seed, rank, world)] for micro in range(cfg.grad_accum)]
        totals = _accumulate(accelerator, model, lambda batch: spec.loss(lm, batch, params, **extras), batches, cfg)
        stepped = _update(optimizer, scheduler, totals["loss"], totals.get("grad_norm", 0.0), cfg.mixed_precision == "fp16")
        if stepped and spec.after_step is not None:  # e.g. move an anchor, with the weights after this update
            spec.after_step(lm, params, **extras)
        counters["nonfinite_in_a_row"] = 0 if stepped else counters["nonfinite_in_a_row"] + 1
        counters["skipped_nonfinite"] += not stepped
        rng = capture_rng()
        if stepped:
            good = {"step": step + 1, "rng": rng}
        log.append({"step": step + 1, "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 2), **totals,
                    "skipped_nonfinite": counters["skipped_nonfinite"]})
        if on_step is not None:
            meta = _meta(spec, lora, parent, step + 1, len(rows), world)
            log[-1].update(_checked_hook(on_step, step + 1, lm, model, _snapshot(accelerator, model, lm, meta)) or {})
        bar.set_postfix(loss=f"{totals['loss']:.4f}")
        if main and (step + 1) % cfg.log_every == 0:
            bar.write(f"{desc} step {step + 1}/{steps} " + " ".join(f"{k}={v:.4g}" for k, v in totals.items()))
        if counters["nonfinite_in_a_row"] >= cfg.max_nonfinite_in_a_row:
            stop_nonfinite(save if resumable(accelerator) else None, good, log, counters, step + 1, cfg, desc, state_path)
        if (step + 1) % cfg.save_every == 0 and step + 1 < steps and resumable(accelerator):
            save(step=step + 1, log=log, counters=counters, rng=rng)

    _finish(lm, accelerator, model, out_dir, _meta(spec, lora, parent, steps, len(rows), world), log, state_path, lora.enabled)
    return log


def _meta(spec: MethodSpec, lora: LoraConfig, parent: Path | None, steps: int, rows: int, world: int) -> dict:
    """A checkpoint's metadata; the parent is absolute here and made relative to the checkpoint when saved."""
    return {"kind": "adapter" if lora.enabled else "full", "parent": str(Path(parent).resolve()) if parent and lora.enabled else None,
            "method": spec.name, "steps": steps, "rows": rows, "processes": world}


def _snapshot(accelerator, model, lm, meta: dict):
    """snapshot(path, record=None): the current weights as a checkpoint folder with `meta` (as the final checkpoint's)."""
    return lambda path, record=None: _save_checkpoint(accelerator, model, lm.tokenizer, Path(path), meta, [], record)


def _checked_hook(on_step, step: int, lm, model, snapshot) -> dict | None:
    """Call `on_step` in eval mode without gradients; every RNG and the train mode are as before afterwards."""
    rng = capture_rng()
    model.eval()
    try:
        with torch.no_grad():
            return on_step(step, lm, snapshot)
    finally:
        model.train()
        restore_rng(rng)


def _resume(state_path: Path, accelerator, model, optimizer, scheduler, method_state: dict, desc: str):
    """(first step, log so far, counters): from the saved training state if there is one, else from scratch."""
    if not state_path.is_file():
        return 0, [], {"skipped_nonfinite": 0, "nonfinite_in_a_row": 0}
    if not resumable(accelerator):
        raise RuntimeError(f"{state_path} holds replicated weights, which cannot resume a sharded (FSDP / DeepSpeed) run")
    start, log, counters = load_state(state_path, accelerator, accelerator.unwrap_model(model), optimizer, scheduler,
                                      method_state=method_state)
    if accelerator.is_main_process:
        print(f"[prefdistill] {desc}: resuming at step {start}", flush=True)
    return start, log, counters


def _finish(lm, accelerator, model, out_dir: Path, meta: dict, log: list[dict], state_path: Path, lora: bool) -> None:
    """Save the finished checkpoint, drop the resumable state, and leave `lm` holding the trained weights for inference."""
    _save_checkpoint(accelerator, model, lm.tokenizer, out_dir, meta, log)
    if accelerator.is_main_process:
        state_path.unlink(missing_ok=True)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    lm.model = unwrapped.merge_and_unload() if lora else unwrapped
    lm.model.requires_grad_(False)
