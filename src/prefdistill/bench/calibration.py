"""The bench's calibration measure (PLaD's claim): one candidate set for every row, ranked by each row's likelihood.

    calibration.prepare(bench)                              # the shared unit: the candidates, graded; the base rows' scores
    wall_s = calibration.score_job(bench, job, step, ckpt)  # Bench.test: the tested weights score every candidate
    data = calibration.gather(bench, jobs, chosen)          # Scored.calibration (a records.Calibration, or None)
    summary = attach_calibration(base_rows, rows, scored, bench_cfg, opts)   # summarize: every row's "calibration"

For each test prompt the teacher and the SFT student (their evaluation rows) sample
`bench.calibration.teacher_samples` and `student_samples` candidates once, for every method;
empty and repeated samples are dropped, and the evaluation judge grades the rest once, with the
reference. Every row then scores every candidate by its length-normalised log-likelihood
ℓ(y) = log q(y|x) / |y| (forward passes only): the base rows in the shared unit, each tested
job from the weights it was tested with, before they are dropped. The numbers
(`prefdistill.evaluation.calibration`) are how ℓ orders the candidates against the judge:
pairwise ranking accuracy, Kendall's τ-b, and the judge's win rate of the candidate ℓ ranks
first (likelihood re-ranking); each row's, and its paired differences against the SFT student
and SeqKD, on the same candidates.

`bench` is the `Bench` runner (its cfg, bench section, artifacts, paths, graders and claims).
Files (paths: `BenchFolder`): RUN/bench/calibration/samples/ROW/ (resumable samples),
candidates.json (`records.CandidateSet`), ROW.json (a base row's `records.CandidateScores`) and
RUN/bench/runs/KEY/calibration_stepN.json (a tested job's). None is made twice.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from prefdistill.bench.records import Calibration, CandidateScores, CandidateSet, Scored
from prefdistill.config.eval_rows import BASE_ROWS
from prefdistill.config.schema import BenchConfig, RunConfig, SamplingConfig
from prefdistill.errors import ConfigError
from prefdistill.evaluation.calibration import (METRICS, SOURCE_METRICS, calibration_difference, calibration_summary,
                                                per_prompt)
from prefdistill.io import read_json, write_json

CLAIM = "calibration"  # the claim the candidates and the base rows' scores are made under
SOURCES = {"teacher": "teacher", "student": "student_sft"}  # who samples the candidates: source -> its evaluation row
SEED_OFFSETS = {"teacher": 7_919, "student": 15_401}  # sampling streams apart from the test generations' (cfg.seed)


# ----------------------------------------------------------------------------- the candidate set
def candidate_settings(cfg: RunConfig, bench_cfg: BenchConfig) -> dict:
    """What the candidate set depends on beyond the run folder (recorded in candidates.json)."""
    cal = bench_cfg.calibration
    return {"teacher_samples": cal.teacher_samples, "student_samples": cal.student_samples, "temperature": cal.temperature,
            "top_p": cal.top_p, "max_new_tokens": cfg.eval.sampling.max_new_tokens, "seed": cfg.seed}


def candidate_sampling(cfg: RunConfig, bench_cfg: BenchConfig, source: str) -> SamplingConfig:
    """How `source` samples its candidates: bench.calibration's count, temperature and top_p, eval.sampling's length
    and batch size (a candidate may be as long as a test generation)."""
    cal, ev = bench_cfg.calibration, cfg.eval.sampling
    n = cal.teacher_samples if source == "teacher" else cal.student_samples
    return SamplingConfig(max_new_tokens=ev.max_new_tokens, do_sample=True, temperature=cal.temperature, top_p=cal.top_p,
                          num_samples=n, batch_size=ev.batch_size)


def dedupe(by_source: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(texts, sources) of one prompt's samples, source by source in order, without empty or repeated texts (compared
    stripped; the first kept): a repeated candidate would weigh twice in every pair count."""
    seen: set[str] = set()
    texts, sources = [], []
    for source, samples in by_source.items():
        for text in samples:
            key = text.strip()
            if key and key not in seen:
                seen.add(key)
                texts.append(text)
                sources.append(source)
    return texts, sources


def split(flat: list[float], sizes: list[int]) -> list[list[float]]:
    """A flat list cut into consecutive pieces of `sizes`."""
    ends = np.cumsum([0, *sizes])
    return [[float(x) for x in flat[a:b]] for a, b in zip(ends[:-1], ends[1:])]


def build_candidates(bench) -> CandidateSet:
    """Sample the candidates (resumable, `Artifacts.sample`), drop empty and repeated ones, grade them once."""
    cfg, art = bench.cfg, bench.art
    test = art.splits["test"]
    sampled = {}
    for source, row in SOURCES.items():
        role, ckpt = art.eval_model(row)
        result = art.sample(role, ckpt, test, candidate_sampling(cfg, bench.bench, source), bench.paths.calibration_samples(row),
                            seed=cfg.seed + SEED_OFFSETS[source], desc=f"calibration candidates: {row}")
        result.require_all(f"calibration candidates of {row}")  # as the test generations: a re-run retries only those
        sampled[source] = result.samples
    sets = [dedupe({source: sampled[source][e.id] for source in SOURCES}) for e in test]
    texts = [t for t, _ in sets]
    judge = bench.graders["eval"]
    flat = judge.score([e.prompt for e, t in zip(test, texts) for _ in t], [c for t in texts for c in t]) if any(texts) else []
    references = judge.score([e.prompt for e in test], [e.target for e in test])
    settings, ids = candidate_settings(cfg, bench.bench), [e.id for e in test]
    set_id = hashlib.sha256(json.dumps([settings, ids, texts]).encode()).hexdigest()[:12]
    return CandidateSet(set_id, settings, ids, texts, [s for _, s in sets], split(list(flat), [len(t) for t in texts]),
                        [float(r) for r in references])


def candidate_set(bench) -> CandidateSet | None:
    """The calibration candidates, made once under the claim `calibration`; None when bench.calibration is off."""
    if not bench.bench.calibration.enabled:
        return None
    path = bench.paths.calibration_file("candidates.json")
    if not path.is_file():
        with bench.claimed(CLAIM):
            if not path.is_file():
                write_json(path, build_candidates(bench).to_json())
    cands = CandidateSet.from_json(read_json(path))
    wanted = candidate_settings(bench.cfg, bench.bench)
    if cands.settings != wanted or cands.ids != [e.id for e in bench.art.splits["test"]]:
        raise ConfigError(f"{path} holds calibration candidates made with {cands.settings} (or for other test prompts); this "
                          f"config asks for {wanted}. Keep bench.calibration as it was, or delete {path.parent} to sample "
                          "them again (tested jobs whose weights are gone then have no calibration numbers).")
    return cands


# ----------------------------------------------------------------------------- every row's scores
def score_candidates(lm, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
    """`lm`'s length-normalised log-likelihood of each prompt's candidates (forward passes only): each prompt once for
    all its candidates where the backend shares a prompt's cache (`score_groups`), else prompt and candidate together."""
    if hasattr(lm, "score_groups"):
        return lm.score_groups(prompts, candidates, normalize=True)
    flat = lm.score([p for p, cs in zip(prompts, candidates) for _ in cs], [c for cs in candidates for c in cs],
                    normalize=True) if any(candidates) else []
    return split(list(flat), [len(cs) for cs in candidates])


def known_scores(path: Path, cands: CandidateSet) -> CandidateScores | None:
    """The scores `path` holds, when they are of this candidate set."""
    record = CandidateScores.from_json(read_json(path)) if path.is_file() else None
    return record if record is not None and record.candidates == cands.id else None


def scores_of(bench, cands: CandidateSet, role: str, ckpt, path: Path) -> CandidateScores:
    """`role`'s weights at `ckpt` scoring every candidate, once: `path` holds them when it scored this set."""
    from prefdistill.models.backends import release

    known = known_scores(path, cands)
    if known is not None:
        return known
    t0 = time.time()
    lm = bench.art.load(role, ckpt)
    if getattr(lm, "can_score", False):
        by_id = {e.id: e.prompt for e in bench.art.splits["test"]}
        scores, why = score_candidates(lm, [by_id[i] for i in cands.ids], cands.candidates), None
    else:  # a text-only teacher (an API without echoed log-probs): its row has no calibration numbers
        scores, why = None, getattr(lm, "score_unavailable", None) or f"the {role}'s backend cannot score given text"
    del lm
    release(getattr(bench.cfg, role).backend)
    record = CandidateScores(cands.id, scores, round(time.time() - t0, 2), why)
    write_json(path, record.to_json())
    return record


def base_scores(bench, cands: CandidateSet) -> dict[str, CandidateScores]:
    """Each base row's scores of the candidates (teacher, initial and SFT students), made once under the claim."""
    with bench.claimed(CLAIM):
        return {row: scores_of(bench, cands, *bench.art.eval_model(row), bench.paths.calibration_file(f"{row}.json"))
                for row in BASE_ROWS}


def prepare(bench) -> None:
    """The shared unit's part: the candidate set, graded, and the base rows' scores of it."""
    cands = candidate_set(bench)
    if cands is not None:
        base_scores(bench, cands)


def score_job(bench, job, step: int, ckpt) -> float | None:
    """A tested job's scores of the candidates from the weights at `step` (`ckpt`), once; the seconds they took (loading
    the weights included), or None when bench.calibration is off."""
    cands = candidate_set(bench)
    if cands is None:
        return None
    path = bench.paths.calibration(job.key, step)
    if known_scores(path, cands) is None and not Path(ckpt).exists():  # tested again from kept samples after its weights were dropped
        print(f"[prefdistill] calibration: {job.key} has no weights left at step {step}; its row has no calibration numbers",
              flush=True)
        return None
    return scores_of(bench, cands, "student", ckpt, path).wall_s


def gather(bench, jobs: list, chosen: dict) -> Calibration | None:
    """`Scored.calibration`: the candidates, the base rows' scores and each tested job's at its chosen step (a job tested
    before calibration existed, or of another candidate set, is left out)."""
    cands = candidate_set(bench)
    if cands is None:
        return None
    found = {j.key: known_scores(bench.paths.calibration(j.key, chosen[j.entry]["step"]), cands) for j in jobs}
    return Calibration(cands, base_scores(bench, cands), {k: v for k, v in found.items() if v is not None})


# ----------------------------------------------------------------------------- the numbers (no model runs here)
def _values(cands: CandidateSet, records: list[CandidateScores | None]) -> dict[str, np.ndarray] | None:
    """{metric: (S, N)} of S seeds' scores of the candidates; None when a seed has none."""
    if not records or any(r is None or r.scores is None for r in records):
        return None
    each = [per_prompt(r.scores, cands.judge_scores, cands.reference_scores, sources=cands.sources) for r in records]
    return {m: np.stack([v[m] for v in each]) for m in (*METRICS, *SOURCE_METRICS)}


def _numbers(mine: dict | None, others: dict[str, dict | None], opts: dict) -> dict | None:
    if mine is None:
        return None
    out: dict = {**calibration_summary(mine, **opts), "seeds": int(mine[METRICS[0]].shape[0])}
    for key, other in others.items():  # None against itself, or where the other row was not measured
        out[key] = None if other is None or other is mine else calibration_difference(mine, other, **opts)
    return out


def attach_calibration(base_rows: dict[str, dict], rows: list[dict], scored: Scored, bench_cfg: BenchConfig,
                       opts: dict) -> dict | None:
    """Give each base row and method row its "calibration": the three measures with 95% intervals ("seeds": how many
    pooled) and "vs_sft" / "vs_seqkd", their paired differences against the SFT student (the base row) and SeqKD
    (bench.seqkd_entry); None where not measured. Returns the candidate set's summary (None without one)."""
    cal = scored.calibration
    base = {row: _values(cal.candidates, [cal.base.get(row)]) for row in base_rows} if cal else {}
    methods = {}
    for row in rows if cal else []:
        keys = [j.key for j in scored.jobs if j.entry == row["name"] and j.is_main]  # one per seed, as the row's win rate
        methods[row["name"]] = _values(cal.candidates, [cal.jobs.get(k) for k in keys])
    others = {"vs_sft": base.get("student_sft"), "vs_seqkd": methods.get(bench_cfg.seqkd_entry)}
    for key, row in base_rows.items():
        row["calibration"] = _numbers(base.get(key), others, opts)
    for row in rows:
        row["calibration"] = _numbers(methods.get(row["name"]), others, opts)
    return None if cal is None else candidate_summary(cal.candidates, opts)


def candidate_summary(cands: CandidateSet, opts: dict) -> dict:
    """What the candidate set is: its size, whose samples, how many prompts the judge could rank, and the re-rank win
    rate of a pick at random (every candidate tied) and of the judge's own pick (the ceiling), with intervals."""
    sizes = [len(c) for c in cands.candidates]
    judged = per_prompt(cands.judge_scores, cands.judge_scores, cands.reference_scores)
    blind = per_prompt([[0.0] * k for k in sizes], cands.judge_scores, cands.reference_scores)
    rerank = "rerank_win_rate"
    return {"n_prompts": len(sizes), "candidates_per_prompt": float(np.mean(sizes)) if sizes else 0.0,
            "candidates_min": min(sizes, default=0), "candidates_max": max(sizes, default=0),
            "teacher_share": float(np.mean([s == "teacher" for ss in cands.sources for s in ss])) if any(sizes) else None,
            "ranked_prompts": int(np.isfinite(judged["pairwise_accuracy"]).sum()), "settings": cands.settings,
            "random_rerank_win_rate": calibration_summary({rerank: blind[rerank][None]}, **opts)[rerank],
            "oracle_rerank_win_rate": calibration_summary({rerank: judged[rerank][None]}, **opts)[rerank]}
