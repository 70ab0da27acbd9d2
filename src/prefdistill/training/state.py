"""The resumable training state of `prefdistill.training.loop`: one file, written atomically by the main process.

    save_state(path, accelerator, model, optimizer, scheduler, step=12, log=log, counters=c, rng=capture_rng(), method_state=s)
    step, log, counters = load_state(path, accelerator, model, optimizer, scheduler, method_state=s)
    stop_nonfinite(save, good, log, counters, step, cfg, desc, path)   # saves the last good state, raises

It holds everything the next step depends on, so a run killed at any moment and resumed
from the file ends with bitwise the same weights as one never interrupted (on the CPU):
the trainable weights (the LoRA adapter, or all weights), the optimizer and scheduler,
the data position (`step`; batches are a pure function of it), the loss log, the loop's
counters, the method's own state (the `state` need: anchors, step counters) and every
random-number generator of every process (python, numpy, torch CPU, torch CUDA): dropout
and on-policy sampling (GKD, MiniLLM, ...) draw from them.

The weights and optimizer of process 0 stand for all: this holds when every process keeps
a full replica (one process, or DDP). Under FSDP / DeepSpeed ZeRO they are sharded, and
this file cannot hold them (`resumable` says so; the loop then saves only the final
checkpoint).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from prefdistill.io import atomic_open


def resumable(accelerator) -> bool:
    """Whether process 0's weights and optimizer state are the whole state (no sharding)."""
    return accelerator.distributed_type.value not in ("FSDP", "DEEPSPEED")


def capture_rng() -> dict:
    """This process's generators: python, numpy, torch CPU and (when present) the current CUDA device."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_state(path: Path, accelerator, model, optimizer, scheduler, *, step: int, log: list[dict], counters: dict,
               rng: dict, method_state: dict) -> None:
    """Every process calls this (it gathers each one's RNG state); the main process writes `path`.

    `model` is the unwrapped model; `rng` this process's `capture_rng()` taken at `step`.
    """
    from accelerate.utils import gather_object

    rngs = gather_object([rng]) if accelerator.num_processes > 1 else [rng]
    if accelerator.is_main_process:
        with atomic_open(path, "wb") as f:
            torch.save({"step": step, "model": trainable_state(model), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "log": log, "counters": counters, "rng": rngs,
                        "method_state": method_state}, f)
    accelerator.wait_for_everyone()  # nobody runs ahead of a state that is not on disk yet


def load_state(path: Path, accelerator, model, optimizer, scheduler, *, method_state: dict) -> tuple[int, list[dict], dict]:
    """Restore a `save_state` file into this process; returns (step, log, counters).

    Every process reads the file (a filesystem all of them see). A process beyond the
    saved ones (more processes than before) keeps its fresh seed, so only the same world
    size resumes bitwise.
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["model"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for name, saved in state["method_state"].items():  # in place: the loss holds these very dicts
        method_state[name].clear()
        method_state[name].update(saved)
    rank = accelerator.process_index
    if rank < len(state["rng"]):
        restore_rng(state["rng"][rank])
    else:
        print(f"[prefdistill] {path}: no saved RNG state for process {rank} (saved by {len(state['rng'])}); "
              "this process keeps its fresh seed", flush=True)
    return state["step"], state["log"], state["counters"]


class NonFiniteLossError(RuntimeError):
    """Too many optimizer steps in a row had a NaN / inf loss or gradient norm."""


def stop_nonfinite(save, good: dict, log: list[dict], counters: dict, step: int, cfg, desc: str, state_path: Path) -> None:
    """Save the state as of the last applied update (when it can be saved) and raise NonFiniteLossError.

    Skipped steps left weights, optimizer and scheduler untouched, so the state after step
    `good["step"]` is them plus that step's data position, log and RNG states: a resumed
    run replays the failing batches, after the fix.
    """
    last, streak = good["step"], counters["nonfinite_in_a_row"]
    where = "could not be saved (sharded FSDP / DeepSpeed state)"
    if save is not None:
        save(step=last, log=log[:last], counters={"skipped_nonfinite": counters["skipped_nonfinite"] - streak,
                                                  "nonfinite_in_a_row": 0}, rng=good["rng"])
        where = f"was saved to {state_path}"
    raise NonFiniteLossError(
        f"{desc}: the loss or gradient norm was NaN/inf at {streak} optimizer steps in a row, the last at step {step} "
        f"(train.max_nonfinite_in_a_row={cfg.max_nonfinite_in_a_row}); those steps were skipped. The last good training "
        f"state, after step {last}, {where}. Fix the cause (a lower train.lr, train.max_grad_norm, the data) and run the "
        f"same command again (with --allow-config-change if you changed the config) to resume from step {last}.")
