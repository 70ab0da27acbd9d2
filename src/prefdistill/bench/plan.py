"""What the bench trains, and how it picks each method's setting on the validation split.

    grid = settings(entry, bench)               # [{"lr": 1e-4, "beta": 0.1}, ...]: bench.grid × entry.grid
    jobs = selection_jobs(bench)                 # every grid point of every entry, on the first seed
    best = choose(candidates, "win_rate")        # the (setting, step) with the best validation score
    seeds = seed_jobs(bench, chosen)             # the chosen setting on the other seeds
    items = plan(bench, chosen or None)          # every unit of work in order, with what it waits for

Pure functions of the bench section and of scores already computed: no model runs here.
A setting is a grid point: "lr" sets distill.train.lr, any other key a method parameter.
A candidate is one setting at one scored step (`bench.checkpoints` and the last step), so
checkpoint selection and the grid are one choice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass

import numpy as np

from prefdistill.config.schema import BenchConfig, BenchMethod

LR = "lr"  # the grid key that sets distill.train.lr; every other key is a method parameter


@dataclass(frozen=True)
class Job:
    entry: str  # BenchMethod.name
    seed: int
    setting: tuple = ()  # the grid point as sorted (key, value) pairs
    data_share: float = 1.0
    relabel_share: float = 0.0
    settings: str = ""  # short hash of the entry's method, fixed params and own oracle: editing them makes a new job

    @property
    def key(self) -> str:
        point = "".join(f"-{k}{v:g}" if isinstance(v, (int, float)) else f"-{k}{v}" for k, v in self.setting)
        return f"{self.entry}-{self.settings}{point}-seed{self.seed}-data{self.data_share:g}-relabel{self.relabel_share:g}"

    @property
    def is_main(self) -> bool:
        return self.data_share == 1.0 and self.relabel_share == 0.0

    @property
    def grid_point(self) -> dict:
        return dict(self.setting)


def settings_hash(entry: BenchMethod) -> str:
    fixed = {"method": entry.method, "params": entry.params}
    if entry.oracle is not None:  # an entry without its own oracle keeps the jobs (keys) it had before entries had one
        fixed["oracle"] = dataclasses.asdict(entry.oracle)
    text = json.dumps(fixed, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def grid(entry: BenchMethod, bench: BenchConfig) -> dict[str, list]:
    """The entry's grid: bench.grid with the entry's own keys added or replacing."""
    return {**bench.grid, **entry.grid}


def settings(entry: BenchMethod, bench: BenchConfig) -> list[tuple]:
    """Every grid point of an entry, as sorted (key, value) tuples, in a fixed order ([()] without a grid)."""
    g = grid(entry, bench)
    keys = sorted(g)
    return [tuple(zip(keys, values)) for values in itertools.product(*(g[k] for k in keys))]


def apply_setting(entry: BenchMethod, setting: tuple, lr: float) -> tuple[dict, float]:
    """(the method's params, the learning rate) at a grid point."""
    point = dict(setting)
    return {**entry.params, **{k: v for k, v in point.items() if k != LR}}, float(point.get(LR, lr))


def as_setting(point: dict | list) -> tuple:
    """A grid point as a Job's setting (sorted (key, value) pairs) from a dict or JSON's list of pairs."""
    return tuple(sorted((k, v) for k, v in (point.items() if isinstance(point, dict) else point)))


def seeds_of(entry: BenchMethod, bench: BenchConfig) -> list[int]:
    return list(entry.seeds or bench.seeds)


def selection_jobs(bench: BenchConfig) -> list[Job]:
    """Every grid point of every entry on the entry's first seed."""
    return [Job(m.name, seeds_of(m, bench)[0], s, settings=settings_hash(m)) for m in bench.methods for s in settings(m, bench)]


def seed_jobs(bench: BenchConfig, chosen: dict[str, tuple]) -> list[Job]:
    """The chosen setting of every entry on its other seeds, then the data-share and relabel sweeps (first seed)."""
    by_name = {m.name: m for m in bench.methods}
    jobs = [Job(m.name, s, chosen[m.name], settings=settings_hash(m)) for m in bench.methods for s in seeds_of(m, bench)[1:]]
    swept = bench.data_share_methods if bench.data_share_methods is not None else list(by_name)
    for name in swept:
        m = by_name[name]
        jobs += [Job(name, seeds_of(m, bench)[0], chosen[name], share, settings=settings_hash(m)) for share in bench.data_shares
                 if share != 1.0]
    if bench.relabel_shares:
        m = by_name[bench.relabel_method]
        jobs += [Job(m.name, seeds_of(m, bench)[0], chosen[m.name], relabel_share=r, settings=settings_hash(m))
                 for r in bench.relabel_shares if r != 0.0]
    return list(dict.fromkeys(jobs))


def judged_jobs(bench: BenchConfig, chosen: dict[str, tuple]) -> list[Job]:
    """The jobs judged on the test prompts: every entry's chosen grid job (first seed), then `seed_jobs`."""
    first = [Job(m.name, seeds_of(m, bench)[0], chosen[m.name], settings=settings_hash(m)) for m in bench.methods]
    return first + seed_jobs(bench, chosen)


# ----------------------------------------------------------------------------- the plan: units a runner can take

SHARED, SELECTION = "shared", "selection"  # the keys of the two plan items that are not jobs
STAGES = (SHARED, "grid", SELECTION, "seeds", "figure")


@dataclass(frozen=True)
class PlanItem:
    """One unit of `prefdistill bench --job KEY`: the shared stages, a job, or the selection.

    stage: shared (reward, SFT, the gap check, pairs) / grid (a grid point on the first seed, validation only) /
    selection (each entry's best setting and step) / seeds (a chosen setting on one seed, tested) / figure (a data-share
    or relabel sweep point of a chosen setting, tested). A seed or figure item is pending (key "") until the selection
    is made; `needs` then names the grid jobs of its entry.
    """
    stage: str
    key: str
    needs: tuple[str, ...] = ()
    job: Job | None = None
    method: str = ""

    @property
    def pending(self) -> bool:
        return not self.key


def plan(bench: BenchConfig, chosen: dict[str, tuple] | None) -> list[PlanItem]:
    """Every unit of the bench in the order a single runner takes them, each after the items it `needs`.

    `chosen`: each entry's chosen setting (selection.json), or None before the grid has been chosen from.
    """
    methods = {m.name: m.method for m in bench.methods}
    grid = selection_jobs(bench)
    items = [PlanItem(SHARED, SHARED)]
    items += [PlanItem("grid", j.key, (SHARED,), j, methods[j.entry]) for j in grid]
    items.append(PlanItem(SELECTION, SELECTION, tuple(j.key for j in grid)))
    tested = judged_jobs(bench, chosen) if chosen is not None else judged_jobs(bench, {m.name: () for m in bench.methods})
    for j in tested:
        stage = "seeds" if j.is_main else "figure"
        if chosen is not None:
            items.append(PlanItem(stage, j.key, (SELECTION,), j, methods[j.entry]))
        else:  # the setting is not known yet: the job waits on its entry's grid
            items.append(PlanItem(stage, "", tuple(g.key for g in grid if g.entry == j.entry), j, methods[j.entry]))
    return items


def describe(item: PlanItem) -> str:
    """One line of `--plan`: stage, key, method, setting, seed, shares, and what it waits for."""
    needs = item.needs if len(item.needs) <= 2 else (f"{len(item.needs)} grid jobs",)
    after = f"  after: {', '.join(needs)}" if needs else ""
    if item.job is None:
        return f"{item.stage:<9} {item.key}{after}"
    j = item.job
    setting = " ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in j.setting)
    what = (f"{j.entry} ({item.method}) setting: {setting or 'as configured'}" if not item.pending
            else f"{j.entry} ({item.method}) setting: chosen on the grid")
    key = item.key or "(pending)"
    return f"{item.stage:<9} {key}  {what}; seed {j.seed}, data {j.data_share:g}, relabel {j.relabel_share:g}{after}"


def scored_steps(bench: BenchConfig, steps: int) -> list[int]:
    """The steps at which a run is scored on validation: bench.checkpoints below `steps`, and the last step."""
    return sorted({s for s in bench.checkpoints if s < steps} | {steps})


def subset(rows: list[dict], share: float, seed: int) -> list[dict]:
    """The first ⌈share·n⌉ rows of one seeded permutation: smaller shares are nested in larger ones."""
    order = np.random.default_rng(seed).permutation(len(rows))
    keep = max(1, math.ceil(share * len(rows)))
    return [rows[i] for i in sorted(order[:keep])]


# ----------------------------------------------------------------------------- choice on validation


def choose(candidates: list[dict], metric: str) -> dict:
    """The best candidate: highest validation `metric`, then highest ROUGE-L, then the earliest (grid order, step).

    Each candidate is {"setting": tuple, "step": int, "val": {"win_rate", "rougeL", ...}}.
    """
    if not candidates:
        raise ValueError("choose: no candidates were scored on validation")
    order = {id(c): i for i, c in enumerate(candidates)}
    return max(candidates, key=lambda c: (c["val"][metric], c["val"]["rougeL"], -order[id(c)]))


def collapse(curve: dict[int, dict], floor: dict) -> list[dict]:
    """The scored steps at which validation win rate or ROUGE-L fell below `floor` (the initial student's).

    curve: {step: {"win_rate", "rougeL"}}; returns [{"step", "metric", "value", "floor"}], empty when it never fell.
    """
    return [{"step": step, "metric": k, "value": scores[k], "floor": floor[k]}
            for step, scores in sorted(curve.items()) for k in ("win_rate", "rougeL") if scores[k] < floor[k]]
