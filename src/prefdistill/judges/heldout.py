"""Two reward models from one task: a training judge and a held-out judge that grades.

    metrics = train_judges(examples, validation, cfg.reward, RunFolder(RUN), seed=0, heldout_seed=1)
    # RUN/reward/{model,metrics.json}            the training judge (oracle, relabelling, margins)
    # RUN/reward/heldout/{model,metrics.json}    the evaluation judge

What makes the held-out judge independent of the one methods optimise: the reward data
(the training split's references) is split in two by *document* (`meta["group"]`, so the
three aspect summaries of one paper fall on one side), each judge learns from its own
half only, and the held-out one has its own seed, hence its own synthetic negatives and
its own initialisation. They share the frozen encoder and the recipe, so they are two
draws of the same kind of judge, not two kinds: a method that exploits a blind spot of
the recipe itself can still fool both. Gaps between the two in the report show reward
hacking of the training judge.
"""
from __future__ import annotations

import numpy as np

from prefdistill.config.schema import RewardConfig
from prefdistill.io import Example, read_json, write_json
from prefdistill.judges.negatives import document_of
from prefdistill.judges.reward import stale_fields, train_reward_model
from prefdistill.run.folder import HELDOUT, RunFolder

def split_by_document(examples: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """Two disjoint halves of `examples`, no document on both sides; the first gets the extra one when odd."""
    documents = sorted({document_of(e) for e in examples})
    order = np.random.default_rng([seed, 2]).permutation(len(documents))
    first = {documents[i] for i in order[: (len(documents) + 1) // 2]}
    return [e for e in examples if document_of(e) in first], [e for e in examples if document_of(e) not in first]


def train_judges(examples: list[Example], validation: list[Example], cfg: RewardConfig, folder: RunFolder, *, seed: int,
                 heldout_seed: int, device: str = "cpu", generated: dict[str, str] | None = None) -> dict[str, dict]:
    """Train the training judge on one half of the documents and the held-out judge on the other.

    Each side is skipped when its outputs exist and match the recipe (the `reward` stage resumes). Returns
    {"training": metrics, "heldout": metrics}, each with the documents and examples it learned from. `generated`
    (the initial student's answers, by prompt) may hold both halves' prompts: each judge's negatives are built from
    its own examples only (`make_preference_pairs` reads the answers to those prompts and no others).
    """
    train_half, heldout_half = split_by_document(examples, seed)
    if not train_half or not heldout_half:
        raise ValueError(f"the reward data has {len({document_of(e) for e in examples})} document(s): a held-out judge needs at "
                         "least two, one for each judge; set eval_judge.kind to same, hf or callable")
    out = {}
    for name, half, judge_seed in (("training", train_half, seed), (HELDOUT, heldout_half, heldout_seed)):
        metrics = train_reward_model(half, validation, cfg, folder.judge_dir(name), judge_seed, device=device,
                                     generated=generated)
        if "trained_on" not in metrics:
            metrics["trained_on"] = {"half": name, "documents": len({document_of(e) for e in half}), "examples": len(half),
                                     "split_seed": seed}
            write_json(folder.judge_metrics(name), metrics)
        out[name] = metrics
    return out


def judges_current(folder: RunFolder, cfg: RewardConfig, seeds: dict[str, int]) -> bool:
    """Whether every judge of `seeds` ({"training": seed, "heldout": seed}) is trained, with this recipe."""
    paths = {which: folder.judge_metrics(which) for which in seeds}
    return all(p.is_file() and folder.judge_model(w).is_dir() and not stale_fields(read_json(p), cfg, seeds[w])
               for w, p in paths.items())


def judges_metrics(folder: RunFolder) -> dict[str, dict]:
    """The metrics of whichever trained judges exist in the run folder."""
    found = {which: folder.judge_metrics(which) for which in ("training", HELDOUT)}
    return {k: read_json(p) for k, p in found.items() if p.is_file()}
