"""The prefdistill command line.

    prefdistill demo                                  # PLaD vs SFT and SeqKD on real weights: a small bench, CPU
    prefdistill demo --tiny                           # every pipeline stage on tiny random models, ~1 min
    prefdistill run CONFIG.yaml key.sub=value ...     # your experiment
    prefdistill run CONFIG.yaml --stages sft,pairs    # some stages (others reuse the run folder)
    prefdistill config CONFIG.yaml key=value          # validate and print the resolved config
    prefdistill report RUNS/NAME                      # re-render report.md from metrics.json
    prefdistill export-pairs RUNS/NAME --format parquet
    prefdistill bench bench                           # SFT, SeqKD, PLaD, DPKD, one budget (bench_token, bench_winrate: the rest)
    prefdistill bench CONFIG.yaml bench.seeds=[0,1,2] # your bench
    prefdistill bench --tiny                          # the bench on tiny random models, ~2 min
    prefdistill bench CONFIG --plan                   # its jobs in order, with what each waits for (docs/distributed.md)
    prefdistill bench CONFIG --job KEY                # one of them (a Slurm array task runs this)
    prefdistill bench CONFIG --workers 2 --devices cuda:0,cuda:1   # all of them in local worker processes
    prefdistill methods                               # registered training methods
    prefdistill serve builtin:gemma3-270m --port 8000 # a GGUF behind an OpenAI-compatible API (llama-cpp-python)
    prefdistill lab bandit --seeds 5                  # Faster WIND's contextual bandit: exact and sampled WIND vs BOND, ~15 s
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import yaml

from prefdistill.config.checks import load_bench_config, load_config
from prefdistill.config.schema import STAGES, ConfigError, to_dict
from prefdistill.data.sampling import IncompleteSampling
from prefdistill.errors import TeacherGapError
from prefdistill.training.state import NonFiniteLossError


def packaged_config(name: str) -> Path:
    return Path(str(resources.files("prefdistill") / "configs" / f"{name}.yaml"))


def _stages(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def cmd_run(args) -> int:
    from prefdistill.run.pipeline import run_stages

    cfg = load_config(_config_source(args.config), args.overrides)
    run_stages(cfg, _stages(args.stages), allow_config_change=args.allow_config_change)
    print(f"[prefdistill] run folder: {cfg.run_dir}")
    return 0


def cmd_demo(args) -> int:
    """The demo: a small bench (demo.yaml) that checks the teacher gap, trains PLaD and SeqKD, and says what the numbers
    mean. --tiny: every pipeline stage on tiny random models instead (a smoke test of an installation, no comparison)."""
    t0 = time.time()
    if args.tiny:
        from prefdistill.models.tiny import make_tiny_assets, tiny_config
        from prefdistill.run.pipeline import run_stages

        root = Path(args.output_dir)
        cfg = load_config(tiny_config(make_tiny_assets(root / "_tiny_assets"), root, name="demo-tiny"), args.overrides)
        run_stages(cfg, allow_config_change=args.allow_config_change)
        report = cfg.run_dir / "report.md"
    else:
        from prefdistill.bench.runner import Bench
        from prefdistill.reporting.bench_verdict import verdict_lines

        cfg, bench = load_bench_config(packaged_config("demo"), [f"output_dir={args.output_dir}", *args.overrides])
        results = Bench(cfg, bench, allow_config_change=args.allow_config_change, config_name="demo").run()
        print("\n" + "\n".join(verdict_lines(results, "plad")), flush=True)
        report = cfg.run_dir / "bench" / bench.report / "report.md"
    print(f"[prefdistill] demo finished in {time.time() - t0:.0f} s; report: {report}")
    return 0


def _config_source(name: str) -> Path | str:
    """A config path, or the name of a packaged config ("demo", "bench", ...)."""
    path = Path(name)
    # A folder of that name (a run folder called "bench", say) does not hide the packaged config.
    if not path.is_file() and not path.suffix and packaged_config(name).is_file():
        return packaged_config(name)
    return name


def tiny_bench_config(output_dir: Path) -> dict:
    """Every registered distillation method on the tiny offline models, with small sweeps."""
    from prefdistill.methods import METHODS
    from prefdistill.methods.registry import family_methods, on_policy_methods
    from prefdistill.models.tiny import make_tiny_assets, tiny_config

    data = tiny_config(make_tiny_assets(output_dir / "_tiny_assets"), output_dir, name="bench-tiny")
    kd = family_methods("kd")
    short = {n: {"max_new_tokens": 6} for n in on_policy_methods() if n in kd}  # the KD baselines' student samples
    methods = [{"name": n, "method": n, "params": short.get(n, {})} for n in sorted(METHODS) if METHODS[n].family != "imitation"]
    data["bench"] = {"methods": methods, "seeds": [0, 1], "grid": {"lr": [1e-3, 3e-3]}, "checkpoints": [1], "data_shares": [0.5],
                     "data_share_methods": [family_methods("preference")[0], kd[0]], "relabel_shares": [1.0]}
    return data


def cmd_bench(args) -> int:
    from prefdistill.bench.runner import Bench

    if args.tiny:  # random tiny models have no teacher-student gap to check
        overrides = [args.config, *args.overrides] if args.config else args.overrides  # no config: the first is an override
        cfg, bench = load_bench_config(tiny_bench_config(Path(args.output_dir or "runs")), overrides)
        args.ignore_gap, name = True, "tiny"
    else:
        if not args.config:
            raise ConfigError("give a bench config (a YAML file, or 'bench' for the packaged one), or --tiny")
        extra = [f"output_dir={args.output_dir}"] if args.output_dir else []
        cfg, bench = load_bench_config(_config_source(args.config), [*extra, *args.overrides], quick=args.quick)
        name = Path(args.config).stem + ("_quick" if args.quick else "")
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    if sum(map(bool, (args.plan, args.job, args.workers or devices))) > 1:
        raise ConfigError("bench: --plan, --job and --workers/--devices are separate ways to run; give one")
    if args.workers or devices:
        from prefdistill.bench.workers import worker_devices

        worker_devices(args.workers or len(devices), devices)  # refused before anything runs
    t0 = time.time()
    runner = Bench(cfg, bench, allow_config_change=args.allow_config_change, ignore_gap=args.ignore_gap, config_name=name,
                   claim_expiry_s=args.claim_expiry)
    if args.plan or args.job:
        return _bench_units(runner, args)
    if args.workers or devices:
        from prefdistill.bench.units import JobsFailed, run_parallel

        try:
            run_parallel(runner, args.workers or len(devices), devices)
        except JobsFailed as e:
            print(f"prefdistill: error: {e}", file=sys.stderr)
            return 1
    else:
        runner.run()
    print(f"[prefdistill] bench finished in {time.time() - t0:.0f} s; report: {cfg.run_dir / 'bench' / bench.report / 'report.md'}")
    return 0


def _bench_units(runner, args) -> int:
    """--plan (every unit; --keys-only, --stage) or --job KEY."""
    from prefdistill.bench.plan import STAGES, describe
    from prefdistill.bench.units import bench_plan, item_done, run_key

    if args.job:
        run_key(runner, args.job)
        print(f"[prefdistill] bench unit {args.job}: done", flush=True)
        return 0
    wanted = {s.strip() for s in args.stage.split(",")} if args.stage else set(STAGES)
    if wanted - set(STAGES):
        raise ConfigError(f"--stage {args.stage!r}: choose from {', '.join(STAGES)} (comma-separated)")
    for item in bench_plan(runner):
        if item.stage not in wanted:
            continue
        if args.keys_only:
            if not item.pending:
                print(item.key)
        else:
            state = "pending" if item.pending else "done" if item_done(runner, item) else "to do"
            print(f"{state:<7} {describe(item)}")
    return 0


def cmd_config(args) -> int:
    cfg, bench = load_bench_config(_config_source(args.config), args.overrides)
    data = to_dict(cfg) if not bench.methods else {**to_dict(cfg), "bench": to_dict(bench)}
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def cmd_report(args) -> int:
    from prefdistill.io import read_json
    from prefdistill.reporting import run_report as report
    from prefdistill.run.folder import RunFolder

    run = RunFolder(Path(args.run_dir))
    metrics = read_json(run.metrics)
    path = report.write_report(run.root, metrics)
    print(report.console_table(metrics))
    print(f"[prefdistill] wrote {path}")
    return 0


def cmd_export_pairs(args) -> int:
    from prefdistill.data.pairs import load_pairs, pairs_dataset
    from prefdistill.run.folder import RunFolder

    run = RunFolder(Path(args.run_dir))
    ds = pairs_dataset(load_pairs(run.pairs))  # typed columns: bool, float64, sampling structs
    out = Path(args.out or run.pairs_file(f"pairs.{args.format}"))
    if args.format == "parquet":
        ds.to_parquet(str(out))
    elif args.format == "csv":
        ds.flatten().to_csv(str(out))  # CSV has no nesting: one column per setting, teacher_sampling.temperature ...
    elif args.format == "jsonl":
        ds.to_json(str(out), lines=True)
    else:
        ds.save_to_disk(str(out))
    print(f"[prefdistill] {len(ds)} pairs -> {out}")
    return 0


def cmd_methods(args) -> int:
    from prefdistill.config.schema import OracleConfig
    from prefdistill.config.typed import doc_of
    from prefdistill.methods import METHODS
    from prefdistill.methods.registry import family_methods

    for name, spec in sorted(METHODS.items()):
        vocab = "any (aligned)" if "teacher" in spec.needs else "any tokenizers"  # default params
        print(f"{name:10s} consumes={spec.consumes:8s} {vocab:15s} {spec.summary}")
    print(f"\nThe preference oracle of {', '.join(family_methods('win_rate'))} (oracle.kind, or a bench entry's oracle.kind): "
          f"{doc_of(OracleConfig, 'kind')}")
    return 0


def cmd_lab_bandit(args) -> int:
    from prefdistill.lab.bandit import BanditConfig
    from prefdistill.lab.bandit_report import run_and_report

    given = {k: getattr(args, k) for k in ("seeds", "contexts", "actions", "beta", "eta", "iterations", "samples_per_iteration")}
    kinds = {} if args.kind == "all" else {"kinds": (args.kind,)}
    t0 = time.time()
    paths = run_and_report(BanditConfig(**{k: v for k, v in given.items() if v is not None}, **kinds), Path(args.output_dir))
    print(f"[prefdistill] lab bandit finished in {time.time() - t0:.0f} s; report: {paths['report']}")
    return 0


def cmd_serve(args) -> int:
    """Serve a GGUF model (a file or builtin:NAME) with llama-cpp-python's OpenAI-compatible server."""
    import importlib.util

    from prefdistill.models.assets import builtin_gguf

    if importlib.util.find_spec("llama_cpp") is None:
        raise FileNotFoundError("prefdistill serve needs llama-cpp-python's server, built portably: bash scripts/setup.sh --server")
    model = builtin_gguf(args.model[len("builtin:"):]) if args.model.startswith("builtin:") else Path(args.model)
    if not model.is_file() or model.suffix != ".gguf":
        raise FileNotFoundError(f"{args.model}: not a .gguf file or a builtin model")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", args.host, "--port", str(args.port),
           "--n_ctx", str(args.n_ctx), "--model_alias", args.alias or Path(args.model).stem.replace("builtin:", "")]
    print(f"[prefdistill] serving {model} at http://{args.host}:{args.port}/v1 as {cmd[-1]!r}", flush=True)
    return supervise(cmd)


def supervise(cmd: list[str]) -> int:
    """Run the server in the foreground, echoing its output; if it dies on its own, say why and how to fix it."""
    import collections
    import signal
    import subprocess

    from prefdistill.models.llama_server import REINSTALL_HINT, describe_exit

    tail: collections.deque[str] = collections.deque(maxlen=25)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    stopped = []  # a SIGTERM to us is passed on, and the server's exit is then expected
    previous = signal.signal(signal.SIGTERM, lambda *_: (stopped.append(True), proc.terminate()))
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip("\n"))
        proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the child too (same process group): let it finish shutting down
        proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    if proc.returncode != 0 and not stopped:
        last = "\n".join(tail) or "(no output)"
        print(f"[prefdistill] the llama.cpp server exited unexpectedly with {describe_exit(proc.returncode)}. "
              f"Its last output:\n{last}\n[prefdistill] {REINSTALL_HINT}", file=sys.stderr, flush=True)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefdistill", description="Distil LLMs with preferences (PLaD and friends).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the pipeline stages of a config")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. distill.train.lr=5e-5")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--allow-config-change", action="store_true", help="reuse a run folder made with another config")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("demo", help="PLaD against SFT and SeqKD on real pretrained weights: a small bench with the teacher-gap "
                                   "check (CPU, 2 cores: see README)")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--tiny", action="store_true", help="tiny random models built offline: a one-minute smoke run")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--allow-config-change", action="store_true")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("bench", help="compare methods from one SFT student with one budget (Table 1, Figures 2-4, costs)")
    p.add_argument("config", nargs="?", help="a YAML file, or 'bench' for the packaged demo-task bench")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--tiny", action="store_true", help="tiny random models built offline: a smoke run of every method")
    p.add_argument("--quick", action="store_true", help="the same bench made small by the config's bench.quick overrides "
                                                         "(its own run folder NAME-quick)")
    p.add_argument("--ignore-gap", action="store_true", help="go on when the teacher is not clearly better than the SFT "
                                                              "student on validation (the results then show little)")
    p.add_argument("--output-dir", default=None, help="where the run folder goes (default: the config's output_dir)")
    p.add_argument("--allow-config-change", action="store_true")
    _add_bench_units(p)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("config", help="validate a config and print it resolved")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=cmd_config)

    p = sub.add_parser("report", help="re-render report.md and plots from a run's metrics.json")
    p.add_argument("run_dir")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("export-pairs", help="export a run's preference pairs")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["jsonl", "parquet", "csv", "hf"], default="parquet")
    p.add_argument("--out")
    p.set_defaults(fn=cmd_export_pairs)

    p = sub.add_parser("methods", help="list the registered training methods")
    p.set_defaults(fn=cmd_methods)

    p = sub.add_parser("serve", help="serve a GGUF model behind an OpenAI-compatible API (a teacher on loopback)")
    p.add_argument("model", help="a .gguf file or builtin:NAME")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--n-ctx", type=int, default=2048, help="context length")
    p.add_argument("--alias", help="the model name clients use (default: from the file or builtin name)")
    p.set_defaults(fn=cmd_serve)

    _add_lab(sub)
    return parser


def _add_bench_units(p) -> None:
    """The bench as standalone units (docs/distributed.md)."""
    p.add_argument("--plan", action="store_true", help="list the units (shared, grid jobs, selection, seed and figure jobs) "
                                                       "in order with what each waits for; runs nothing")
    p.add_argument("--keys-only", action="store_true", help="with --plan: only the keys known now, one a line")
    p.add_argument("--stage", help="with --plan: only these stages (comma-separated: shared, grid, selection, seeds, figure)")
    p.add_argument("--job", metavar="KEY", help="run one unit of the plan in this process, into the run folder")
    p.add_argument("--workers", type=int, help="run the plan in N local worker processes, then the report")
    p.add_argument("--devices", help="comma-separated devices, one worker each (cuda:0,cuda:1 or cpu)")
    from prefdistill.run.claims import DEFAULT_EXPIRY_S

    p.add_argument("--claim-expiry", type=float, default=DEFAULT_EXPIRY_S, metavar="S",
                   help=f"a job's claim untouched for S seconds is stale and taken over (default {DEFAULT_EXPIRY_S:g})")


def _add_lab(sub) -> None:
    p = sub.add_parser("lab", help="exactly solvable labs that check the methods' maths")
    lab = p.add_subparsers(dest="lab", required=True)
    p = lab.add_parser("bandit", help="Faster WIND's contextual bandit: exact update, WIND / SPPO / BOND / J-BOND from samples")
    for flag, kind, what in [("--seeds", int, "seeds (default 5)"), ("--contexts", int, "contexts C (default 4)"),
                             ("--actions", int, "actions A (default 8)"), ("--beta", float, "KL strength β (default 0.1)"),
                             ("--eta", float, "WIND step η (default 2; 0 < ηβ ≤ 1)"), ("--iterations", int, "iterations T (default 30)"),
                             ("--samples-per-iteration", int, "samples K per context per iteration, every method (default 12)")]:
        p.add_argument(flag, type=kind, help=what)
    p.add_argument("--kind", choices=["bt", "random", "cyclic", "all"], default="all", help="preference matrices (default all)")
    p.add_argument("--output-dir", default="runs/lab-bandit")
    p.set_defaults(fn=cmd_lab_bandit)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError, ValueError, IncompleteSampling, NonFiniteLossError) as e:
        print(f"prefdistill: error: {e}", file=sys.stderr)
        return 2
    except TeacherGapError as e:
        print(f"prefdistill: stopped: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
