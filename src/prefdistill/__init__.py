"""prefdistill: distil large language models with preferences.

    import prefdistill as pd
    cfg = pd.load_config("my.yaml", ["name=try1", "distill.params.beta=0.5"])
    metrics = pd.Pipeline(cfg).run()          # or .run(["sft", "pairs"])
    print(metrics["rows"]["student_distill"]["win_rate"])
    results = pd.Bench(cfg).run()             # every method in cfg.bench, one budget
"""
from prefdistill.config import ConfigError, RunConfig, load_config

__version__ = "0.1.0"


def __getattr__(name):  # heavy imports (torch, transformers) only when used
    if name in ("Pipeline", "run_stages"):
        from prefdistill import pipeline

        return getattr(pipeline, name)
    if name == "Bench":
        from prefdistill.bench import Bench

        return Bench
    raise AttributeError(name)


__all__ = ["Bench", "ConfigError", "Pipeline", "RunConfig", "load_config", "run_stages"]
