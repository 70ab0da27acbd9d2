"""The contextual-bandit lab of Faster WIND (Yang et al. 2024/25, arXiv 2410.20727): exact and sample-based.

    prefdistill lab bandit                       # defaults below: 3 kinds × 5 seeds × 6 methods, ~10 s on a CPU
    results = run_lab(BanditConfig(seeds=2))     # the same in Python

Tabular softmax policies over C contexts × A actions, an exact preference matrix per context
(`preferences`), π_ref = softmax of N(0, 1) logits. Every sample-based method starts at π_ref,
draws K samples per context per iteration (from the policy or its anchor) and pays one oracle
call per pair of samples compared (P(y' ≻ y) = 1 − P(y ≻ y') is free); counts are per context.
- WIND-squared / -KL / -NCE, SPPO (squared, β = 0): K samples of π_t, P̂_i = mean_{j≠i} P(y_i ≻ y_j),
  `fit_steps` SGD steps on the loss from `prefdistill.losses.wind` starting at π_t, anchor ← fit.
- Iterative BOND (Best-of-n of the anchor, Jeffreys divergence), J-BOND (EMA anchor): the quantile reward,
  returns and Jeffreys loss of `prefdistill.losses.bond`, which methods/bond.py and methods/jbond.py use.
Policies are tabular logits (C, A); the fitted "parameters" are the logits themselves.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from prefdistill.judges.oracles import MatrixOracle
from prefdistill.lab import preferences as pref
from prefdistill.losses.bond import jeffreys_loss, kl_regularised_returns, log_quantile_reward
from prefdistill.losses.wind import wind_kl_loss, wind_nce_loss, wind_squared_loss
from prefdistill.methods.jbond import LOSE_BOTH_REWARD


@dataclass
class BanditConfig:
    contexts: int = 4  # C
    actions: int = 8  # A
    beta: float = 0.1  # β: KL strength of the regularised game (magnet to π_ref)
    eta: float = 2.0  # η: WIND step size; 2 = Best-of-2 under a judge that picks y w.p. P: π·2P(y ≻ π) ≈ π·exp(2(P − ½))
    iterations: int = 30  # T, for every sample-based method
    samples_per_iteration: int = 12  # K samples per context per iteration (BOND: K // (n+1) groups, J-BOND: K // 3 triples)
    seeds: int = 5
    kinds: tuple[str, ...] = pref.KINDS
    fit_steps: int = 10  # SGD steps per iteration for the WIND / SPPO fits
    lr: float = 1.0  # SGD learning rate on the logits, every method (Adam would move unsampled actions at full speed)
    bond_n: int = 2  # iterative BOND distils Best-of-n of the anchor each iteration
    jeffreys_beta: float = 0.5  # BOND / J-BOND: (1 − β_J)·forward + β_J·backward
    jbond_ema: float = 0.02  # J-BOND anchor ← (1 − η_EMA)·anchor + η_EMA·policy, per step
    jbond_gamma: float = 0.0  # J-BOND extra γ·KL(π ‖ π_anchor), as in methods/jbond.py
    target_fractions: tuple[float, ...] = (0.5, 0.9)  # target win rates vs π_ref: ½ + f·(P(π* ≻ π_ref) − ½)
    exact_iterations: int = 60  # iterations of the exact update for the convergence figure

    def check(self) -> None:
        if not 0 < self.eta * self.beta <= 1:
            raise ValueError(f"lab bandit: need 0 < eta*beta <= 1, got eta={self.eta}, beta={self.beta}")
        if self.samples_per_iteration < max(3, self.bond_n + 1) or self.iterations < 1 or self.seeds < 1 or self.contexts < 1 or self.actions < 2:
            raise ValueError("lab bandit: need samples-per-iteration >= max(3, bond_n + 1), iterations >= 1, seeds >= 1, contexts >= 1, actions >= 2")
        if self.bond_n < 2:
            raise ValueError(f"lab bandit: BOND needs n >= 2, got {self.bond_n}")
        if not self.target_fractions or not all(0 < f <= 1 for f in self.target_fractions):
            raise ValueError(f"lab bandit: target fractions must lie in (0, 1], got {self.target_fractions}")
        unknown = set(self.kinds) - set(pref.KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"lab bandit: kinds must be among {', '.join(pref.KINDS)}, got {', '.join(self.kinds)}")


@dataclass
class Env:
    """One game and what has been spent on it."""
    P: np.ndarray  # (C, A, A) exact preferences
    ref: np.ndarray  # (C, A) π_ref
    cfg: BanditConfig
    rng: np.random.Generator
    oracle: MatrixOracle
    samples: int = 0  # drawn, per context

    @property
    def oracle_calls(self) -> float:
        return self.oracle.comparisons / self.ref.shape[0]  # per context

    @property
    def ref_logps(self) -> torch.Tensor:
        return torch.from_numpy(np.log(self.ref))  # (C, A)

    def sample(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        """(C, k) actions drawn from softmax(logits), by inverse CDF on the env's generator."""
        cdf = torch.softmax(logits, -1).cumsum(-1).numpy()  # (C, A)
        u = self.rng.random((cdf.shape[0], k, 1))
        self.samples += k
        return torch.from_numpy(np.minimum((u > cdf[:, None, :]).sum(-1), cdf.shape[1] - 1))

    def compare(self, contexts: list[int], groups: list[list[int]]) -> np.ndarray:
        """(G, m, m) P(y_i ≻ y_j) within each group of m sampled actions, paid to the oracle."""
        return np.stack(self.oracle.win_matrices(contexts, groups))


def fit(init_logits: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], *, steps: int, lr: float) -> torch.Tensor:
    """`steps` plain SGD steps on objective(log_softmax(θ)) from θ = init_logits; returns θ (C, A).

    Objectives are sums over contexts of per-context averages, so each context's logits get the
    same gradient whatever C is.
    """
    theta = init_logits.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        objective(torch.log_softmax(theta, -1)).backward()
        opt.step()
    return theta.detach()


# ----------------------------------------------------------------------------- methods: one step = one iteration


def wind_step(state: dict, env: Env, *, loss: Callable, beta: float) -> None:
    """K samples of π_t, empirical win rates, fit the loss from π_t, move the anchor to the fit."""
    cfg, k = env.cfg, env.cfg.samples_per_iteration
    logits = state["logits"]
    y = env.sample(logits, k)  # (C, K)
    c = y.shape[0]
    matrices = env.compare(list(range(c)), y.tolist())  # (C, K, K)
    win = torch.from_numpy(np.stack([MatrixOracle.win_rates(m) for m in matrices]))  # (C, K) P̂_i
    anchor_logps = torch.log_softmax(logits, -1).gather(1, y)  # (C, K) log π_t(y_i)
    ref_logps = env.ref_logps.gather(1, y)  # (C, K)

    def objective(logps):
        out = loss(logps.gather(1, y), anchor_logps, ref_logps, win, eta=cfg.eta, beta=beta)  # (C, K) squared, (C,) KL / NCE
        return (out.mean(-1) if out.ndim == 2 else out).sum()

    state["logits"] = fit(logits, objective, steps=cfg.fit_steps, lr=cfg.lr)


def jeffreys_step(state: dict, env: Env, *, n: int, kl_coef: float, reward_and_best: Callable, gamma: float = 0.0) -> None:
    """One BOND-family step per context, with the loss code the methods ship (`prefdistill.losses.bond`).

    Per context (the lab's "prompt"): a policy sample y and n anchor samples, compared as one group
    (y first). `reward_and_best(matrices, anchors)` gives the reward of y (C,) and the anchor sample the
    forward part distils (C,). Return R = reward − kl_coef·(log π(y) − log π_anchor(y)); loss
    `jeffreys_loss` summed over contexts (leave-one-out baseline across them), plus γ·KL(π ‖ π_anchor)
    by its score-function gradient as in methods/jbond.py; one SGD step.
    """
    cfg = env.cfg
    theta, anchor = state["logits"], state.setdefault("anchor", state["logits"].clone())
    y = env.sample(theta, 1)[:, 0]  # (C,)
    anchors = env.sample(anchor, n)  # (C, n)
    c = y.shape[0]
    mats = torch.from_numpy(env.compare(list(range(c)), torch.cat([y[:, None], anchors], -1).tolist()))  # (C, n+1, n+1)
    reward, best = reward_and_best(mats, anchors)
    anchor_lp_y = torch.log_softmax(anchor, -1).gather(1, y[:, None])[:, 0]  # (C,)

    def objective(logps):
        lp_y = logps.gather(1, y[:, None])[:, 0]  # (C,)
        ret = kl_regularised_returns(reward, lp_y.detach(), anchor_lp_y, kl_coef=kl_coef)
        loss = jeffreys_loss(logps.gather(1, best[:, None])[:, 0], lp_y, ret, beta=cfg.jeffreys_beta)
        return (loss + gamma * (lp_y.detach() - anchor_lp_y) * lp_y).sum()

    state["logits"] = fit(theta, objective, steps=1, lr=cfg.lr)


def bond_step(state: dict, env: Env) -> None:
    """Iterative BOND (Sessa et al. 2024, §4), as methods/bond.py: K // (n + 1) steps, then anchor ← policy.

    Reward log p̂≤(y), the mid-rank of y among the n anchor samples (`log_quantile_reward`); the
    forward part distils the anchor sample with the highest win rate among the anchors; KL
    coefficient 1/(n − 1). The anchor moves once per iteration, after its last step.
    """
    n = env.cfg.bond_n

    def reward_and_best(mats, anchors):
        best = torch.tensor([int(MatrixOracle.win_rates(m[1:, 1:].numpy()).argmax()) for m in mats])
        return log_quantile_reward(mats[:, 0, 1:]), anchors.gather(1, best[:, None])[:, 0]

    for _ in range(env.cfg.samples_per_iteration // (n + 1)):
        jeffreys_step(state, env, n=n, kl_coef=1.0 / (n - 1), reward_and_best=reward_and_best)
    state["anchor"] = state["logits"].clone()


def jbond_step(state: dict, env: Env) -> None:
    """J-BOND (Sessa et al. 2024, §5), as methods/jbond.py: K // 3 steps, each on one triple per context.

    Reward −log 16 if y loses to both anchor samples, else 0; SFT on the better anchor sample; KL
    coefficient 1; after each step anchor logits ← (1 − η_EMA)·anchor + η_EMA·logits.
    """
    cfg = env.cfg

    def reward_and_best(mats, anchors):
        loses_both = (mats[:, 0, 1] < 0.5) & (mats[:, 0, 2] < 0.5)
        return LOSE_BOTH_REWARD * loses_both.double(), torch.where(mats[:, 1, 2] >= 0.5, anchors[:, 0], anchors[:, 1])

    for _ in range(cfg.samples_per_iteration // 3):
        jeffreys_step(state, env, n=2, kl_coef=1.0, reward_and_best=reward_and_best, gamma=cfg.jbond_gamma)
        state["anchor"] = (1 - cfg.jbond_ema) * state["anchor"] + cfg.jbond_ema * state["logits"]


@dataclass(frozen=True)
class Method:
    label: str
    step: Callable[[dict, Env], None]
    converges_to: str  # for the report


def methods(cfg: BanditConfig) -> dict[str, Method]:
    def wind(loss, beta):
        return lambda state, env: wind_step(state, env, loss=loss, beta=beta)

    return {
        "wind-squared": Method("WIND-squared", wind(wind_squared_loss, cfg.beta), "π* (regularised equilibrium)"),
        "wind-kl": Method("WIND-KL", wind(wind_kl_loss, cfg.beta), "π* (regularised equilibrium)"),
        "wind-nce": Method("WIND-NCE", wind(wind_nce_loss, cfg.beta), "π* (regularised equilibrium)"),
        "sppo": Method("SPPO", wind(wind_squared_loss, 0.0), "the unregularised equilibrium (β = 0)"),
        "bond": Method(f"Iterative BOND (n={cfg.bond_n})", bond_step, f"Best-of-{cfg.bond_n}^t of π_ref (no limit)"),
        "jbond": Method("J-BOND", jbond_step, "Best-of-2^t of π_ref along an EMA anchor"),
    }


# ----------------------------------------------------------------------------- the experiment


def make_game(kind: str, seed: int, cfg: BanditConfig) -> tuple[np.ndarray, np.ndarray]:
    """(P (C, A, A), π_ref (C, A)) for one kind and seed."""
    rng = np.random.default_rng([seed, pref.KINDS.index(kind)])
    P = pref.preference_matrices(kind, contexts=cfg.contexts, actions=cfg.actions, rng=rng)
    ref = torch.softmax(torch.from_numpy(rng.standard_normal((cfg.contexts, cfg.actions))), -1).numpy()
    return P, ref


def _measure(pi: np.ndarray, P: np.ndarray, ref: np.ndarray, pi_star: np.ndarray, beta: float) -> dict[str, float]:
    """Distance KL(π* ‖ π), duality gap, win rate vs π_ref, each averaged over contexts."""
    return {"distance": float(pref.kl(pi_star, pi).mean()), "gap": float(pref.duality_gap(pi, ref, P, beta=beta).mean()),
            "win_rate": float(pref.win_rate_against(P, pi, ref).mean())}


def run_method(method: Method, P: np.ndarray, ref: np.ndarray, pi_star: np.ndarray, cfg: BanditConfig, seed: int) -> dict:
    """T iterations of one method from π_ref; per iteration (0 = π_ref) cumulative samples, oracle calls, metrics."""
    env = Env(P, ref, cfg, np.random.default_rng(seed), MatrixOracle(P))
    state = {"logits": torch.from_numpy(np.log(ref)).clone()}
    rows = []
    for t in range(cfg.iterations + 1):
        if t:
            method.step(state, env)
        pi = torch.softmax(state["logits"], -1).numpy()
        rows.append({"samples": env.samples, "oracle_calls": env.oracle_calls, **_measure(pi, P, ref, pi_star, cfg.beta)})
    return {key: [r[key] for r in rows] for key in rows[0]}


def run_exact(P: np.ndarray, ref: np.ndarray, pi_star: np.ndarray, cfg: BanditConfig) -> dict:
    """The exact WIND update for `exact_iterations`, and exact iterative Best-of-2 (BOND's target) for T."""
    pi, rows = ref.copy(), []
    for t in range(cfg.exact_iterations + 1):
        if t:
            pi = pref.exact_update(pi, ref, P, beta=cfg.beta, eta=cfg.eta)
        rows.append(_measure(pi, P, ref, pi_star, cfg.beta))
    bo2 = [ref]
    for _ in range(cfg.iterations):
        bo2.append(pref.best_of_two(bo2[-1], P))
    return {**{key: [r[key] for r in rows] for key in rows[0]},
            "best_of_two_win_rate": [float(pref.win_rate_against(P, p, ref).mean()) for p in bo2]}


def first_reach(values: list[float], costs: list[float], target: float, *, below: bool = False) -> float | None:
    """The cost at the first iteration whose value reaches the target (falls to it when `below`), or None."""
    return next((c for v, c in zip(values, costs) if (v <= target if below else v >= target)), None)


def _to_target(fraction: float, star_win: list[float], runs: dict[str, list[dict]]) -> dict:
    """Per method and seed, the samples and oracle calls spent when the win rate vs π_ref first reached
    ½ + fraction·(P(π* ≻ π_ref) − ½); None where it never did."""
    targets = [0.5 + fraction * (w - 0.5) for w in star_win]
    return {"fraction": fraction, "win_rate": targets,
            "methods": {name: {cost: [first_reach(r["win_rate"], r[cost], tg) for r, tg in zip(rs, targets)]
                               for cost in ("samples", "oracle_calls")} for name, rs in runs.items()}}


def _to_distance_target(fraction: float, runs: dict[str, list[dict]]) -> dict:
    """The regularised game's own yardstick: per method and seed, the cost when KL(π* ‖ π) first fell to
    (1 − fraction)·KL(π* ‖ π_ref), i.e. when a `fraction` of the way to π* was covered; None where it never did."""
    start = [r["distance"][0] for r in next(iter(runs.values()))]  # every method starts at π_ref
    targets = [(1 - fraction) * d for d in start]
    return {"fraction": fraction, "distance": targets,
            "methods": {name: {cost: [first_reach(r["distance"], r[cost], tg, below=True) for r, tg in zip(rs, targets)]
                               for cost in ("samples", "oracle_calls")} for name, rs in runs.items()}}


def run_lab(cfg: BanditConfig, log: Callable[[str], None] = print) -> dict:
    """Every kind × seed × method; the returned dict is what results.json holds."""
    cfg.check()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (C, A) tensors: threads only add overhead, and contention on a busy machine
    try:
        return _run_lab(cfg, log)
    finally:
        torch.set_num_threads(threads)


def _run_lab(cfg: BanditConfig, log: Callable[[str], None]) -> dict:
    out = {"config": asdict(cfg), "methods": {k: {"label": m.label, "converges_to": m.converges_to} for k, m in methods(cfg).items()},
           "kinds": {}}
    for kind in cfg.kinds:
        runs: dict[str, list[dict]] = {name: [] for name in out["methods"]}
        exact, star_win = [], []
        for seed in range(cfg.seeds):
            P, ref = make_game(kind, seed, cfg)
            pi_star = pref.equilibrium(ref, P, beta=cfg.beta)
            star_win.append(float(pref.win_rate_against(P, pi_star, ref).mean()))
            exact.append(run_exact(P, ref, pi_star, cfg))
            for i, (name, method) in enumerate(methods(cfg).items()):
                runs[name].append(run_method(method, P, ref, pi_star, cfg, seed=1000 * seed + i))
        log(f"[lab bandit] {kind}: {cfg.seeds} seeds done")
        out["kinds"][kind] = {
            "pi_star_win_rate": star_win,
            "exact": {key: [e[key] for e in exact] for key in exact[0]},
            "methods": {name: {key: [r[key] for r in rs] for key in rs[0]} for name, rs in runs.items()},
            "targets": [_to_target(f, star_win, runs) for f in cfg.target_fractions],
            "distance_targets": [_to_distance_target(f, runs) for f in cfg.target_fractions],
        }
    return out
