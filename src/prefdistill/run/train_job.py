"""`train_job(job, artifacts)`: one method trained from the SFT student, for the distill stage and every bench job.

    method = resolve_method(cfg)
    result = train_job(TrainJob(method, art.training_data(method), cfg.distill.train, out, seed=0), art)   # -> TrainResult

What the method's loss gets besides the student comes from one provider per need it declares
(`PROVIDERS`): the teacher in the loop, the served teacher, the frozen reference, the oracle (the
job's own, else the run's; kind teacher scores with a teacher the job already holds), a state dict,
and the cached top-k the job's data carries. A finished job (its checkpoint done) is read back, not
retrained.
"""
from __future__ import annotations

import time
from typing import Callable

from prefdistill.config.schema import training_lora
from prefdistill.io import read_jsonl
from prefdistill.judges.oracles import build_oracle
from prefdistill.methods.registry import require_shared_vocabulary, teacher_for
from prefdistill.run.artifacts import Artifacts
from prefdistill.run.folder import LOG_FILE, checkpoint_done
from prefdistill.signal.served import recorded_teacher, require_topk_of_text
from prefdistill.training.job import TrainJob, TrainResult
from prefdistill.training.loop import total_steps, train


def served_teacher(art: Artifacts):
    """The teacher on its own backend (a server, a vLLM engine; hf loads it locally), never converted to transformers.

    A server whose echoed log-probs fail the correctness probe is refused now, with the
    probe's reason, before the student loads and any step is taken (`prefdistill.signal.served`).
    """
    teacher = art.load("teacher", art.sft_checkpoint("teacher"))
    require_topk_of_text(teacher)
    return teacher


# The weights' dtype of a teacher in the loop under each train.mixed_precision: the student's compute dtype.
MIXED_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def in_loop_teacher(art: Artifacts, job: TrainJob):
    """The teacher run at every step: in the dtype the student computes in (its weights cast at load under bf16 / fp16
    mixed precision, as configured otherwise); no autograd graph and no dropout (`LocalLM.teacher_states`), its logits
    chunked as the student's (`prefdistill.losses.chunked`)."""
    return art.load("teacher", art.sft_checkpoint("teacher"), in_loop=True, dtype=MIXED_DTYPES.get(job.train.mixed_precision))


def job_oracle(art: Artifacts, job: TrainJob, provided: dict):
    """The job's preference oracle (its own, else the run's `oracle`). Kind teacher scores with the teacher this job already
    holds (in the loop, or served), else loads it once for the job as it is served (no autograd, eval mode), refused
    now, before any step, when it cannot score text (a server whose echo fails the probe: with the probe's reason)."""
    def teacher():
        held = next((provided[role] for role in ("teacher", "served_teacher") if role in provided), None)
        return held if held is not None else art.scoring_teacher("oracle.kind: teacher", instead="oracle.kind judge or api")

    return build_oracle(job.oracle or art.cfg.oracle, art.training_judge, teacher)


# need -> what provides it, from the run's artifacts, the job and what the needs above it in this table were given
# (prefdistill.methods.registry.NEEDS)
PROVIDERS: dict[str, Callable[[Artifacts, TrainJob, dict], object]] = {
    "teacher": lambda art, job, provided: in_loop_teacher(art, job),
    "served_teacher": lambda art, job, provided: served_teacher(art),
    "teacher_topk": lambda art, job, provided: job.data.teacher_topk,
    "reference": lambda art, job, provided: art.load("student", art.sft_checkpoint("student"), in_loop=True),
    "oracle": job_oracle,
    "state": lambda art, job, provided: {},
}


def loss_extras(job: TrainJob, art: Artifacts) -> dict:
    """The loss's keyword arguments besides the student: one per need the method declares under its params."""
    extras: dict = {}
    for name, make in PROVIDERS.items():
        if name in job.method.needs:
            extras[name] = make(art, job, extras)
    if "served_teacher" in extras:  # a row it cannot give is listed beside the checkpoint, left out, and limited
        scored = total_steps(job.train, len(job.data.rows)) * job.train.batch_size * job.train.grad_accum
        d = art.cfg.distill
        extras["served_teacher"] = recorded_teacher(extras["served_teacher"], job.out, scored, retry_failed=d.signal_retry_failed,
                                                    max_failed_fraction=d.signal_max_failed_fraction)
    return extras


def train_job(job: TrainJob, art: Artifacts) -> TrainResult:
    """Train a copy of the SFT student on `job` into job.out; the teacher joins when the method needs it."""
    if checkpoint_done(job.out):
        return TrainResult(job.out, read_jsonl(job.out / LOG_FILE), 0.0)
    t0 = time.time()  # loading the models included: what the job costs
    parent = art.sft_checkpoint("student")
    extras = loss_extras(job, art)
    lm = art.load("student", parent, for_training=True)
    if "teacher" in extras:  # another tokenizer than the student's: aligned (prefdistill.models.alignment), or refused
        extras["teacher"] = teacher_for(job.spec, job.params, lm, extras["teacher"])
    if hasattr(extras.get("served_teacher"), "tokenizer"):  # a server has no tokenizer here: api_topk checks row by row
        require_shared_vocabulary(job.spec, lm, extras["served_teacher"])
    log = train(lm, job.spec, job.params, job.data.rows, job.train, training_lora(art.cfg.student, job.train), out_dir=job.out,
                parent=parent, seed=job.seed, desc=job.label, extras=extras, on_step=job.on_step)
    return TrainResult(job.out, log, time.time() - t0)
