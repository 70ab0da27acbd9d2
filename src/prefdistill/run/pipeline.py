"""The pipeline: the stages of one run in order, over its artifacts (`prefdistill.run.artifacts`), and its metrics.

    from prefdistill import Pipeline, load_config
    pipe = Pipeline(load_config("my.yaml", ["name=try1"]))
    pipe.run(["reward", "sft", "pairs"])     # any subset, in pipeline order (the stages: prefdistill.run.stages)
    metrics = pipe.run(["distill", "eval"])
    pipe.artifacts.splits["test"]            # what the stages made, read back

Each stage writes its outputs into the run folder and is skipped when they already
exist, so re-running after a crash or with more stages reuses everything done. What the
data stage computes follows what the configured methods consume (`methods`: the run's
distillation method, or a bench's entries).
"""
from __future__ import annotations

from prefdistill.config.schema import STAGES, RunConfig, to_dict
from prefdistill.errors import ConfigError
from prefdistill.io import is_main_process, n_processes, read_json, read_jsonl, write_json
from prefdistill.reporting import run_report as report
from prefdistill.run.artifacts import Artifacts
from prefdistill.run.stages import STAGE_FUNCTIONS
from prefdistill.training.best_checkpoint import Selection
from prefdistill.training.loop import seed_everything

# Stages that run under `accelerate launch` (many processes); the others run in one.
DISTRIBUTED_STAGES = ("sft", "pairs", "distill", "eval")  # the reward stage is small: run it plainly


class Pipeline:
    def __init__(self, cfg: RunConfig, *, allow_config_change: bool = False, methods: list | None = None,
                 sft_selection: Selection | None = None):
        """`methods`: the `ResolvedMethod` of every method that will train here (default: cfg.distill's); `sft_selection`: how
        the SFT stage keeps its step under sft.select auto (default: the lowest validation loss; the bench gives its own)."""
        self.cfg = cfg
        self.artifacts = Artifacts(cfg, methods=methods, sft_selection=sft_selection)
        self.folder = self.artifacts.folder
        self.run_dir = cfg.run_dir
        self.folder.check_config(to_dict(cfg), allow_change=allow_config_change)

    def run(self, stages: list[str] | None = None) -> dict:
        """Run `stages` (default: the configured ones) in pipeline order; returns metrics (if any)."""
        wanted = list(stages or self.cfg.stages)
        for s in wanted:
            if s not in STAGES:
                raise ConfigError(f"unknown stage {s!r}; choose from {list(STAGES)}")
            if n_processes() > 1 and s not in DISTRIBUTED_STAGES:
                raise ConfigError(f"stage {s!r} runs in one process; under accelerate launch ({n_processes()} processes) "
                                  f"run only --stages {','.join(DISTRIBUTED_STAGES)} (see docs/distributed.md)")
        for stage in STAGES:
            if stage in wanted:
                print(f"[prefdistill] stage {stage}", flush=True)
                self.folder.timed(stage, lambda: STAGE_FUNCTIONS[stage](self.artifacts))
        if self.folder.eval_file("rows.json").is_file() and is_main_process():
            self.finalize(show="eval" in wanted)
        return self.results()

    def finalize(self, show: bool = True) -> dict:
        """Gather metrics.json (with every stage's timing) and render report.md."""
        metrics = self.gather(read_json(self.folder.eval_file("rows.json")))
        write_json(self.folder.metrics, metrics)
        report.write_report(self.run_dir, metrics)
        if show:
            print(report.console_table(metrics), flush=True)
            print(report.verdict(metrics), flush=True)
        return metrics

    def results(self) -> dict:
        return read_json(self.folder.metrics) if self.folder.metrics.is_file() else {}

    def gather(self, evaluated: dict) -> dict:
        cfg, folder, art = self.cfg, self.folder, self.artifacts
        metrics = {"task": cfg.data.source, "teacher": cfg.teacher.name_or_path, "student": cfg.student.name_or_path,
                   "method": cfg.distill.method, "n_test": len(art.splits["test"]), **evaluated}
        metrics["judges"] = art.judges_info()
        metrics["judge"] = metrics["judges"]["eval"]  # the grader (older readers look here)
        training = {}
        for name in ("teacher_sft", "student_sft", "student_distill"):
            log = folder.train_log(name)
            if log.is_file():
                training["distill" if name == "student_distill" else f"sft_{name.split('_')[0]}"] = read_jsonl(log)
        metrics["training"] = training
        metrics["sft"] = art.sft_choices()
        if folder.pairs_file("summary.json").is_file():
            metrics["pairs"] = read_json(folder.pairs_file("summary.json"))
        timings = folder.timings()
        metrics["timings_s"] = {**timings, "total": round(sum(timings.values()), 1)}
        return metrics


def run_stages(cfg: RunConfig, stages: list[str] | None = None, **kwargs) -> dict:
    seed_everything(cfg.seed)
    return Pipeline(cfg, **kwargs).run(stages)
