"""The bandit lab's maths: equilibrium, duality gap, convergence, Best-of-2, WIND fits, costs, the CLI."""
import math

import numpy as np
import pytest
import torch

from prefdistill.judges.oracles import MatrixOracle
from prefdistill.lab import preferences as pref
from prefdistill.lab.bandit import BanditConfig, Env, fit, make_game, methods, run_method
from prefdistill.losses import log_quantile_reward
from prefdistill.losses.wind import wind_kl_loss, wind_nce_loss, wind_squared_loss

CFG = BanditConfig()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread():
    """(C, A) tensors: torch's thread pool only adds overhead (run_lab does the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _policy(rng, c, a):
    return torch.softmax(torch.from_numpy(2 * rng.standard_normal((c, a))), -1).numpy()


@pytest.mark.parametrize("kind", pref.KINDS)
def test_preference_matrices_are_complementary(kind):
    P = pref.preference_matrices(kind, contexts=3, actions=7, rng=np.random.default_rng(0))
    assert P.shape == (3, 7, 7)
    assert np.allclose(P + P.transpose(0, 2, 1), 1.0, atol=1e-15)
    assert np.all(np.diagonal(P, axis1=1, axis2=2) == 0.5) and P.min() >= 0 and P.max() <= 1


def test_cyclic_is_non_transitive_and_bt_transitive():
    rng = np.random.default_rng(1)
    cyclic = pref.preference_matrices("cyclic", contexts=5, actions=8, rng=rng)
    bt = pref.preference_matrices("bt", contexts=5, actions=8, rng=rng)
    assert all(pref.has_preference_cycle(p) for p in cyclic)
    assert not any(pref.has_preference_cycle(p) for p in bt)
    # the cycle detector itself, on rock-paper-scissors
    rps = np.array([[0.5, 1, 0], [0, 0.5, 1], [1, 0, 0.5]])
    assert pref.has_preference_cycle(rps) and not pref.has_preference_cycle(np.array([[0.5, 1, 1], [0, 0.5, 1], [0, 0, 0.5]]))


@pytest.mark.parametrize("kind", pref.KINDS)
def test_equilibrium_is_the_fixed_point(kind):
    P, ref = make_game(kind, 0, CFG)
    pi = pref.equilibrium(ref, P, beta=CFG.beta)
    gibbs = ref * np.exp(pref.win_rates(P, pi) / CFG.beta)  # π_ref·exp(P(y ≻ π*)/β), unnormalised
    assert np.abs(pi - gibbs / gibbs.sum(-1, keepdims=True)).max() < 1e-8
    # and a fixed point of the exact update, for any admissible step
    assert np.abs(pref.exact_update(pi, ref, P, beta=CFG.beta, eta=3.0) - pi).max() < 1e-8


@pytest.mark.parametrize("kind", pref.KINDS)
def test_duality_gap_nonnegative_and_zero_at_equilibrium(kind):
    P, ref = make_game(kind, 1, CFG)
    rng = np.random.default_rng(2)
    for _ in range(20):
        assert pref.duality_gap(_policy(rng, *ref.shape), ref, P, beta=CFG.beta).min() >= 0
    pi = pref.equilibrium(ref, P, beta=CFG.beta)
    assert np.abs(pref.duality_gap(pi, ref, P, beta=CFG.beta)).max() < 1e-10


def test_duality_gap_matches_its_definition():
    """gap(π) = max_π̃ f(π̃, π) − min_π̃ f(π, π̃), f(π, π') = P(π ≻ π') − β·KL(π‖π_ref) + β·KL(π'‖π_ref),
    with the best response π̃ ∝ π_ref·exp(P(· ≻ π)/β) checked against random challengers."""
    beta = CFG.beta
    P, ref = make_game("random", 3, CFG)
    rng = np.random.default_rng(4)
    pi = _policy(rng, *ref.shape)

    def f(a, b):
        return pref.win_rate_against(P, a, b) - beta * pref.kl(a, ref) + beta * pref.kl(b, ref)

    br = ref * np.exp(pref.win_rates(P, pi) / beta)
    br /= br.sum(-1, keepdims=True)
    for _ in range(20):
        other = _policy(rng, *ref.shape)
        assert np.all(f(br, pi) >= f(other, pi) - 1e-12) and np.all(f(pi, br) <= f(pi, other) + 1e-12)
    assert np.allclose(f(br, pi) - f(pi, br), pref.duality_gap(pi, ref, P, beta=beta), atol=1e-12)


@pytest.mark.parametrize("kind", pref.KINDS)
def test_exact_update_converges_linearly(kind):
    P, ref = make_game(kind, 2, CFG)
    star = pref.equilibrium(ref, P, beta=CFG.beta)
    pi, dist = ref.copy(), []
    for _ in range(40):
        pi = pref.exact_update(pi, ref, P, beta=CFG.beta, eta=1.0)
        dist.append(pref.kl(star, pi).mean())
    ratios = np.array(dist[6:]) / np.array(dist[5:-1])
    assert ratios.max() < 0.95  # geometric: every step past the fifth shrinks the distance by ≥ 5%
    assert dist[-1] < 5e-3 * dist[0]


def test_small_beta_bradley_terry_equilibrium_picks_the_best_action():
    rng = np.random.default_rng(5)
    rewards = rng.standard_normal((4, 8))
    ref = _policy(rng, 4, 8)
    pi = pref.equilibrium(ref, pref.bradley_terry(rewards), beta=1e-3)
    assert np.all(pi[np.arange(4), rewards.argmax(-1)] > 0.99)


def test_best_of_two_closed_form_and_monte_carlo():
    rng = np.random.default_rng(6)
    rewards = rng.standard_normal((1, 6))  # distinct a.s.
    pi = _policy(rng, 1, 6)
    bo2 = pref.best_of_two(pi, pref.bradley_terry(rewards))[0]
    below = np.array([pi[0][rewards[0] < r].sum() for r in rewards[0]])
    assert np.allclose(bo2, pi[0] ** 2 + 2 * pi[0] * below, atol=1e-15)
    assert math.isclose(bo2.sum(), 1.0, abs_tol=1e-12)
    pairs = rng.choice(6, size=(200_000, 2), p=pi[0])
    winners = np.where(rewards[0][pairs[:, 0]] >= rewards[0][pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    empirical = np.bincount(winners, minlength=6) / len(winners)
    assert np.abs(empirical - bo2).max() < 0.01


def test_squared_loss_zero_exactly_at_the_update_target():
    rng = np.random.default_rng(7)
    anchor, ref = torch.from_numpy(np.log(_policy(rng, 2, 5))), torch.from_numpy(np.log(_policy(rng, 2, 5)))
    win = torch.from_numpy(rng.uniform(size=(2, 5)))
    eta, beta = 2.0, 0.1
    centred = (1 - eta * beta) * anchor + eta * beta * ref + eta * (win - 0.5)  # log of the exact target, centred by ½
    assert torch.all(wind_squared_loss(centred, anchor, ref, win, eta=eta, beta=beta) == 0)
    moved = centred + torch.from_numpy(rng.normal(scale=0.1, size=(2, 5)))
    assert torch.all(wind_squared_loss(moved, anchor, ref, win, eta=eta, beta=beta) > 0)


@pytest.mark.parametrize("loss", [wind_kl_loss, wind_nce_loss])
def test_enumerated_fits_recover_the_exact_update(loss):
    """K = A: every action once, exact win rates. With π_t uniform this is the exact expectation over
    y ~ π_t, so the loss's minimiser over tabular policies is the exact π_{t+1}."""
    eta, beta = CFG.eta, CFG.beta
    P, ref = make_game("cyclic", 0, CFG)
    c, a = ref.shape
    pi_t = np.full((c, a), 1.0 / a)
    target = pref.exact_update(pi_t, ref, P, beta=beta, eta=eta)
    actions = torch.arange(a).expand(c, a)  # (C, A)
    anchor = torch.from_numpy(np.log(pi_t))
    ref_logps, win = torch.from_numpy(np.log(ref)), torch.from_numpy(pref.win_rates(P, pi_t))

    def objective(logps):
        return loss(logps.gather(1, actions), anchor, ref_logps, win, eta=eta, beta=beta).sum()

    fitted = torch.softmax(fit(anchor, objective, steps=300, lr=2.0), -1).numpy()
    assert np.abs(fitted - target).max() < 1e-6
    assert np.abs(pi_t - target).max() > 0.05  # the update moved far enough for the check to mean something


def test_sampled_wind_step_tracks_the_exact_update():
    cfg = BanditConfig(samples_per_iteration=400, iterations=1)
    P, ref = make_game("bt", 0, cfg)
    star = pref.equilibrium(ref, P, beta=cfg.beta)
    exact = pref.exact_update(ref, ref, P, beta=cfg.beta, eta=cfg.eta)
    for name in ("wind-squared", "wind-kl", "wind-nce"):
        out = run_method(methods(cfg)[name], P, ref, star, cfg, seed=0)
        assert out["distance"][1] < out["distance"][0]  # moved towards π*
    logits = {"logits": torch.from_numpy(np.log(ref))}
    env = Env(P, ref, cfg, np.random.default_rng(0), MatrixOracle(P))
    methods(cfg)["wind-kl"].step(logits, env)
    fitted = torch.softmax(logits["logits"], -1).numpy()
    assert pref.kl(exact, fitted).mean() < 0.25 * pref.kl(exact, ref).mean()


@pytest.mark.parametrize("kind", pref.KINDS)
def test_the_shipped_quantile_reward_is_exact_best_of_two_on_the_empirical_distribution(kind):
    """The p̂≤ of `prefdistill.losses.log_quantile_reward` (mid-ranks: ties, a sample with itself included, count
    half): over K samples, weights ∝ p̂≤ summed per action are exactly Best-of-2 of the samples' empirical distribution."""
    P, _ = make_game(kind, 0, CFG)
    rng = np.random.default_rng(8)
    y = rng.integers(0, CFG.actions, size=(CFG.contexts, 9))  # (C, K) with repeats
    matrices = np.stack([P[x][np.ix_(y[x], y[x])] for x in range(CFG.contexts)])
    p_le = log_quantile_reward(torch.from_numpy(matrices)).exp()  # (C, K)
    w = p_le / p_le.sum(-1, keepdim=True)
    per_action = np.stack([np.bincount(y[x], weights=w[x].numpy(), minlength=CFG.actions) for x in range(CFG.contexts)])
    empirical = np.stack([np.bincount(y[x], minlength=CFG.actions) / y.shape[1] for x in range(CFG.contexts)])
    assert np.allclose(per_action, pref.best_of_two(empirical, P), atol=1e-12)


@pytest.mark.parametrize("jeffreys_beta", [0.0, 1.0])
def test_bond_forward_and_backward_parts_both_distil_best_of_two(jeffreys_beta):
    """One iteration of the shipped BOND step (n = 2, 300 steps of one policy and two anchor samples per context,
    plain SGD): either half of the Jeffreys objective alone moves the policy most of the way to Best-of-2 of the anchor."""
    cfg = BanditConfig(samples_per_iteration=900, jeffreys_beta=jeffreys_beta, lr=0.1)
    P, ref = make_game("cyclic", 1, cfg)
    state = {"logits": torch.from_numpy(np.log(ref))}
    methods(cfg)["bond"].step(state, Env(P, ref, cfg, np.random.default_rng(0), MatrixOracle(P)))
    fitted = torch.softmax(state["logits"], -1).numpy()
    bo2 = pref.best_of_two(ref, P)
    assert np.abs(fitted - bo2).max() < 0.12  # SGD noise of single samples at lr 0.1
    assert pref.kl(bo2, fitted).mean() < 0.6 * pref.kl(bo2, ref).mean()


@pytest.mark.parametrize("name, calls_per_iteration", [("wind-nce", 6 * 5 // 2), ("sppo", 6 * 5 // 2), ("bond", 2 * 3),
                                                       ("jbond", 2 * 3)])
def test_costs_are_counted_per_context(name, calls_per_iteration):
    cfg = BanditConfig(samples_per_iteration=6, iterations=3, contexts=3, actions=4)
    P, ref = make_game("random", 0, cfg)
    out = run_method(methods(cfg)[name], P, ref, pref.equilibrium(ref, P, beta=cfg.beta), cfg, seed=0)
    assert out["samples"] == [0, 6, 12, 18]
    assert out["oracle_calls"] == [0, calls_per_iteration, 2 * calls_per_iteration, 3 * calls_per_iteration]


def test_every_method_moves_the_policy_up_in_win_rate():
    cfg = BanditConfig(iterations=8)
    P, ref = make_game("bt", 3, cfg)
    star = pref.equilibrium(ref, P, beta=cfg.beta)
    for name, method in methods(cfg).items():
        out = run_method(method, P, ref, star, cfg, seed=0)
        assert out["win_rate"][-1] > 0.53, name


def test_cli_writes_report_results_and_figures(tmp_path):
    from prefdistill.cli import main
    from prefdistill.io import read_json

    out = tmp_path / "lab"
    rc = main(["lab", "bandit", "--seeds", "2", "--contexts", "2", "--actions", "4", "--iterations", "3",
               "--samples-per-iteration", "3", "--kind", "cyclic", "--beta", "0.2", "--eta", "1", "--output-dir", str(out)])
    assert rc == 0
    results = read_json(out / "results.json")
    assert list(results["kinds"]) == ["cyclic"] and results["config"]["beta"] == 0.2
    assert len(results["kinds"]["cyclic"]["methods"]["bond"]["win_rate"]) == 2  # seeds
    report = (out / "report.md").read_text()
    assert "Samples to 90%" in report and "## Verdict" in report
    for png in ("exact_convergence.png", "gap_vs_samples.png", "win_rate_vs_samples.png", "win_rate_vs_oracle_calls.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC and f"({png})" in report


def test_cli_help_states_the_config_defaults():
    import argparse
    import dataclasses
    import re

    from prefdistill.cli import build_parser

    def sub(parser, name):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]

    bandit = sub(sub(build_parser(), "lab"), "bandit")
    defaults = {f.name: f.default for f in dataclasses.fields(BanditConfig)}
    stated = {a.dest: re.search(r"\(default ([^;)]+)", a.help).group(1) for a in bandit._actions if a.dest in defaults}
    assert len(stated) == 7
    for dest, text in stated.items():
        assert float(text) == defaults[dest], dest


def test_cli_rejects_a_bad_step_size(capsys):
    from prefdistill.cli import main

    assert main(["lab", "bandit", "--beta", "0.5", "--eta", "3", "--output-dir", "/nonexistent/never-written"]) == 2
    assert "eta*beta" in capsys.readouterr().err


def test_samples_to_target_censoring_and_comparison():
    from prefdistill.lab.bandit_report import compare, to_target

    assert to_target([12, 24, None], budget=60) == (32.0, 2, True)  # the miss is charged the budget: a lower bound
    assert to_target([12, 24], budget=60) == (18.0, 2, False)

    def method(costs):
        return {"samples": [[0, 12, 24, 36]] * len(costs)}, {"samples": costs, "oracle_calls": costs}

    table = {"a": [12, 24], "b": [36, None], "c": [None, None], "d": [24, 36]}
    results = {"kinds": {"bt": {"methods": {k: method(v)[0] for k, v in table.items()},
                                "targets": [{"fraction": 0.9, "methods": {k: method(v)[1] for k, v in table.items()}}]}}}
    assert compare(results, "bt", "a", "b") == "fewer"  # 18 < ≥ 36
    assert compare(results, "bt", "b", "a") == "more"
    assert compare(results, "bt", "b", "c") == "undecided"  # both censored
    assert compare(results, "bt", "d", "b") == "fewer"  # 30 < ≥ 36
    assert compare(results, "bt", "a", "a") == "undecided"
