"""prefdistill: distil large language models with preferences.

    import prefdistill as pd
    cfg = pd.load_config("my.yaml", ["name=try1", "distill.params.beta=0.5"])
    metrics = pd.Pipeline(cfg).run()          # or .run(["sft", "pairs"])
    print(metrics["rows"]["student_distill"]["win_rate"])
    cfg, bench = pd.load_bench_config("bench.yaml")
    results = pd.Bench(cfg, bench).run()      # every method in the bench section, one budget
"""
from prefdistill.config.schema import RunConfig
from prefdistill.errors import ConfigError

__version__ = "0.1.0"
_LAZY = {"Pipeline": "prefdistill.run.pipeline", "run_stages": "prefdistill.run.pipeline", "Bench": "prefdistill.bench.runner",
         "load_config": "prefdistill.config.checks", "load_bench_config": "prefdistill.config.checks"}


def __getattr__(name):  # heavy imports (torch, transformers) only when used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["Bench", "ConfigError", "Pipeline", "RunConfig", "load_bench_config", "load_config", "run_stages"]
