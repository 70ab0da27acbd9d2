"""The pipeline's stages, each a small function of the run's artifacts that returns False when its output already exists.

    STAGE_FUNCTIONS["pairs"](art)      # what `Pipeline.run(["pairs"])` calls on its `Artifacts`, timed, in pipeline order

reward   train the judges (the training judge and the held-out grader) on the task's references
sft      supervised fine-tuning of teacher and student on the supervised half, each keeping its best evaluation
pairs    teacher and student samples on the distillation half, and the pairs; only when a method consumes pairs
distill  train the SFT student with the configured method
eval     every row's test generations, graded by the evaluation judge (and the training judge)
"""
from __future__ import annotations

from dataclasses import asdict

from prefdistill import judges
from prefdistill.config.schema import resolved_eval_judge, training_lora
from prefdistill.data.pairs import attach_scores, build_pairs, record_failures, relabel
from prefdistill.data.sampling import SampleSet
from prefdistill.evaluation import grading as evaluation
from prefdistill.evaluation.metrics import resampled
from prefdistill.io import Example, group_of, is_main_process, text_key, wait_for_everyone, write_json, write_jsonl
from prefdistill.methods import resolve_method, warmup_method
from prefdistill.models.hf import pick_device
from prefdistill.progress import stage_bar
from prefdistill.run.artifacts import Artifacts
from prefdistill.run.folder import HELDOUT
from prefdistill.run.train_job import train_job
from prefdistill.training.best_checkpoint import INITIAL, BestCheckpoint, log_fields, require_rule
from prefdistill.training.job import TrainJob
from prefdistill.training.loop import mean_loss, total_steps, train


def stage_reward(art: Artifacts) -> bool:
    """Train prefdistill's own reward models on the task's references: the training judge and, on the other
    half of the documents, the held-out judge that grades (eval_judge.kind heldout)."""
    cfg, folder = art.cfg, art.folder
    if cfg.judge.kind != "trained":
        print("[prefdistill] reward: judge.kind is not 'trained'; nothing to train", flush=True)
        return False
    heldout = resolved_eval_judge(cfg) == "heldout"
    seeds = {"training": cfg.seed, **({HELDOUT: cfg.seed + cfg.eval_judge.seed_offset} if heldout else {})}
    if judges.judges_current(folder, cfg.reward, seeds):  # trained, and with this recipe: a changed one retrains
        return False
    s, device = art.splits, str(pick_device("auto"))
    generated = initial_student_answers(art, s["sft"] + s["distill"] + s["validation"])
    with stage_bar("reward", total=1, unit="stage"):
        if heldout:
            judges.train_judges(s["sft"] + s["distill"], s["validation"], cfg.reward, folder, seed=cfg.seed,
                                heldout_seed=seeds[HELDOUT], device=device, generated=generated)
        else:
            judges.train_reward_model(s["sft"] + s["distill"], s["validation"], cfg.reward, folder.judge_dir(), cfg.seed,
                                      device=device, generated=generated)
    return True


def initial_student_answers(art: Artifacts, examples: list[Example]) -> dict[str, str] | None:
    """The untrained student's answers (eval.sampling, as its test row) to the reward data's prompts, by text_key(prompt):
    the "student_init" negatives (RUN/samples/student_init); None when reward.negatives does not list them."""
    if "student_init" not in art.cfg.reward.negatives:
        return None
    unique = list({text_key(e.prompt): e for e in examples}.values())  # one answer per prompt (multi-reference rows)
    result = art.sample("student", None, unique, art.cfg.eval.sampling, art.folder.samples("student_init"),
                        seed=art.cfg.seed, desc="reward negatives: initial student")
    result.require_all("the initial student's answers (reward.negatives: student_init)")
    return {text_key(e.prompt): result.samples[e.id][0] for e in unique}


def stage_sft(art: Artifacts) -> bool:
    """Supervised fine-tuning of teacher and student on the supervised half, each keeping its best evaluation's weights
    (`sft.select`; prefdistill.training.best_checkpoint)."""
    cfg, folder, selection = art.cfg, art.folder, art.sft_selection()
    roles = [r for r in ("teacher", "student") if getattr(cfg.sft, r).enabled]
    for role in (r for r in roles if folder.is_done(f"{r}_sft")):
        require_rule(folder.checkpoint(f"{role}_sft"), selection)
    todo = [r for r in roles if not folder.is_done(f"{r}_sft")]
    if not todo:
        return False
    rows = [{"prompt": e.prompt, "target": e.target} for e in art.splits["sft"]]
    val = [{"prompt": e.prompt, "target": e.target} for e in art.splits["validation"]]
    with stage_bar("sft", total=len(todo), unit="model") as progress:
        for role in todo:
            train_sft(art, role, rows, val, selection)
            progress.update()
    return True


def train_sft(art: Artifacts, role: str, rows: list[dict], val: list[dict], selection) -> None:
    """One model's SFT into RUN/checkpoints/ROLE_sft.last, then its kept step installed as ROLE_sft."""
    cfg, spec, train_cfg = art.cfg, warmup_method().spec, getattr(art.cfg.sft, role)
    keeper = BestCheckpoint(art.folder.checkpoint(f"{role}_sft"), selection, total_steps(train_cfg, len(rows)))
    lm = art.load(role, for_training=True)
    log = train(lm, spec, spec.params_cls(), rows, train_cfg, training_lora(getattr(cfg, role), train_cfg),
                out_dir=keeper.last_dir, parent=None, seed=cfg.seed, desc=f"sft {role}",
                on_step=validation_hook(keeper, lm, spec, val, train_cfg, selection.score))
    del lm
    choice = keeper.install(log)
    if is_main_process():
        print(f"[prefdistill] sft {role}: kept step {choice.step} of {choice.budget} "
              f"({choice.criterion}, {len(choice.curve)} evaluations)", flush=True)


def validation_hook(keeper: BestCheckpoint, lm, spec, val: list[dict], train_cfg, score=None):
    """Evaluate on the validation split every `eval_every` steps and at the last one: the SFT loss (val_loss) and, when
    given, `score(lm)` (the bench's validation win rate and ROUGE-L); the untrained model's loss on step 1
    (`val_loss_initial`). Each evaluation goes to `keeper`. None when eval_every is unset or there is no validation split."""
    if not train_cfg.eval_every or not val:
        return None
    params = spec.params_cls()
    initial = mean_loss(lm, spec, params, val, train_cfg.batch_size)

    def hook(step, lm, snapshot):
        out = {INITIAL: initial} if step == 1 else {}
        if step % train_cfg.eval_every == 0 or step == keeper.budget:
            val_scores = {"loss": mean_loss(lm, spec, params, val, train_cfg.batch_size), **(score(lm) if score else {})}
            keeper.consider(step, val_scores, snapshot)
            out.update(log_fields(val_scores))
        return out
    return hook


def stage_pairs(art: Artifacts) -> bool:
    """Sample teacher and student on the distillation half; write the pairs (only when a method reads them)."""
    cfg, folder = art.cfg, art.folder
    if folder.pairs.is_file():
        return False
    if "pairs" not in art.consumed():
        print(f"[prefdistill] pairs: no configured method reads pairs ({', '.join(m.name for m in art.methods)}); "
              "nothing sampled", flush=True)
        return False
    examples = art.splits["distill"]
    # Independent sampling streams per role (a model distilled into itself must not echo its own samples).
    streams = {"teacher": (cfg.pairs.teacher_sampling, cfg.seed), "student": (cfg.pairs.student_sampling, cfg.seed + 104_729)}
    sampled = {}
    with stage_bar("pairs", total=len(streams), unit="model") as progress:
        for role, (sampling, seed) in streams.items():
            sampled[role] = art.sample(role, art.sft_checkpoint(role), examples, sampling, folder.samples(role), seed=seed,
                                        desc=f"sample {role}")
            progress.update()
    if is_main_process():  # every process sampled its share; one writes the pairs
        write_pairs(art, examples, sampled)
    wait_for_everyone()
    return True


def write_pairs(art: Artifacts, examples: list[Example], sampled: dict[str, SampleSet]) -> None:
    cfg, folder = art.cfg, art.folder
    failed = record_failures({role: r.failures for role, r in sampled.items()}, len(examples),
                             folder.pairs_file("failures.jsonl"), cfg.pairs.max_failed_fraction)
    answered = [e for e in examples if all(e.id in s.samples for s in sampled.values())]
    meta = {"teacher_model": cfg.teacher.name_or_path, "student_model": cfg.student.name_or_path,
            "teacher_sampling": asdict(cfg.pairs.teacher_sampling), "student_sampling": asdict(cfg.pairs.student_sampling)}
    pairs, skipped = build_pairs(answered, sampled["teacher"].samples, sampled["student"].samples, meta)
    if not pairs:
        raise ValueError(f"no usable pairs: skipped {skipped}; check the sampling settings")
    needs_judge = cfg.pairs.relabel_fraction > 0 or cfg.pairs.score == "judge"
    judge = art.training_judge() if needs_judge else None
    swaps = relabel(pairs, judge, cfg.pairs.relabel_fraction, cfg.seed)
    attach_scores(pairs, cfg.pairs.score, judge)
    write_json(folder.pairs_file("summary.json"), {"n": len(pairs), "skipped_empty": skipped["empty"],
                                                   "skipped_identical": skipped["identical"], "failed_prompts": failed,
                                                   "swapped": swaps, "relabelled": sum(p["relabelled"] for p in pairs)})
    write_jsonl(folder.pairs, pairs)


def stage_distill(art: Artifacts) -> bool:
    """Train the SFT student with the configured method."""
    out = art.folder.checkpoint("student_distill")
    if art.folder.is_done("student_distill"):
        return False
    method = resolve_method(art.cfg)
    with stage_bar("distill", total=1, unit="run") as progress:
        train_job(TrainJob(method, art.training_data(method), art.cfg.distill.train, out, seed=art.cfg.seed), art)
        progress.update()
    return True


def stage_eval(art: Artifacts) -> bool:
    """Generate on the test split with every row's model; judge and score (eval/rows.json)."""
    cfg, folder = art.cfg, art.folder
    if folder.eval_file("rows.json").is_file():
        return False
    generations = {}
    with stage_bar("eval", total=len(cfg.eval.rows) + 1, unit="step") as progress:
        for row in cfg.eval.rows:
            generations[row] = art.row_generations(row)
            progress.update()
        if is_main_process():  # every process generated its share of each row; one judges and writes
            grade_and_write(art, generations)
        progress.update()
    wait_for_everyone()
    return True


def grade_and_write(art: Artifacts, generations: dict[str, list[str]]) -> None:
    cfg, folder, test = art.cfg, art.folder, art.splits["test"]
    prompts, refs = [e.prompt for e in test], [e.target for e in test]
    scores = evaluation.score_all(art.graders(), prompts, refs, generations)
    write_json(folder.eval_file("judge_scores.json"), scores["eval"])
    if "training" in scores:
        write_json(folder.eval_file("training_judge_scores.json"), scores["training"])
    labels = {row: art.row_label(row) for row in generations}
    groups = [group_of(e) for e in test]  # every interval resamples whole groups (a paper's prompts together)
    opts = dict(n_boot=cfg.eval.n_bootstrap, seed=cfg.seed, groups=groups)
    result = {"rows": evaluation.summarize_rows(generations, refs, scores, labels, length_edges=cfg.eval.length_buckets, **opts),
              "resampled": resampled(len(test), groups)}
    write_jsonl(folder.eval_file("generations.jsonl"),
                [{"id": e.id, "prompt": e.prompt, "reference": e.target, **{r: generations[r][i] for r in generations}}
                 for i, e in enumerate(test)])
    if "student_distill" in generations and "student_sft" in generations:
        result.update(evaluation.compare("student_distill", "student_sft", generations, refs, scores, **opts))
    write_json(folder.eval_file("rows.json"), result)


STAGE_FUNCTIONS = {"reward": stage_reward, "sft": stage_sft, "pairs": stage_pairs, "distill": stage_distill, "eval": stage_eval}
