# python benchmarks/trl_compare.py --steps 10 --warmup 2 --batch-size 4 --threads 1   (--tiny: seconds, random model)
"""Optimizer steps per second and peak memory of prefdistill's training against TRL's closest trainers.

One invocation builds one set of rows and, for each benchmark row, runs prefdistill and
then TRL, each in a fresh subprocess (so peak memory is clean), on the same model, dtype,
rows, batch shape, optimizer (AdamW, same lr, linear decay, grad-norm clip 1.0, no weight
decay), full fine-tuning, no gradient checkpointing, and the same number of steps:

  plad  PLaD rank calibration (2B sequences)   vs  CPOTrainer, loss_type=simpo, cpo_alpha=0
  sft   SFT on the chosen completions          vs  SFTTrainer (completion-only loss)
  kd    word-level KD, forward KL, T=1         vs  GKDTrainer, lmbda=0, beta=0, temperature=1
  kd_topk  the same KD from the teacher's cached top-k (--topk), the teacher not loaded  vs  the same GKDTrainer
  dpkd  DPKD, stored teacher log-probs         vs  DPOTrainer, ref_model=the teacher, sigmoid + 0.5·NLL

Every prompt is cut to exactly --max-prompt-tokens tokens (chat template included) and every
completion to exactly --max-completion-tokens (EOS included), so every batch has one shape on
both sides and no padding. Chosen completions are ACLSum summaries of the prompt's paper,
rejected ones summaries of another paper. The teacher (default: the model itself) scores the
pairs once here, as prefdistill's pipeline does before training (`teacher_pair_logps`), and
for kd_topk caches its top-k at every completion token once here (`build_topk_cache`, float16),
as the pipeline's teacher-signal stage does; the cache's size and build time are reported.

prefdistill runs the step of `prefdistill.training.loop.train` (see `run_prefdistill`); TRL runs
`trainer.train()`. Steps/s counts --steps steps after --warmup steps.
Peak memory is measured from just before the models load: on CPU the peak resident set
(VmHWM, reset through /proc/self/clear_refs) minus the resident set then; on CUDA
torch.cuda.max_memory_allocated minus the allocation then. Both include weights, gradients,
AdamW state, activations and, for TRL's DPO and GKD, the teacher held in memory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).parent / "results" / "trl_compare.json"
ROWS = {  # row: (prefdistill side, TRL side)
    "plad": ("PLaD rank calibration", "CPO loss_type=simpo, cpo_alpha=0"),
    "sft": ("SFT", "SFTTrainer"),
    "kd": ("word-level KD (forward KL)", "GKD lmbda=0, beta=0"),
    "dpkd": ("DPKD, stored teacher log-probs", "DPO, teacher as ref_model"),
    "kd_topk": ("word-level KD from cached teacher top-k", "GKD lmbda=0, beta=0"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    p.add_argument("--batch-size", type=int, default=4, help="rows (pairs for plad / dpkd) per optimizer step")
    p.add_argument("--max-prompt-tokens", type=int, default=128, help="every prompt is cut to exactly this (chat template included)")
    p.add_argument("--max-completion-tokens", type=int, default=48, help="every completion is cut to exactly this (EOS included)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {','.join(ROWS)}")
    p.add_argument("--topk", type=int, default=20, help="kd_topk: teacher token ids cached per position")
    p.add_argument("--n-rows", type=int, default=32, help="data rows built (batches cycle through them)")
    p.add_argument("--repeats", type=int, default=1, help="run each (prefdistill, TRL) pair this many times; medians reported")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--logits-chunk", type=int, default=None,
                   help="prefdistill: positions whose logits exist at once (train.logits_chunk; default the library's, 0 = whole batch)")
    p.add_argument("--model", default="builtin:smollm2-135m-instruct")
    p.add_argument("--teacher", default=None, help="teacher of kd / dpkd (default: --model)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of both sides (default: torch's); 1 keeps timings steady on a shared machine")
    p.add_argument("--tiny", action="store_true", help="the tiny random models and synthetic rows (a smoke test)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--arm", help=argparse.SUPPRESS)  # internal: ROW:SIDE, run in a subprocess
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        p.error(f"--rows: unknown {sorted(unknown)}; choose from {','.join(ROWS)}")
    return args


# ----------------------------------------------------------------------------- data


def fit_prompt(lm, text: str, length: int) -> str | None:
    """`text` cut so that the formatted prompt is exactly `length` tokens, or None."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    overhead = len(lm.prompt_ids("")) - 1
    for k in range(length - overhead + 2, length - overhead - 6, -1):
        if 0 < k <= len(ids):
            cut = lm.tokenizer.decode(ids[:k])
            if len(lm.prompt_ids(cut)) == length:
                return cut
    return None


def fit_completion(tokenizer, text: str, length: int) -> str | None:
    """`text` cut to exactly `length` tokens that re-tokenise to themselves, or None."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:length]
    cut = tokenizer.decode(ids)
    return cut if len(ids) == length and tokenizer(cut, add_special_tokens=False)["input_ids"] == ids else None


def source_examples(args, workdir: Path) -> tuple[str, str, list[tuple[str, str]]]:
    """(model path, teacher path, [(prompt, summary)]) from the tiny assets or the demo's ACLSum splits."""
    from dataclasses import replace

    from prefdistill.models.assets import resolve_model_path
    from prefdistill.cli import packaged_config
    from prefdistill.config.checks import load_config
    from prefdistill.data.splits import prepare_splits
    from prefdistill.models.tiny import make_tiny_assets, tiny_rows

    if args.tiny:
        paths = make_tiny_assets(workdir / "tiny")
        rows = tiny_rows(4 * args.n_rows)
        return str(paths["student"]), str(paths["teacher"]), [(f"Summarize : {r['document']}", r["summary"]) for r in rows]
    cfg = load_config(packaged_config("demo"))
    data_cfg = replace(cfg.data, max_prompt_tokens=None)  # cut here, to an exact length
    splits = prepare_splits(data_cfg, seed=cfg.seed)
    examples = splits.distill + splits.sft + splits.validation + splits.test
    return resolve_model_path(args.model), resolve_model_path(args.teacher or args.model), [(e.prompt, e.target) for e in examples]


def build_rows(args, workdir: Path) -> dict:
    """Rows of exact prompt / completion lengths, with the teacher's summed log-probs of both sides."""
    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.hf import LocalLM

    model_path, teacher_path, examples = source_examples(args, workdir)
    lm = LocalLM.load(ModelConfig(name_or_path=model_path, device="cpu"))
    c = args.max_completion_tokens - 1  # + EOS
    rows, n = [], len(examples)
    for i, (prompt, _) in enumerate(examples):
        prompt = fit_prompt(lm, prompt, args.max_prompt_tokens)
        chosen = fit_completion(lm.tokenizer, f"{examples[i][1]} {examples[(i + 1) % n][1]}", c)
        j = (i + n // 2) % n  # another paper (another document in --tiny)
        rejected = fit_completion(lm.tokenizer, f"{examples[j][1]} {examples[(j + 1) % n][1]}", c)
        if prompt and chosen and rejected and chosen != rejected:
            rows.append({"id": f"r{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected, "target": chosen})
        if len(rows) == args.n_rows:
            break
    if len(rows) < args.batch_size:
        raise SystemExit(f"only {len(rows)} rows fit the lengths asked for; lower --max-prompt-tokens / --max-completion-tokens")
    teacher = lm if teacher_path == model_path else LocalLM.load(ModelConfig(name_or_path=teacher_path, device="cpu"))
    prompts = [r["prompt"] for r in rows]
    chosen = teacher.score(prompts, [r["chosen"] for r in rows])
    rejected = teacher.score(prompts, [r["rejected"] for r in rows])
    for r, tc, tr in zip(rows, chosen, rejected):
        batch = lm.encode([r["prompt"]], [r["chosen"]])
        width = batch["completion_mask"].shape[1]
        r.update(teacher_chosen_logp=tc, teacher_rejected_logp=tr, prompt_text=lm.format_prompt(r["prompt"]),
                 input_ids=batch["input_ids"][0].tolist(),
                 completion_mask=[0] * (batch["input_ids"].shape[1] - width) + batch["completion_mask"][0].tolist())
    data = {"model": model_path, "teacher": teacher_path, "rows": rows}
    if "kd_topk" in args.rows.split(","):
        from prefdistill.signal.topk_cache import build_topk_cache

        t0 = time.perf_counter()
        cache = build_topk_cache(teacher, rows, args.topk, workdir / f"topk_k{args.topk}.bin", tokenizer=lm.tokenizer,
                                 teacher_id=teacher_path, temperature=1.0, dtype="float16", text_key="target")
        data["topk"] = {"k": args.topk, "dtype": "float16", "bytes_per_token": cache.stats["bytes_per_token"],
                        "build_s": round(time.perf_counter() - t0, 2), "path": str(cache.path), "teacher_id": cache.teacher_id}
    return data


# ----------------------------------------------------------------------------- measuring


def _status_mb(key: str) -> float:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) / 1024


def reset_peak(device) -> float:
    """Start a fresh peak; returns the memory in use now (MB)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    return _status_mb("VmRSS")


def read_peak(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_mb("VmHWM")


def logits_chunk_default() -> int:
    from prefdistill.models.hf import LocalLM

    return LocalLM.logits_chunk


def load_model(path: str, args, device):
    """The one way both sides load a model (so both start from the same resident weights)."""
    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.hf import LocalLM

    return LocalLM.load(ModelConfig(name_or_path=path, dtype=args.dtype, device=str(device)))


# ----------------------------------------------------------------------------- prefdistill side


PREFDISTILL_FIELDS = {"targets": ("id", "prompt", "target"),
                      "pairs": ("id", "prompt", "chosen", "rejected", "teacher_chosen_logp", "teacher_rejected_logp")}


def run_prefdistill(row: str, data: dict, args, device) -> dict:
    """The step `prefdistill.training.loop.train` takes, on the same accelerate / AdamW / schedule / clipping.

    The loop is spelled out here rather than called so that its clock stops after each
    optimizer step (train() also writes a checkpoint and is being extended in parallel);
    what each step runs is the same: the method's loss on a batch, backward, clip, AdamW
    step, scheduler step, zero_grad, and the loss's .item() for the log.
    """
    import torch
    from accelerate import Accelerator

    from prefdistill.methods import get_method
    from prefdistill.methods.dpkd import DPKDParams
    from prefdistill.methods.kd import KDParams
    from prefdistill.methods.plad import PLaDParams
    from prefdistill.methods.sft import SFTParams

    lm = load_model(data["model"], args, device)
    extras = {"teacher": load_model(data["teacher"], args, device)} if row == "kd" else {}
    if args.logits_chunk is not None:  # as train() sets it from train.logits_chunk
        for side in (lm, extras.get("teacher")):
            if side is not None:
                side.logits_chunk = args.logits_chunk
    if row == "kd_topk":  # the cache instead of the teacher
        from prefdistill.signal.topk_cache import TopkSignal

        t = data["topk"]
        extras = {"teacher_topk": TopkSignal(Path(t["path"]), t["teacher_id"], t["k"], 1.0, t["dtype"])}
    method, params = {"plad": ("plad", PLaDParams(variant="rank", beta=1.0)), "sft": ("sft", SFTParams()),
                      "kd": ("kd", KDParams(temperature=1.0)), "dpkd": ("dpkd", DPKDParams()),
                      "kd_topk": ("kd", KDParams(temperature=1.0, signal="topk", k=args.topk))}[row]
    spec, steps = get_method(method), args.warmup + args.steps
    # the fields of the method's typed training row (prefdistill.data.rows); the TRL side's token ids stay out
    rows = [{k: r[k] for k in PREFDISTILL_FIELDS[spec.consumes]} for r in data["rows"]]
    accelerator = Accelerator(mixed_precision="no", cpu=device.type == "cpu")
    model = lm.model.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, (steps - s) / steps))  # linear decay, as train()
    lm.model, optimizer = accelerator.prepare(model, optimizer)
    ends, t0 = [], time.perf_counter()
    for step in range(steps):
        batch = [rows[(step * args.batch_size + k) % len(rows)] for k in range(args.batch_size)]
        loss, _ = spec.loss(lm, batch, params, **extras)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(lm.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        final = loss.item()  # train() logs it; on CUDA this also waits for the step
        ends.append(time.perf_counter())
    timed = ends[-1] - (ends[args.warmup - 1] if args.warmup else t0)
    return {"steps": steps, "timed_s": round(timed, 3), "peak_raw_mb": read_peak(device), "final_loss": final}


# ----------------------------------------------------------------------------- TRL side


def trl_common(args, out_dir: str, device) -> dict:
    return dict(output_dir=out_dir, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
                learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                optim="adamw_torch", gradient_checkpointing=False, bf16=False, fp16=False, logging_strategy="no",
                save_strategy="no", report_to="none", disable_tqdm=True, seed=0, dataloader_num_workers=0,
                use_cpu=device.type == "cpu")


class IdsCollator:
    """Pre-tokenised rows (prefdistill's own encoding) -> input_ids / attention_mask / labels (-100 off the completion)."""

    def __call__(self, examples: list[dict]):
        import torch

        ids = torch.tensor([e["input_ids"] for e in examples])  # (B, L): one length, no padding
        mask = torch.tensor([e["completion_mask"] for e in examples])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.masked_fill(mask == 0, -100)}


def trl_trainer(row: str, data: dict, args, device, out_dir: str):
    from datasets import Dataset

    lm = load_model(data["model"], args, device)
    lm.model.train().requires_grad_(True)
    rows = data["rows"]
    common = trl_common(args, out_dir, device)
    if row == "plad":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        ds = Dataset.from_list([{"prompt": r["prompt_text"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
        cfg = CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, beta=1.0, simpo_gamma=0.5,
                        max_length=args.max_prompt_tokens + args.max_completion_tokens + 8, max_completion_length=None)
        return CPOTrainer(model=lm.model, args=cfg, train_dataset=ds, processing_class=lm.tokenizer)
    if row == "sft":
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_list([{"input_ids": r["input_ids"], "completion_mask": r["completion_mask"]} for r in rows])
        cfg = SFTConfig(**common, max_length=None, packing=False, completion_only_loss=True)
        return SFTTrainer(model=lm.model, args=cfg, train_dataset=ds, processing_class=lm.tokenizer)
    if row in ("kd", "kd_topk"):  # TRL has no cached teacher: GKD holds it in memory
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        ds = Dataset.from_list([{"input_ids": r["input_ids"], "completion_mask": r["completion_mask"]} for r in rows])
        teacher = load_model(data["teacher"], args, device).model
        cfg = GKDConfig(**common, lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False, max_length=None)
        return GKDTrainer(model=lm.model, teacher_model=teacher, args=cfg, train_dataset=ds, processing_class=lm.tokenizer,
                          data_collator=IdsCollator())
    from trl import DPOConfig, DPOTrainer

    ds = Dataset.from_list([{"prompt": r["prompt_text"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    teacher = load_model(data["teacher"], args, device).model
    cfg = DPOConfig(**common, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5], beta=0.1, max_length=None,
                    precompute_ref_log_probs=False)
    return DPOTrainer(model=lm.model, ref_model=teacher, args=cfg, train_dataset=ds, processing_class=lm.tokenizer)


def trl_tokens(trainer, row: str) -> list[int] | None:
    """Sequence lengths TRL trains on, per row of its dataset (to check they are prefdistill's)."""
    ds = trainer.train_dataset
    cols = ds.column_names
    if "chosen_ids" in cols:  # DPO
        return [len(p) + len(c) for p, c in zip(ds["prompt_ids"], ds["chosen_ids"])]
    if "chosen_input_ids" in cols:  # CPO
        return [len(x) for x in ds["chosen_input_ids"]]
    return [len(x) for x in ds["input_ids"]] if "input_ids" in cols else None


def run_trl(row: str, data: dict, args, device) -> dict:
    import torch
    from transformers import TrainerCallback

    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trl_trainer(row, data, args, device, tmp)
        lengths = trl_tokens(trainer, row)
        trainer.add_callback(StepClock())
        t0 = time.perf_counter()
        out = trainer.train()
        peak = read_peak(device)
    timed = ends[-1] - (ends[args.warmup - 1] if args.warmup else t0)
    return {"steps": len(ends), "timed_s": round(timed, 3), "peak_raw_mb": peak, "final_loss": out.training_loss,
            "sequence_lengths": sorted(set(lengths)) if lengths else None}


def preimport(data: dict) -> None:
    """Import, on both sides, every module either side uses: import cost is no training memory."""
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    from trl import DPOTrainer, SFTTrainer  # noqa: F401
    from trl.experimental.cpo import CPOTrainer  # noqa: F401
    from trl.experimental.gkd import GKDTrainer  # noqa: F401

    import prefdistill.methods  # noqa: F401
    from prefdistill.models.hf import LocalLM  # noqa: F401

    for path in {data["model"], data["teacher"]}:
        MODEL_FOR_CAUSAL_LM_MAPPING[type(transformers.AutoConfig.from_pretrained(path))]  # imports the model's module


def run_arm(args) -> None:
    """Subprocess: one side of one row; writes its measurements to --result."""
    import torch

    from prefdistill.models.hf import pick_device

    row, side = args.arm.split(":")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = json.loads(args.data.read_text())
    preimport(data)
    base = reset_peak(device)
    res = (run_prefdistill if side == "prefdistill" else run_trl)(row, data, args, device)
    res.update(peak_mb=round(res.pop("peak_raw_mb") - base, 1), steps_per_s=round(args.steps / res["timed_s"], 4),
               baseline_mb=round(base, 1), torch_threads=torch.get_num_threads())
    args.result.write_text(json.dumps(res))


# ----------------------------------------------------------------------------- driver


def arm_command(argv: list[str], row: str, side: str, data: Path, result: Path) -> list[str]:
    return [sys.executable, __file__, *argv, "--arm", f"{row}:{side}", "--data", str(data), "--result", str(result)]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:  # OpenMP reads it at start-up: the subprocesses inherit it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.arm:
        run_arm(args)
        return {}
    import torch
    import trl

    load_before = os.getloadavg()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = build_rows(args, Path(tmp))
        data_path = Path(tmp) / "rows.json"
        data_path.write_text(json.dumps(data))
        for row in args.rows.split(","):
            runs = {"prefdistill": [], "trl": []}
            for rep in range(args.repeats):
                for side in runs:  # prefdistill first, then TRL, one after the other
                    result = Path(tmp) / f"{row}-{side}-{rep}.json"
                    subprocess.run(arm_command(argv, row, side, data_path, result), check=True)
                    runs[side].append({**json.loads(result.read_text()), "load_avg_1min": round(os.getloadavg()[0], 2)})
            results[row] = summarise(row, runs)
            print_row(row, results[row], flush=True)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    result = {
        "benchmark": "trl_compare",
        "command": "python benchmarks/trl_compare.py " + " ".join(argv),
        "model": "tiny" if args.tiny else args.model,
        "teacher": "tiny teacher" if args.tiny else (args.teacher or args.model),
        "device": device, "dtype": args.dtype, "fine_tuning": "full (all weights), no gradient checkpointing",
        "trl": trl.__version__, "torch": torch.__version__,
        "settings": {k: getattr(args, k) for k in ("steps", "warmup", "batch_size", "max_prompt_tokens", "max_completion_tokens",
                                                   "n_rows", "repeats", "lr", "threads")},
        "logits_chunk": args.logits_chunk if args.logits_chunk is not None else logits_chunk_default(),
        "rows": results,
        **({"topk_cache": data["topk"]} if "topk" in data else {}),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": args.threads or torch.get_num_threads(),
                    "load_avg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


def summarise(row: str, runs: dict) -> dict:
    med = {side: {k: statistics.median(r[k] for r in rs) for k in ("steps_per_s", "peak_mb")} for side, rs in runs.items()}
    return {"prefdistill": ROWS[row][0], "trl_trainer": ROWS[row][1], "runs": runs,
            "prefdistill_steps_per_s": med["prefdistill"]["steps_per_s"], "trl_steps_per_s": med["trl"]["steps_per_s"],
            "speed_ratio": round(med["prefdistill"]["steps_per_s"] / med["trl"]["steps_per_s"], 3),
            "prefdistill_peak_mb": med["prefdistill"]["peak_mb"], "trl_peak_mb": med["trl"]["peak_mb"],
            "memory_ratio": round(med["prefdistill"]["peak_mb"] / max(med["trl"]["peak_mb"], 1e-9), 3)}


HEADER = f"{'row':<8}{'pd steps/s':>11}{'TRL steps/s':>12}{'speed x':>9}{'pd peak MB':>12}{'TRL peak MB':>12}{'mem ratio':>10}"


def print_row(row: str, r: dict, flush: bool = False) -> None:
    print(f"{row:<8}{r['prefdistill_steps_per_s']:>11.3f}{r['trl_steps_per_s']:>12.3f}{r['speed_ratio']:>9.2f}"
          f"{r['prefdistill_peak_mb']:>12.0f}{r['trl_peak_mb']:>12.0f}{r['memory_ratio']:>10.2f}", flush=flush)


def print_table(result: dict) -> None:
    print(f"{result['model']} on {result['device']} ({result['dtype']}), TRL {result['trl']}, {result['settings']}")
    print(HEADER)
    for row, r in result["rows"].items():
        print_row(row, r)
    print("speed x = prefdistill steps/s / TRL steps/s; mem ratio = prefdistill peak / TRL peak (lower is better)")


if __name__ == "__main__":
    main()
