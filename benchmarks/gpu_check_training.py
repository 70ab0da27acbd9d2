# part of benchmarks/gpu_check.py: python benchmarks/gpu_check.py --parts throughput   (--cpu-smoke: toy sizes on the CPU)
"""gpu_check's training throughput and MFU, and the random-weight models and rows its parts share.

Each row times optimizer steps as `prefdistill.training.loop.train` takes them (`run_steps`: the method's
own loss, backward, clip, AdamW, scheduler) on a Llama built from a config with random weights
(`random_lm`) and rows of random words whose lengths are exact (`synthetic_rows`). A forward
hook on the model counts the token positions it runs (`TokenCounter`); MFU divides their model
FLOPs by the time and by the bf16 matmul rate measured in the same process (`peak_matmul`).
"""
from __future__ import annotations

import gc
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from gpu_check import Context

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # trl_compare's peak-memory readers
    sys.path.insert(0, str(HERE))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def error_tail(e: BaseException) -> list[str]:
    """The traceback's last lines."""
    return "".join(traceback.format_exception(e)).strip().splitlines()[-8:]


def fresh_accelerate_state() -> None:
    """Forget accelerate's process-wide state: it refuses a second Accelerator with another mixed precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


# ----------------------------------------------------------------------------- random models and rows


def word_tokenizer(vocab_size: int):
    """A word-level chat tokenizer of exactly `vocab_size` ids: one token per word w0, w1, ... (exact lengths)."""
    from prefdistill.models.tiny import _causal_tokenizer

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    words = specials + [f"w{i}" for i in range(vocab_size - len(specials))]
    return _causal_tokenizer({w: i for i, w in enumerate(words)}, chat=True)


def random_lm(shape: dict, device: torch.device, dtype: str, name: str):
    """A LocalLM over a Llama built from `shape` with random weights, made on `device`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefdistill.models.hf import DTYPES, LocalLM

    tok = word_tokenizer(shape["vocab_size"])
    config = LlamaConfig(**shape, max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(DTYPES[dtype])
    return LocalLM(model, tok, name=name, prompt_format="chat")


def words(rng, n: int, vocab_size: int) -> str:
    return " ".join(f"w{rng.randrange(vocab_size - 6)}" for _ in range(n))


def synthetic_rows(kind: str, n: int, prompt: int, completion: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """Rows whose chat-formatted prompt is `prompt` tokens and whose completions are `completion` (EOS included)."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p = words(rng, prompt - 3, vocab_size)  # + "<|user|>", "</s>", "<|assistant|>"
        if kind == "targets":
            rows.append({"id": str(i), "prompt": p, "target": words(rng, completion - 1, vocab_size)})
        else:
            rows.append({"id": str(i), "prompt": p, "chosen": words(rng, completion - 1, vocab_size),
                         "rejected": words(rng, completion - 1, vocab_size), "chosen_source": "teacher",
                         "teacher_chosen_logp": -2.0 * completion, "teacher_rejected_logp": -3.0 * completion})
    return rows


# ----------------------------------------------------------------------------- throughput and MFU

THROUGHPUT = {  # row: (method, params, rows consumed, teacher)
    "sft": ("sft", {}, "targets", None),
    "plad": ("plad", {"beta": 1.0}, "pairs", None),
    "dpkd": ("dpkd", {}, "pairs", None),  # the teacher's log-probs stored with the pairs
    "kd": ("kd", {}, "targets", "live"),
    "kd_topk": ("kd", {"signal": "topk"}, "targets", "cache"),
    "gkd": ("gkd", {"on_policy_fraction": 1.0}, "pairs", "live"),
}
PROFILE_BELOW = 0.40  # MFU under which SFT and PLaD get a profile
WHOLE_BATCH = ("sft", "kd")  # rows run again with train.logits_chunk 0 (the whole batch's logits at once): the memory model
# Copies of a (positions, V) float tensor that exist at once at the loss, by row, on the whole-batch path: logits,
# log-probs and their gradient for a cross-entropy; both sides' logits and log-probs and the student's two gradients
# for a divergence with the live teacher. Chunking keeps `chunk` positions of each instead of all of them.
LOGITS_COPIES = {"sft": 3, "kd": 6}


def predicted_logits_mb(row: str, positions: int, vocab: int, chunk: int, bytes_per_element: int = 4) -> dict:
    """The memory model: logits bytes = positions x vocabulary x bytes per element x copies, whole batch against chunked.

    bytes_per_element 4: the losses compute log-softmax in float32 whatever the weights' dtype.
    """
    per = vocab * bytes_per_element * LOGITS_COPIES[row] / 2 ** 20
    whole, chunked = positions * per, min(positions, chunk) * per
    return {"positions": positions, "vocab": vocab, "copies": LOGITS_COPIES[row], "chunk": chunk,
            "whole_batch_mb": round(whole, 1), "chunked_mb": round(chunked, 1), "saving_mb": round(whole - chunked, 1)}


def peak_matmul(n: int, dtype: str, device: torch.device, repeats: int = 10, inner: int = 10) -> dict:
    """The dense matmul rate: median over `repeats` timings of `inner` (n × n) @ (n × n) products."""
    from prefdistill.models.hf import DTYPES

    a, b = (torch.randn(n, n, device=device, dtype=DTYPES[dtype]) for _ in range(2))
    c = torch.empty_like(a)
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=c)
        sync(device)
        times.append((time.perf_counter() - t0) / inner)
    rate = 2 * n ** 3 / statistics.median(times)
    return {"n": n, "dtype": dtype, "repeats": repeats, "inner": inner, "flops_per_s": rate, "tflops": round(rate / 1e12, 2)}


class TokenCounter:
    """Counts the token positions a causal LM runs through its body and through its output layer, with and without grad.

    Forward pre-hooks on the decoder and the output layer: gradient checkpointing's recomputation
    (inside the layers) is not counted, and the body's count includes padding.
    """

    def __init__(self, model):
        self.counts = dict.fromkeys(("body_grad", "body_nograd", "head_grad", "head_nograd"), 0)
        body, head = model.get_decoder(), model.get_output_embeddings()
        self.n_body = sum(p.numel() for n, p in body.named_parameters() if "embed_tokens" not in n)
        self.n_head = head.weight.numel()  # tied or not, the head multiplies every position it scores
        self.hooks = [body.register_forward_pre_hook(self._body, with_kwargs=True), head.register_forward_pre_hook(self._head)]

    def _key(self, part: str) -> str:
        return f"{part}_{'grad' if torch.is_grad_enabled() else 'nograd'}"

    def _body(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.counts[self._key("body")] += ids.numel()

    def _head(self, module, args):
        self.counts[self._key("head")] += args[0].shape[:-1].numel()

    def reset(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)

    def flops(self) -> tuple[float, float]:
        """(FLOPs counted exactly, the plain 6·N count) of what ran since the last reset.

        Exactly: 6 per weight per position trained (forward + backward), 2 per position run
        forward only; the output layer's weights only at the positions it scored. Plainly
        (Kaplan et al. 2020's 6·N per token): N = every weight but the input embedding, at every position.
        Neither counts the attention scores' own FLOPs, nor the recomputation of gradient checkpointing.
        """
        c, nb, nh = self.counts, self.n_body, self.n_head
        exact = 6 * (nb * c["body_grad"] + nh * c["head_grad"]) + 2 * (nb * c["body_nograd"] + nh * c["head_nograd"])
        plain = (nb + nh) * (6 * c["body_grad"] + 2 * c["body_nograd"])
        return exact, plain


def run_steps(lm, spec, params, rows, extras, warmup: int, steps: int, batch: int, device, on_warm=None) -> float:
    """Seconds taken by `steps` optimizer steps after `warmup` untimed ones, each as `prefdistill.training.loop.train` takes it.

    Each step: the method's loss on `batch` rows, backward, clip 1.0, AdamW, scheduler, zero_grad,
    and the loss's .item() (train() logs it; on CUDA it also waits for the step). `on_warm()` runs
    once the warm-up is done (to zero the token counters).
    """
    from accelerate import Accelerator

    fresh_accelerate_state()
    accelerator = Accelerator(mixed_precision="no", cpu=device.type == "cpu")
    total = warmup + steps
    optimizer = torch.optim.AdamW([p for p in lm.model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, (total - s) / total))  # linear decay, as train()
    lm.model, optimizer = accelerator.prepare(lm.model, optimizer)
    t0 = time.perf_counter()
    for step in range(total):
        if step == warmup:
            if on_warm:
                on_warm()
            t0 = time.perf_counter()
        loss, _ = spec.loss(lm, [rows[(step * batch + k) % len(rows)] for k in range(batch)], params, **extras)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(lm.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
    sync(device)
    return time.perf_counter() - t0


def profile_steps(step_fn, device: torch.device, top: int = 10) -> list[dict]:
    """The torch profiler's top `top` kernels (CUDA) or operators (CPU) by self time over `step_fn()`."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        step_fn()
        sync(device)
    events = list(prof.key_averages())
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    if cuda:
        kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        events = kernels or events
    total = sum(getattr(e, attr, 0) for e in events) or 1
    ranked = sorted(events, key=lambda e: getattr(e, attr, 0), reverse=True)[:top]
    return [{"name": e.key[:120], "self_ms": round(getattr(e, attr, 0) / 1e3, 3), "share": round(getattr(e, attr, 0) / total, 4),
             "calls": e.count} for e in ranked]


def throughput_row(name: str, ctx: Context, models: dict, peak: float, checkpointed: bool, chunk: int | None = None) -> dict:
    """One method's timed steps on the big student (and teacher): tokens/s, peak memory, MFU; `chunk`: train.logits_chunk
    for this row (default: the config's)."""
    from prefdistill.methods import get_method, resolve
    from prefdistill.methods.registry import build_params

    import trl_compare as tc  # its peak-memory readers (the CUDA allocator's, or VmHWM on the CPU)
    s = ctx.size
    method, raw, kind, teacher = THROUGHPUT[name]
    spec = get_method(method)
    sampled = resolve(method, raw, "params").on_policy  # it draws student samples in the loop: their length is set here
    params = build_params(spec, {**raw, **({"max_new_tokens": s["completion"]} if sampled else {}),
                                 **({"k": s["topk"]} if teacher == "cache" else {})}, "params")
    rows = synthetic_rows(kind, s["batch"], s["prompt"], s["completion"], s["student"]["vocab_size"])
    student, counter = models["student"], models["counter"]
    extras = {"teacher": models["teacher"]} if teacher == "live" else {}
    if teacher == "cache":
        extras = {"teacher_topk": topk_cache(rows, params, models, ctx)}
    student.model.train()
    checkpointing(student.model, checkpointed)
    default_chunk = student.logits_chunk
    for lm in (student, models.get("teacher")):
        if lm is not None and chunk is not None:
            lm.logits_chunk = chunk
    warmup, steps = (s["sampled_warmup"], s["sampled_steps"]) if sampled else (s["warmup"], s["steps"])
    counters = [c for c in (counter, models.get("teacher_counter")) if c]

    def step(warm: int, n: int, on_warm=None) -> float:
        return run_steps(student, spec, params, rows, extras, warm, n, s["batch"], ctx.device, on_warm)

    try:
        gc.collect()  # the last row's optimizer state is garbage by now: free it before the peak resets
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
        resident = tc.reset_peak(ctx.device)
        seconds = step(warmup, steps, lambda: [c.reset() for c in counters])
        peak_mb = tc.read_peak(ctx.device)
        out = throughput_numbers(seconds, steps, counter, models.get("teacher_counter") if teacher == "live" else None, peak)
        out.update(method=method, params=raw, gradient_checkpointing=checkpointed, resident_mb=round(resident, 1), peak_mb=round(peak_mb, 1),
                   logits_chunk=student.logits_chunk)
        if name in ("sft", "plad") and not checkpointed and out["mfu"] < PROFILE_BELOW:
            out["profile_top_kernels"] = profile_steps(lambda: step(0, 2), ctx.device)
        return out
    finally:
        checkpointing(student.model, False)
        for lm in (student, models.get("teacher")):
            if lm is not None:
                lm.logits_chunk = default_chunk


def checkpointing(model, on: bool) -> None:
    """Gradient (activation) checkpointing on or off, by the name this transformers version uses."""
    if on:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # 5.24's name; 5.17 knows only gradient_checkpointing_enable
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


def throughput_numbers(seconds: float, steps: int, counter: TokenCounter, teacher: TokenCounter | None, peak: float) -> dict:
    exact, plain = counter.flops()
    t_exact, t_plain = teacher.flops() if teacher else (0.0, 0.0)
    # A teacher only runs forward passes (no grad), which its counter already weights by 2.
    c = counter.counts
    return {"timed_steps": steps, "timed_s": round(seconds, 4), "steps_per_s": round(steps / seconds, 4),
            "train_tokens": c["body_grad"], "student_forward_only_tokens": c["body_nograd"],
            "teacher_tokens": teacher.counts["body_nograd"] if teacher else 0,
            "tokens_per_s": round(c["body_grad"] / seconds, 1),
            "model_tflops_per_s": round((exact + t_exact) / seconds / 1e12, 3),
            "mfu": round((exact + t_exact) / seconds / peak, 6), "mfu_6N": round((plain + t_plain) / seconds / peak, 6)}


def topk_cache(rows: list[dict], params, models: dict, ctx: Context):
    """The teacher's top-k of `rows`, cached once before the timed steps (as the pipeline does before training): its TopkSignal."""
    from prefdistill.signal.topk_cache import build_topk_cache

    return build_topk_cache(models["teacher"], rows, params.k, ctx.tmp / f"topk_{params.k}.bin", tokenizer=models["student"].tokenizer,
                     teacher_id="random-teacher", temperature=params.temperature, dtype=params.topk_dtype)


def part_throughput(ctx: Context) -> dict:
    s = ctx.size
    peak = peak_matmul(s["matmul"], s["matmul_dtype"], ctx.device)
    student = random_lm(s["student"], ctx.device, s["dtype"], "random-student")
    models = {"student": student, "counter": TokenCounter(student.model)}
    rows, failed = {}, []
    for name in THROUGHPUT:
        if THROUGHPUT[name][3] and "teacher" not in models:  # built once, when the first method needs it
            models["teacher"] = random_lm(s["teacher"], ctx.device, s["dtype"], "random-teacher")
            models["teacher"].model.eval().requires_grad_(False)  # as LocalLM.load leaves a model it does not train
            models["teacher_counter"] = TokenCounter(models["teacher"].model)
        for checkpointed in (False, True):
            key = f"{name}{'+gc' if checkpointed else ''}"
            if ctx.out_of_time(f"throughput:{key}"):
                rows[key] = {"status": "skipped: time budget"}
                continue
            try:
                rows[key] = {"status": "ok", **throughput_row(name, ctx, models, peak["flops_per_s"], checkpointed)}
            except Exception as e:  # one row's failure keeps the other rows' numbers
                rows[key] = {"status": "error", "error": error_tail(e), "gradient_checkpointing": checkpointed}
                failed.append(key)
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    rows.update(whole_batch_rows(ctx, models, peak["flops_per_s"], rows))
    size = lambda lm: sum(p.numel() for p in lm.model.parameters())  # noqa: E731
    return {"peak_matmul": peak, "dtype": s["dtype"], "optimizer": "AdamW on the weights' dtype (no fp32 master copy)",
            "attention": student.model.config._attn_implementation,
            "student": {**s["student"], "parameters": size(student)},
            "teacher": {**s["teacher"], "parameters": size(models["teacher"])} if "teacher" in models else None,
            "rows_per_step": s["batch"], "prompt_tokens": s["prompt"], "completion_tokens": s["completion"],
            "tokens": "tokens_per_s counts the token positions the student trains on (forward + backward): PLaD and DPKD run "
                      "each prompt once for both completions (B·P + 2B·C), except under gradient checkpointing, where each "
                      "completion runs after its own copy of the prompt (2B·(P + C)); GKD's are its P + sampled tokens",
            "timed": "run_steps: the method's loss, backward, clip, AdamW, scheduler, zero_grad, loss.item(); after warm-up steps",
            "flops": "mfu: 6 FLOPs per weight per trained token position (2 per forward-only one: the teacher, GKD's sampling), "
                     "the output layer counted only at the positions it scores; mfu_6N: the plain 6·N·tokens (+2·N·forward "
                     "tokens) with N = all weights but the input embedding, at every position; attention's own FLOPs not counted",
            "rows": rows, "status": "failed" if failed else "ok", "failed": failed}


def whole_batch_rows(ctx: Context, models: dict, peak: float, rows: dict) -> dict:
    """WHOLE_BATCH's rows again at logits_chunk 0, each with the memory model's prediction of the difference."""
    s, out = ctx.size, {}
    for name in WHOLE_BATCH:
        key = f"{name}+chunk0"
        if ctx.out_of_time(f"throughput:{key}") or rows.get(name, {}).get("status") != "ok":
            out[key] = {"status": "skipped: time budget or no chunked row to compare"}
            continue
        try:
            row = throughput_row(name, ctx, models, peak, False, chunk=0)
            model = predicted_logits_mb(name, s["batch"] * s["completion"], s["student"]["vocab_size"], rows[name]["logits_chunk"])
            out[key] = {"status": "ok", **row, "memory_model": model,
                        "measured_saving_mb": round(row["peak_mb"] - rows[name]["peak_mb"], 1)}
        except Exception as e:  # the other rows' numbers stay
            out[key] = {"status": "error", "error": error_tail(e)}
    return out


def print_throughput(t: dict) -> None:
    if "rows" not in t:
        return
    print(f"throughput ({t['dtype']}, measured matmul peak {t['peak_matmul']['tflops']} TFLOP/s):")
    print(f"  {'row':<10}{'tokens/s':>12}{'peak MB':>10}{'MFU':>8}{'MFU 6N':>8}")
    for key, row in t["rows"].items():
        if row["status"] != "ok":
            print(f"  {key:<10} {row['status']}: {(row.get('error') or [''])[-1][:100]}")
            continue
        print(f"  {key:<10}{row['tokens_per_s']:>12.1f}{row['peak_mb']:>10.0f}{row['mfu']:>8.1%}{row['mfu_6N']:>8.1%}")
