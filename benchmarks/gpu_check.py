# python benchmarks/gpu_check.py --out $OUT/gpu_check.json   (--cpu-smoke: every part at toy size on the CPU, ~30 s)
"""One short GPU check of prefdistill: correctness, training throughput and MFU, TRL, generation, accelerate.

Parts (each in its own try/except: one failing part keeps the others' numbers):
  correctness   every registered method (+ KD from the top-k cache) trains 2 steps on the tiny models
                with `prefdistill.training.loop.train`, on the CPU in fp32 (the reference) and on the device in
                fp32 and under bf16 autocast; the step-1 losses must agree within TOLERANCES
  throughput    SFT, PLaD, DPKD (stored teacher log-probs), KD (live teacher and top-k cache) and GKD
                on-policy on a ~0.85B Llama-shaped student (2.8B teacher), random weights, bf16,
                ~1k-token rows, with and without gradient checkpointing: tokens/s, peak memory, MFU
                over the bf16 matmul rate measured here; the profiler's top kernels where MFU < 40%
  generation    `LocalLM.generate` against one-prompt HF `generate` (benchmarks/generation_throughput.py)
  distributed   `accelerate launch --num_processes 1` runs 4 PLaD steps through `train`
  trl           the rows of benchmarks/trl_compare.py, kd_topk included (its functions), on a random SmolLM2-135M-shaped model
Models are built from configs with random weights (no download). Parts run in the order above;
once --time-budget seconds have passed, the parts and rows left are skipped with a note.
The JSON goes to $OUT/gpu_check.json when OUT is set, else to --out.
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
if importlib.util.find_spec("prefdistill") is None:  # the GPU machine runs the working tree uninstalled
    sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402

from prefdistill.testing import PARAMS, ROWS, WordCountJudge  # noqa: E402  (every method's loss active on the tiny models)

sys.path.insert(0, str(HERE))  # the sibling benchmark scripts
from gpu_check_training import (error_tail, fresh_accelerate_state, part_throughput, print_throughput,  # noqa: E402
                                random_lm, words)

LIMIT_S = 480  # the whole GPU run must fit in 8 minutes (one device call may run 10)
NOT_CHECKED = "FSDP, DeepSpeed and NCCL need several GPUs and were not checked (one process, one device)."
# Step-1 loss, device against the CPU's fp32: |a - b| <= rel·|b| + abs.
TOLERANCES = {"fp32": {"rel": 1e-4, "abs": 1e-6}, "bf16": {"rel": 5e-2, "abs": 5e-3}}
SMOL = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
            vocab_size=49152, tie_word_embeddings=True)  # SmolLM2-135M's shape
SIZES = {
    "gpu": dict(
        student=dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=5632, vocab_size=32000),
        teacher=dict(hidden_size=3072, num_hidden_layers=26, num_attention_heads=24, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=32000),
        dtype="bfloat16", prompt=896, completion=128, batch=8, warmup=2, steps=6, sampled_warmup=1, sampled_steps=2,
        matmul=8192, matmul_dtype="bfloat16", topk=20,
        trl=dict(shape=SMOL, steps=10, warmup=2, batch=8, prompt=256, completion=128, dtype="bfloat16"),
        gen=dict(shape=SMOL, prompts=8, samples=4, prompt=190, new=32, batch=8)),
    "smoke": dict(
        student=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=512),
        teacher=dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=192, vocab_size=512),
        dtype="float32", prompt=24, completion=8, batch=2, warmup=1, steps=2, sampled_warmup=1, sampled_steps=1,
        matmul=256, matmul_dtype="float32", topk=8,
        trl=dict(shape=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=64, vocab_size=512), steps=1, warmup=1, batch=2, prompt=24, completion=6,
                 dtype="float32"),
        gen=dict(shape=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=64, vocab_size=512), prompts=2, samples=2, prompt=12, new=4, batch=2)),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="every part at toy size on the CPU (the device is the CPU)")
    p.add_argument("--out", type=Path, default=None,
                   help="default: $OUT/gpu_check.json when OUT is set, else benchmarks/results/gpu_check.json "
                        "(gpu_check_cpu_smoke.json with --cpu-smoke)")
    p.add_argument("--time-budget", type=float, default=420.0, help="seconds; parts and rows left after it are skipped")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {','.join(PARTS)}")
    p.add_argument("--dist-child", type=Path, help=argparse.SUPPRESS)  # internal: the process accelerate launches
    p.add_argument("--dist-device", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"--parts: unknown {sorted(unknown)}")
    return args


class Context:
    """What every part reads: the mode, its sizes, the device, a scratch folder, the deadline; what was skipped for time."""

    def __init__(self, smoke: bool, size: dict, device: torch.device, tmp: Path, deadline: float):
        self.smoke, self.size, self.device, self.tmp, self.deadline = smoke, size, device, tmp, deadline
        self.skipped_for_time: list[str] = []

    def timeout(self, most: float) -> float:
        """Seconds a subprocess may run: at most `most`, and not far past the budget (LIMIT_S is the hard end)."""
        return max(20.0, min(most, self.deadline + 45 - time.perf_counter()))

    def out_of_time(self, what: str) -> bool:
        """True (and noted) once the time budget is spent: `what` is then skipped."""
        if time.perf_counter() < self.deadline:
            return False
        self.skipped_for_time.append(what)
        return True


def benchmark_module(name: str):
    """benchmarks/NAME.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quiet_training_bars() -> None:
    """The train loop's progress bars off (it asks for them explicitly): the JSON and the table are the output."""
    import prefdistill.training.loop

    shown = prefdistill.training.loop.progress_bar
    prefdistill.training.loop.progress_bar = lambda *a, **k: shown(*a, **{**k, "disable": True})


# ----------------------------------------------------------------------------- correctness

EXTRA_VARIANTS = {"kd[topk]": ("kd", {"signal": "topk", "k": 8, "topk_dtype": "float32"})}


def variants() -> dict[str, tuple[str, dict]]:
    from prefdistill.methods import METHODS

    return {**{name: (name, PARAMS.get(name, {})) for name in sorted(METHODS)}, **EXTRA_VARIANTS}


@contextmanager
def rollouts(record: list, replay: list | None):
    """Record every on-policy sample the methods draw; with `replay`, hand the methods those samples instead.

    The real sampler still runs (its draws advance the RNG as usual and are recorded), so a
    device run scores exactly the CPU's rows even where a sample came out differently.
    """
    from prefdistill.models.rollout import rollout

    mods = [m for n, m in list(sys.modules.items()) if n.startswith("prefdistill.methods.") and getattr(m, "rollout", None) is rollout]
    queue = list(replay or [])

    def sampled(*a, **k):
        out = rollout(*a, **k)
        record.append(out)
        return queue.pop(0) if queue else out

    for m in mods:
        m.rollout = sampled
    try:
        yield
    finally:
        for m in mods:
            m.rollout = rollout


def method_extras(needs: frozenset, assets: dict, device: str, rows: list[dict], params, student, folder: Path) -> dict:
    """What the pipeline passes for each need, on the tiny models (and the top-k cache built on `device`)."""
    from prefdistill.config.schema import ModelConfig
    from prefdistill.models.hf import LocalLM
    from prefdistill.judges.oracles import BradleyTerryOracle
    from prefdistill.signal.topk_cache import build_topk_cache

    load = lambda role: LocalLM.load(ModelConfig(name_or_path=str(assets[role]), device=device))  # noqa: E731
    providers = {"teacher": lambda: load("teacher"), "reference": lambda: load("student"),
                 "oracle": lambda: BradleyTerryOracle(WordCountJudge()), "state": dict,
                 "teacher_topk": lambda: build_topk_cache(load("teacher"), rows, params.k, folder / "topk.bin",
                                                          tokenizer=student.tokenizer, teacher_id="tiny",
                                                          temperature=params.temperature, dtype=params.topk_dtype)}
    return {name: make() for name, make in providers.items() if name in needs}


def two_steps(label: str, assets: dict, device: str, precision: str, folder: Path, replay: list | None = None) -> dict:
    """Losses of 2 steps of `train` (seed 0) and the samples drawn, on `device` under `precision`."""
    from prefdistill.config.schema import LoraConfig, ModelConfig, TrainConfig
    from prefdistill.methods import resolve
    from prefdistill.models.hf import LocalLM
    from prefdistill.training.loop import train

    method, raw = variants()[label]
    resolved = resolve(method, raw, "params")
    spec, params, needs = resolved.spec, resolved.params, resolved.needs
    rows = copy.deepcopy(ROWS[resolved.consumes])
    folder.mkdir(parents=True)
    lm = LocalLM.load(ModelConfig(name_or_path=str(assets["student"]), device=device), for_training=True)
    extras = method_extras(needs, assets, device, rows, params, lm, folder)
    fresh_accelerate_state()
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-2, save_every=100, log_every=100, mixed_precision=precision)
    drawn: list = []
    with rollouts(drawn, replay):
        log = train(lm, spec, params, rows, cfg, LoraConfig(enabled=False), out_dir=folder / "ckpt", parent=None, seed=0,
                    desc=label, extras=extras)
    return {"losses": [e["loss"] for e in log], "samples": drawn}


def compare(ref: dict, run: dict, tol: dict | None) -> dict:
    """Step-1 loss of `run` against `ref` (tol None: must be bitwise equal); whether the samples agreed."""
    a, b = run["losses"][0], ref["losses"][0]
    diff = abs(a - b)
    ok = math.isfinite(a) and (diff == 0 if tol is None else diff <= tol["rel"] * abs(b) + tol["abs"])
    same = [x.completions for x in run["samples"]] == [x.completions for x in ref["samples"]]
    return {"losses": run["losses"], "abs_diff": diff, "rel_diff": diff / max(abs(b), 1e-12), "ok": ok,
            "samples_drawn": len(run["samples"]), "samples_equal": same,
            "basis": "same rows" if same else "the CPU's samples replayed (the device drew others)"}


def part_correctness(ctx: Context) -> dict:
    from prefdistill.models.tiny import make_tiny_assets

    assets = make_tiny_assets(ctx.tmp / "tiny")
    bf16 = bf16_support(ctx.device)
    rows = {}
    for label in variants():
        if ctx.out_of_time(f"correctness:{label}"):
            rows[label] = {"status": "skipped: time budget"}
            continue
        try:
            rows[label] = correctness_row(label, assets, ctx, bf16)
        except Exception as e:  # one method's failure keeps the other rows
            rows[label] = {"status": "error", "error": error_tail(e)}
    failed = [k for k, r in rows.items() if r["status"] in ("failed", "error")]
    return {"reference": "CPU, fp32", "device": str(ctx.device), "steps": 2, "compared": "step-1 loss",
            "tolerances": {"fp32": "bitwise equal (the device is the CPU)" if ctx.smoke else TOLERANCES["fp32"],
                           "bf16": TOLERANCES["bf16"]},
            "float32_matmul_precision": torch.get_float32_matmul_precision(), "rows": rows,
            "status": "failed" if failed else "ok", "failed": failed}


def correctness_row(label: str, assets: dict, ctx: Context, bf16: str | None) -> dict:
    """The CPU's fp32 reference, then the device in fp32 and under bf16 autocast, replaying the CPU's samples."""
    ref = two_steps(label, assets, "cpu", "no", ctx.tmp / "ref" / label)
    device = str(ctx.device)
    row = {"reference_losses": ref["losses"],
           "fp32": compare(ref, two_steps(label, assets, device, "no", ctx.tmp / "fp32" / label, ref["samples"]),
                           None if ctx.smoke else TOLERANCES["fp32"])}
    if bf16 is None:
        row["bf16"] = compare(ref, two_steps(label, assets, device, "bf16", ctx.tmp / "bf16" / label, ref["samples"]),
                              TOLERANCES["bf16"])
    else:
        row["bf16"] = {"status": f"skipped: {bf16}", "ok": True}
    row["status"] = "ok" if row["fp32"]["ok"] and row["bf16"]["ok"] else "failed"
    return row


def bf16_support(device: torch.device) -> str | None:
    """None when bf16 autocast works on `device`, else why not."""
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            y = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
        return None if y.dtype == torch.bfloat16 else f"autocast on {device.type} gave {y.dtype}"
    except (RuntimeError, AssertionError) as e:
        return f"bf16 autocast unsupported on {device.type}: {e}"


# ----------------------------------------------------------------------------- generation


def part_generation(ctx: Context) -> dict:
    """benchmarks/generation_throughput.py's naive and batched arms on a random model of SmolLM2-135M's shape."""
    import random

    from prefdistill.config.schema import SamplingConfig

    gt = benchmark_module("generation_throughput")
    g = ctx.size["gen"]
    lm = random_lm(g["shape"], ctx.device, "bfloat16" if ctx.device.type == "cuda" else "float32", "random-smollm2-shape")
    rng = random.Random(1)
    prompts = [words(rng, g["prompt"] - 3 - rng.randrange(0, max(1, g["prompt"] // 5)), g["shape"]["vocab_size"])
               for _ in range(g["prompts"])]
    eos = lm.model.generation_config.eos_token_id
    stop_ids = {lm.tokenizer.pad_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])}
    sampling = SamplingConfig(max_new_tokens=g["new"], do_sample=True, temperature=0.7, top_p=0.9, num_samples=g["samples"],
                              batch_size=g["batch"])
    args = argparse.Namespace(seed=0)
    warm = SamplingConfig(max_new_tokens=min(4, g["new"]), num_samples=1, batch_size=g["batch"])
    gt.run_naive(lm, prompts[:1], args, warm, stop_ids)  # first-call allocations, kernels, caches
    gt.run_batched(lm, prompts[:2], args, warm, stop_ids)
    arms = {"naive": gt.run_naive(lm, prompts, args, sampling, stop_ids),
            "batched": gt.run_batched(lm, prompts, args, sampling, stop_ids)}
    ratio = {k: round(arms["batched"][k] / arms["naive"][k], 3) for k in ("prompts_per_s", "tokens_per_s")}
    return {"model": f"random weights, shape {g['shape']}", "dtype": str(lm.model.dtype), "device": str(ctx.device),
            "settings": {k: v for k, v in g.items() if k != "shape"}, "arms": arms, "ratio_batched_over_naive": ratio,
            "status": "ok"}


# ----------------------------------------------------------------------------- distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part_distributed(ctx: Context) -> dict:
    """`accelerate launch --num_processes 1` of this script's child mode: 4 PLaD steps through `train`."""
    out = ctx.tmp / "dist.json"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(Path(__file__).resolve()), "--dist-child", str(out), "--dist-device", "cpu" if ctx.smoke else "auto"]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if ctx.smoke else os.environ.get("OMP_NUM_THREADS", "8")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=ctx.timeout(180))
    result = {"command": "accelerate launch --num_processes 1 benchmarks/gpu_check.py --dist-child OUT",
              "wall_s": round(time.perf_counter() - t0, 2), "not_checked": NOT_CHECKED,
              "process_group": "none with one process; tests/training/test_distributed.py runs 2 CPU processes over gloo"}
    if done.returncode != 0 or not out.is_file():
        return {**result, "status": "error", "error": (done.stdout[-1500:] + done.stderr[-2500:]).strip().splitlines()[-15:]}
    child = json.loads(out.read_text())
    ok = child["processes"] == 1 and len(child["losses"]) == 4 and all(math.isfinite(x) for x in child["losses"])
    return {**result, **child, "status": "ok" if ok else "failed"}


def dist_child(args) -> None:
    """Run under accelerate launch: 4 PLaD steps on the tiny models; write the losses and what accelerate set up."""
    from prefdistill.config.schema import LoraConfig, ModelConfig, TrainConfig
    from prefdistill.methods import get_method
    from prefdistill.methods.plad import PLaDParams
    from prefdistill.models.hf import CHECKPOINT_META, LocalLM
    from prefdistill.models.tiny import make_tiny_assets
    from prefdistill.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        assets = make_tiny_assets(Path(tmp) / "tiny")
        lm = LocalLM.load(ModelConfig(name_or_path=str(assets["student"]), device=args.dist_device), for_training=True)
        cfg = TrainConfig(steps=4, batch_size=2, lr=1e-2, save_every=2, log_every=100)
        out_dir = Path(tmp) / "ckpt"
        log = train(lm, get_method("plad"), PLaDParams(beta=50.0), ROWS["pairs"], cfg, LoraConfig(enabled=False),
                    out_dir=out_dir, parent=None, seed=0, desc="plad")
        meta = json.loads((out_dir / CHECKPOINT_META).read_text())
    from accelerate.state import PartialState

    state = PartialState()
    args.dist_child.write_text(json.dumps({"losses": [e["loss"] for e in log], "processes": meta["processes"],
                                           "distributed_type": str(state.distributed_type), "device": str(state.device)}))


# ----------------------------------------------------------------------------- TRL side by side


def part_trl(ctx: Context) -> dict:
    """benchmarks/trl_compare.py's rows (kd_topk included), with its functions, on a random model of SmolLM2-135M's shape."""
    missing = [m for m in ("trl", "datasets") if package_version(m) is None]
    if missing:
        return {"status": f"skipped: {' and '.join(missing)} not installed"}
    import trl

    tc = benchmark_module("trl_compare")
    argv, data_path = trl_data(tc, ctx)
    args = tc.parse_args(argv)
    rows = {row: trl_row(tc, argv, row, data_path, ctx) for row in tc.ROWS}
    settings = ("steps", "warmup", "batch_size", "max_prompt_tokens", "max_completion_tokens", "n_rows", "repeats", "lr", "threads")
    return {"benchmark": "trl_compare", "command": "python benchmarks/trl_compare.py " + " ".join(argv),
            "model": f"random weights, shape {ctx.size['trl']['shape']}", "teacher": "the model itself", "device": ctx.device.type,
            "dtype": args.dtype, "fine_tuning": "full (all weights), no gradient checkpointing", "trl": trl.__version__,
            "torch": torch.__version__, "settings": {k: getattr(args, k) for k in settings}, "rows": rows,
            "status": "ok" if all(r["status"] == "ok" for r in rows.values()) else "failed"}


def trl_data(tc, ctx: Context) -> tuple[list[str], Path]:
    """(trl_compare's arguments, its rows file): rows of random words, cut by its own build_rows, for a random model saved here."""
    import random

    t = ctx.size["trl"]
    model_dir = ctx.tmp / "trl_model"
    lm = random_lm(t["shape"], torch.device("cpu"), t["dtype"], "random-smollm2-shape")
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    argv = ["--device", ctx.device.type, "--steps", str(t["steps"]), "--warmup", str(t["warmup"]), "--batch-size", str(t["batch"]),
            "--max-prompt-tokens", str(t["prompt"]), "--max-completion-tokens", str(t["completion"]), "--n-rows", str(2 * t["batch"]),
            "--dtype", t["dtype"], "--model", str(model_dir)]
    rng, v = random.Random(2), t["shape"]["vocab_size"]
    examples = [(words(rng, t["prompt"] + 8, v), words(rng, t["completion"], v)) for _ in range(4 * t["batch"])]
    tc.source_examples = lambda args, workdir: (str(model_dir), str(model_dir), examples)  # random words, not ACLSum
    data_path = ctx.tmp / "trl_rows.json"
    data_path.write_text(json.dumps(tc.build_rows(tc.parse_args(argv), ctx.tmp)))
    return argv, data_path


def trl_row(tc, argv: list[str], row: str, data_path: Path, ctx: Context) -> dict:
    """One trl_compare row: prefdistill then TRL, each in a fresh subprocess; trl_compare's summary of both."""
    runs = {"prefdistill": [], "trl": []}
    for side in runs:
        if ctx.out_of_time(f"trl:{row}:{side}"):
            return {"status": "skipped: time budget"}
        result = ctx.tmp / f"trl-{row}-{side}.json"
        try:
            done = subprocess.run(tc.arm_command(argv, row, side, data_path, result), capture_output=True, text=True,
                                  timeout=ctx.timeout(240))
        except subprocess.TimeoutExpired as e:
            return {"status": "error", "side": side, "error": [f"timed out after {e.timeout:.0f} s"]}
        if done.returncode != 0:
            return {"status": "error", "side": side, "error": (done.stdout[-1000:] + done.stderr[-2500:]).strip().splitlines()[-15:]}
        runs[side].append({**json.loads(result.read_text()), "load_avg_1min": round(os.getloadavg()[0], 2)})
    return {"status": "ok", **tc.summarise(row, runs)}


# ----------------------------------------------------------------------------- driver

PARTS = {"correctness": part_correctness, "throughput": part_throughput, "generation": part_generation,
         "distributed": part_distributed, "trl": part_trl}


def run_part(name: str, ctx: Context) -> dict:
    """One part, timed; an exception becomes status "error" with the traceback's last lines."""
    if ctx.out_of_time(name):
        return {"status": "skipped: time budget spent before this part started"}
    t0 = time.perf_counter()
    try:
        out = PARTS[name](ctx)
    except (Exception, SystemExit) as e:  # the other parts' numbers must survive (trl_compare exits on too few rows)
        out = {"status": "error", "error": error_tail(e)}
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    print(f"[gpu_check] {name}: {out['status']} in {out['wall_s']:.1f} s", flush=True)
    return out


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": package_version("transformers"),
            "accelerate": package_version("accelerate"), "peft": package_version("peft"), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
            "trl": package_version("trl"), "datasets": package_version("datasets"), "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2)}


def output_path(args) -> Path:
    if args.out is not None:
        return args.out
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return HERE / "results" / ("gpu_check_cpu_smoke.json" if args.cpu_smoke else "gpu_check.json")


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # bars the library does not ask for explicitly (see quiet_training_bars)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    quiet_training_bars()
    if args.dist_child:
        dist_child(args)
        return {}
    import prefdistill

    src = str(Path(prefdistill.__file__).resolve().parents[1])  # subprocesses import this same prefdistill
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --cpu-smoke, or on the GPU machine")
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if args.cpu_smoke:  # toy shapes gain nothing from more threads, and a shared machine's cores make them wait
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    report = {"benchmark": "gpu_check", "command": "python benchmarks/gpu_check.py " + " ".join(argv),
              "mode": "cpu-smoke" if args.cpu_smoke else "gpu", "environment": environment(device), "parts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(args.cpu_smoke, SIZES["smoke" if args.cpu_smoke else "gpu"], device, Path(tmp), t0 + args.time_budget)
        for name in args.parts.split(","):
            report["parts"][name] = run_part(name, ctx)
    wall = round(time.perf_counter() - t0, 2)
    report.update(wall_s=wall, not_checked=NOT_CHECKED,
                  budget_s={"limit": LIMIT_S, "time_budget": args.time_budget, "wall": wall, "fits": wall < LIMIT_S,
                            "skipped_for_time": ctx.skipped_for_time},
                  all_ok=all(p["status"] == "ok" for p in report["parts"].values()),
                  not_ok=[n for n, p in report["parts"].items() if p["status"] in ("error", "failed")],
                  skipped=[n for n, p in report["parts"].items() if p["status"].startswith("skipped")])
    out = output_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(report)
    print(f"wrote {out}")
    return report


# ----------------------------------------------------------------------------- the printed table


def print_table(r: dict) -> None:
    env, parts = r["environment"], r["parts"]
    print(f"\ngpu_check ({r['mode']}): {env['gpu'] or 'CPU'}, torch {env['torch']}, transformers {env['transformers']}, "
          f"CUDA {env['cuda']}; wall {r['wall_s']:.1f} s (limit {LIMIT_S} s, fits: {r['budget_s']['fits']})")
    for name, p in parts.items():
        print(f"  {name:<12} {p.get('wall_s', 0):>7.1f} s  {p['status']}")
    print_correctness(parts.get("correctness", {}))
    print_throughput(parts.get("throughput", {}))
    g = parts.get("generation", {})
    if "arms" in g:
        a = g["arms"]
        print(f"generation: naive {a['naive']['tokens_per_s']:.1f} tok/s, batched {a['batched']['tokens_per_s']:.1f} tok/s, "
              f"ratio {g['ratio_batched_over_naive']['tokens_per_s']:.2f}x")
    d = parts.get("distributed", {})
    if "losses" in d:
        print(f"distributed: {d['processes']} process ({d['distributed_type']}, {d['device']}), PLaD losses "
              + " ".join(f"{x:.4f}" for x in d["losses"]))
    for row, v in parts.get("trl", {}).get("rows", {}).items():
        print(f"trl {row:<5} " + (f"prefdistill {v['prefdistill_steps_per_s']:.3f} vs TRL {v['trl_steps_per_s']:.3f} steps/s "
                                  f"({v['speed_ratio']:.2f}x), peak {v['prefdistill_peak_mb']:.0f} vs {v['trl_peak_mb']:.0f} MB "
                                  f"({v['memory_ratio']:.2f})" if v["status"] == "ok" else v["status"]))
    print(r["not_checked"])


def print_correctness(c: dict) -> None:
    if "rows" not in c:
        return
    print(f"correctness, step-1 loss vs {c['reference']}:")
    print(f"  {'method':<10}{'ref loss':>11}{'fp32 rel':>10}{'bf16 rel':>10}  samples fp32/bf16")
    for label, row in c["rows"].items():
        if "fp32" not in row:
            print(f"  {label:<10} {row['status']} {(row.get('error') or [''])[-1][:100]}")
            continue
        bf = row["bf16"]
        bf_txt = f"{bf['rel_diff']:>10.1e}" if "rel_diff" in bf else f"{'skipped':>10}"
        same = "/".join("-" if not x.get("samples_drawn") else "equal" if x["samples_equal"] else "replayed"
                        for x in (row["fp32"], bf))  # replayed: the device drew other samples; it scored the CPU's
        print(f"  {label:<10}{row['reference_losses'][0]:>11.5f}{row['fp32']['rel_diff']:>10.1e}{bf_txt}  {same}  {row['status']}")


if __name__ == "__main__":
    main()
