"""The real `prefdistill run` under `accelerate launch` (2 CPU processes, gloo) and under SIGKILL.

    2 processes == 1 process: same global batch, same per-step losses and final weights, up to
        the order of float additions (the gradient all-reduce adds the two halves' gradients,
        one process sums over all rows in its backward), so within LOSS_TOL / WEIGHT_TOL, not bitwise.
    crash == no crash: a run killed with SIGKILL after a state save and run again ends on
        bitwise the same weights (GKD: on-policy samples and LoRA dropout draw from the RNG).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from prefdistill.cli import main
from prefdistill.config.checks import load_config
from prefdistill.io import read_jsonl
from prefdistill.models.tiny import tiny_config
from prefdistill.run.pipeline import Pipeline

# Absolute. Losses differ by float rounding only (~1e-7). Weights a little more: Adam divides by
# sqrt(v), so for an entry whose gradient is near zero the rounding difference of the gradient
# becomes a visible difference of its update (measured up to ~1.5e-5, for weights that moved ~2.5e-2).
LOSS_TOL, WEIGHT_TOL = 1e-5, 1e-4
DRIVER = str(Path(__file__).parents[1] / "distributed_driver.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


@pytest.fixture(scope="module")
def prepared(tiny_assets, tmp_path_factory):
    """A run folder holding the splits and the pairs (no SFT: the base student is distilled)."""
    cfg = tiny_config(tiny_assets, tmp_path_factory.mktemp("dist"), name="prepared")
    cfg["sft"] = {"teacher": {"enabled": False}, "student": {"enabled": False}}
    for role in ("teacher", "student"):
        cfg[role]["device"] = "cpu"  # also on a machine with a GPU: gloo on 2 CPU processes
    cfg["distill"]["train"] = {"steps": 4, "batch_size": 4, "lr": 1e-2, "save_every": 1, "log_every": 1}
    Pipeline(load_config(cfg)).run(["pairs"])
    return cfg


def _copy(cfg: dict, name: str, **changes) -> tuple:
    """The prepared run folder copied under `name`, with its config changed; (config path, run folder)."""
    new = yaml.safe_load(yaml.safe_dump({**cfg, "name": name}))
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        node = new
        for p in path:
            node = node.setdefault(p, {})
        node[key] = value
    src, run = load_config(cfg).run_dir, load_config(new).run_dir
    shutil.copytree(src, run)
    (run / "config.yaml").unlink()  # the new configuration is written on the first run
    path = run.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(new))
    return path, run


def _free_port() -> int:
    with socket.socket() as s:  # the machine is shared: never the default 29500
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: list[str], processes: int) -> list[str]:
    """The command running `script` (a module or file and its arguments) in `processes` processes."""
    if processes == 1:
        return [sys.executable, *script]
    # --multi_gpu is the launcher that starts N processes (torchrun); with the models on the CPU,
    # accelerate sets up gloo. (`--cpu --num_processes 2` starts one process unless given an MPI hostfile.)
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), *script]


def _distill_in_process(config) -> None:
    with _one_thread():
        assert main(["run", str(config), "--stages", "distill", "--allow-config-change"]) == 0


@contextmanager
def _one_thread():
    """Intra-op threads as in the subprocesses (OMP_NUM_THREADS=1): CPU kernels then add up in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _weights(run) -> dict[str, torch.Tensor]:
    folder = run / "checkpoints" / "student_distill"
    return load_file(str(folder / ("adapter_model.safetensors" if (folder / "adapter_model.safetensors").is_file()
                                   else "model.safetensors")))


def _log(run) -> list[dict]:
    return read_jsonl(run / "checkpoints" / "student_distill" / "train_log.jsonl")


@pytest.fixture(scope="module")
def runs(prepared):
    """{lora: (1-process run, 2-process run)}: PLaD with LoRA and full fine-tuning; both 2-process runs in one launch."""
    out, launched = {}, []
    for lora in (True, False):
        # LoRA dropout off: each process draws its own dropout masks, one process draws others.
        changes = {"student__lora": {"enabled": lora, "dropout": 0.0}}
        one_cfg, one = _copy(prepared, f"one-{lora}", **changes)
        two_cfg, two = _copy(prepared, f"two-{lora}", **changes)
        _distill_in_process(one_cfg)
        launched.append(str(two_cfg))
        out[lora] = (one, two)
    done = subprocess.run(_launch([DRIVER, *launched], 2), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_two_processes_match_one(prepared, runs, lora):
    one, two = runs[lora]
    losses1, losses2 = [e["loss"] for e in _log(one)], [e["loss"] for e in _log(two)]
    assert len(losses1) == len(losses2) == 4
    loss_gap = max(abs(a - b) for a, b in zip(losses1, losses2))
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    weight_gap = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    moved = max((w1[k] - w0).abs().max().item() for k, w0 in _start_weights(prepared, lora, w1).items())
    print(f"2 vs 1 process ({'LoRA' if lora else 'full'}): max |loss diff| {loss_gap:.2e}, max |weight diff| {weight_gap:.2e}, "
          f"weights moved up to {moved:.2e}")
    assert loss_gap < LOSS_TOL and weight_gap < WEIGHT_TOL
    assert moved > 100 * WEIGHT_TOL  # the comparison is not between two untrained models
    assert json.loads((two / "checkpoints" / "student_distill" / "prefdistill_checkpoint.json").read_text())["processes"] == 2


def _start_weights(cfg, lora: bool, trained: dict) -> dict[str, torch.Tensor]:
    """The trained tensors before training (LoRA B starts at zero), to show the weights moved."""
    if lora:
        return {k: torch.zeros_like(v) for k, v in trained.items() if "lora_B" in k}
    start = load_file(str(cfg["student"]["name_or_path"] + "/model.safetensors"))
    return {k: start[k] for k in trained if k in start}


def test_sigkill_mid_training_resumes_bitwise(prepared):
    """GKD (on-policy samples for half the steps, LoRA dropout): killed after a state save, run again."""
    changes = {"distill__method": "gkd", "distill__params": {"max_new_tokens": 6},
               "distill__train": {**prepared["distill"]["train"], "steps": 8, "batch_size": 2}}
    clean_cfg, clean = _copy(prepared, "clean", **changes)
    crash_cfg, crashed = _copy(prepared, "crashed", **changes)
    _distill_in_process(clean_cfg)
    state = crashed / "checkpoints" / "student_distill.state.pt"
    run = ["-m", "prefdistill", "run", str(crash_cfg), "--stages", "distill", "--allow-config-change"]
    proc = subprocess.Popen(_launch(run, 1), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_after = _kill_after_a_state_save(proc, state, at_least_step=3)
    _distill_in_process(crash_cfg)
    a, b = _weights(clean), _weights(crashed)
    print(f"SIGKILL after the state of step {killed_after}/8 was saved; resumed weights equal: "
          f"{all(torch.equal(a[k], b[k]) for k in a)}")
    assert killed_after < 8 and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), f"killed after step {killed_after}"
    log = _log(crashed)
    assert [e["loss"] for e in log] == [e["loss"] for e in _log(clean)]
    assert {e["on_policy"] for e in log} == {0.0, 1.0}  # both kinds of batch were drawn


def _kill_after_a_state_save(proc, state, at_least_step: int) -> int:
    """SIGKILL `proc` once its training state reaches `at_least_step`; returns the saved step."""
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file():
            step = torch.load(state, weights_only=False)["step"]  # renamed into place whole: never half-written
            if step >= at_least_step:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return step
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"training ended or stalled before a state save at step {at_least_step} (return code {proc.poll()})")


def test_process_shares_tile_the_global_batch():
    """W processes' contiguous shares, in rank order, are the 1-process micro-batch; and 1 process with
    (batch_size / W, grad_accum · W) sees the same micro-batches."""
    from prefdistill.config.schema import TrainConfig
    from prefdistill.training.loop import batch_indices

    cfg, small = TrainConfig(batch_size=4, grad_accum=2), TrainConfig(batch_size=2, grad_accum=4)
    for step in range(3):
        for micro in range(2):
            shares = [batch_indices(step, micro, cfg, 10, seed=1, rank=r, world=2) for r in range(2)]
            assert shares[0] + shares[1] == batch_indices(step, micro, cfg, 10, seed=1)
            assert shares == [batch_indices(step, 2 * micro + r, small, 10, seed=1) for r in range(2)]


def test_uneven_global_batch_is_refused():
    from prefdistill.training.loop import per_process_batch

    with pytest.raises(ValueError, match=r"train.batch_size=6 is the global batch .* divisible by the number of processes \(4\)"):
        per_process_batch(6, 4)


def test_pairs_and_eval_shard_prompts_across_two_processes(tiny_assets, tmp_path):
    """Under 2 processes each samples its share (index % 2) into its own journal; the union is every prompt once."""
    cfg = tiny_config(tiny_assets, tmp_path, name="sharded")
    cfg["sft"] = {"teacher": {"enabled": False}, "student": {"enabled": False}}
    for role in ("teacher", "student"):
        cfg[role]["device"] = "cpu"
    cfg["eval"]["rows"] = ["teacher", "student_init"]
    pipe = Pipeline(load_config(cfg))
    pipe.run(["reward"])  # the small reward stage runs in one process
    config = tmp_path / "sharded.yaml"
    config.write_text(yaml.safe_dump(cfg))
    driver = tmp_path / "cli.py"
    driver.write_text("import sys\nfrom prefdistill.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run(_launch([str(driver), "run", str(config), "--stages", "pairs,eval"], 2), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = pipe.run_dir
    for folder, examples in [(run / "samples" / "teacher", pipe.artifacts.splits["distill"]), (run / "samples" / "student", pipe.artifacts.splits["distill"]),
                             (run / "eval" / "samples" / "teacher", pipe.artifacts.splits["test"])]:
        shares = [[r["id"] for r in read_jsonl(folder / f"samples.rank{r}.jsonl")] for r in (0, 1)]
        assert not (folder / "samples.jsonl").exists()
        assert sorted(shares[0] + shares[1]) == sorted(e.id for e in examples)  # no gap, no duplicate
        assert set(shares[1]) == {e.id for i, e in enumerate(examples) if i % 2 == 1}
    pairs = read_jsonl(run / "pairs" / "pairs.jsonl")
    summary = json.loads((run / "pairs" / "summary.json").read_text())
    assert len({p["id"] for p in pairs}) == len(pairs) == len(pipe.artifacts.splits["distill"]) - summary["skipped_empty"] - summary["skipped_identical"]
    rows = json.loads((run / "eval" / "rows.json").read_text())["rows"]
    assert set(rows) == {"teacher", "student_init"}
