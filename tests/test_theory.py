"""The analytic theory of the RSD mixture: threshold optimality (property tests over random discrete
distributions), the budget and slack optima, frontiers, and agreement with Monte Carlo runs of the engine's
acceptance criterion."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsd_jax import theory
from rsd_jax.decoding import acceptance

TOL = 1e-9
FEW = settings(max_examples=200, deadline=None)
GRID = (0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0)  # shared grid values make ties likely


@st.composite
def distributions(draw, max_atoms: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A discrete draft distribution: rewards [n] in [0, 1] (with ties) and probs [n] (some zero)."""
    n = draw(st.integers(1, max_atoms))
    reward = st.one_of(st.sampled_from(GRID), st.floats(0.0, 1.0))
    rewards = np.array(draw(st.lists(reward, min_size=n, max_size=n)))
    weight = st.one_of(st.just(0.0), st.floats(0.01, 1.0))
    weights = np.array(draw(st.lists(weight, min_size=n, max_size=n)))
    if weights.sum() == 0:
        weights[0] = 1.0
    return rewards, weights / weights.sum()


def omegas_for(n: int) -> st.SearchStrategy:
    return st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).map(np.array)


def _rule_reward(rewards, probs, rule, mu_target) -> float:
    return theory.expected_reward(rewards, probs, theory.threshold_omega(rewards, *rule), mu_target)


@FEW
@given(st.data(), distributions(), st.floats(0.0, 1.0))
def test_threshold_beats_any_weighting_with_the_same_budget(data, dist, mu_target):
    rewards, probs = dist
    omega = data.draw(omegas_for(rewards.size))
    gamma = min(1.0, theory.acceptance_rate(omega, probs))
    rule = theory.optimal_threshold(rewards, probs, gamma)
    best = theory.threshold_omega(rewards, *rule)
    assert theory.acceptance_rate(best, probs) == pytest.approx(gamma, abs=TOL)
    assert (theory.expected_reward(rewards, probs, best, mu_target)
            >= theory.expected_reward(rewards, probs, omega, mu_target) - TOL)


@FEW
@given(distributions(), st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)))
def test_delta_gamma_meets_the_budget_with_equality(dist, gamma):
    rewards, probs = dist
    delta, q = theory.optimal_threshold(rewards, probs, gamma)
    assert 0.0 <= q <= 1.0
    assert theory.acceptance_rate(theory.threshold_omega(rewards, delta, q), probs) == pytest.approx(gamma, abs=TOL)
    if gamma > 0:  # δ_γ is the largest δ with P(r >= δ) >= γ: no larger atom with mass reaches γ
        assert probs[rewards >= delta].sum() >= gamma - TOL
        assert probs[rewards > delta].sum() < gamma + TOL
        assert probs[rewards == delta].sum() > 0


@FEW
@given(distributions(), st.floats(0.0, 1.0))
def test_slack_threshold_beats_both_models(dist, mu_target):
    rewards, probs = dist
    delta, value = theory.slack_optimum(rewards, probs, mu_target)
    assert delta == mu_target
    assert value >= max(theory.mean_reward(rewards, probs), mu_target) - 1e-12


@FEW
@given(st.data(), distributions(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_optimal_weighting_under_the_inequality_budget(data, dist, gamma, mu_target):
    rewards, probs = dist
    rule = theory.optimal_weighting(rewards, probs, gamma, mu_target)
    best = theory.threshold_omega(rewards, *rule)
    assert rule.delta == min(mu_target, theory.optimal_threshold(rewards, probs, gamma).delta)
    assert theory.acceptance_rate(best, probs) >= gamma - TOL
    omega = data.draw(omegas_for(rewards.size))
    if theory.acceptance_rate(omega, probs) >= gamma:
        assert (theory.expected_reward(rewards, probs, best, mu_target)
                >= theory.expected_reward(rewards, probs, omega, mu_target) - TOL)


@settings(max_examples=50, deadline=None)
@given(distributions(), st.floats(0.0, 1.0), st.floats(1.0, 50.0))
def test_threshold_frontier_lies_above_every_family(dist, mu_target, alpha):
    rewards, probs = dist
    for kind in acceptance.WEIGHTINGS:
        rates, values = theory.frontier(kind, rewards, probs, mu_target, np.linspace(0, 1, 21), alpha=alpha)
        assert rates.shape == values.shape == ((1,) if kind in ("clipping", "sigmoidal") else (21,))
        assert np.all(theory.threshold_frontier(rewards, probs, mu_target, rates) >= values - TOL)


def test_optimal_threshold_edge_cases():
    rewards = np.array([0.9, 0.5, 0.5, 0.2, 0.95])
    probs = np.array([0.2, 0.1, 0.3, 0.4, 0.0])  # ties at 0.5 (mass 0.4); 0.95 has no mass
    assert theory.optimal_threshold(rewards, probs, 0.0) == (math.inf, 0.0)
    assert theory.optimal_threshold(rewards, probs, 1.0) == (0.2, 1.0)
    assert theory.optimal_threshold(rewards, probs, 0.2) == (0.9, 1.0)
    delta, q = theory.optimal_threshold(rewards, probs, 0.4)
    assert delta == 0.5 and q == pytest.approx(0.5)
    np.testing.assert_allclose(theory.threshold_omega(rewards, delta, q), [1, 0.5, 0.5, 0, 1])
    with pytest.raises(ValueError):
        theory.optimal_threshold(rewards, probs, 1.5)
    with pytest.raises(ValueError):
        theory.optimal_threshold(rewards, probs * 2, 0.5)


def test_slack_and_budget_optima_example():
    rewards, probs, mu_target = np.array([0.2, 0.6, 0.9]), np.array([0.5, 0.25, 0.25]), 0.5
    assert theory.slack_optimum(rewards, probs, mu_target) == pytest.approx((0.5, 0.5 * 0.5 + 0.15 + 0.225))
    assert theory.optimal_weighting(rewards, probs, 0.3, mu_target) == (0.5, 1.0)  # slack: δ = μ_M
    assert theory.optimal_weighting(rewards, probs, 0.8, mu_target) == pytest.approx((0.2, 0.6))  # binding


@pytest.mark.parametrize("kind", acceptance.WEIGHTINGS)
def test_weighting_values_match_the_engine(kind):
    rewards = np.linspace(0, 1, 33, dtype=np.float32)
    engine = acceptance.weight(kind, acceptance.AcceptanceParams.create(delta=0.5, p=0.3, alpha=9.0),
                               jnp.asarray(rewards))
    closed = theory.weighting_values(kind, rewards, delta=0.5, p=float(np.float32(0.3)), alpha=9.0)
    np.testing.assert_allclose(np.asarray(engine), closed, atol=1e-6)


def test_frontier_of_parameterless_families_and_beta_helper():
    rewards, probs = theory.beta_distribution(2.0, 5.0, 200)
    assert probs.sum() == pytest.approx(1.0) and np.all(probs >= 0)
    assert theory.mean_reward(rewards, probs) == pytest.approx(2 / 7, abs=1e-4)
    rates, values = theory.frontier("clipping", rewards, probs, 0.5)
    assert rates == pytest.approx([1 - 2 / 7], abs=1e-4) and values.shape == (1,)
    rates, _ = theory.frontier("constant", rewards, probs, 0.5, np.array([0.0, 0.25, 1.0]))
    np.testing.assert_allclose(rates, [1.0, 0.75, 0.0], atol=1e-12)


@pytest.mark.parametrize("kind", acceptance.WEIGHTINGS)
def test_closed_forms_agree_with_monte_carlo_of_the_engine(kind):
    """Draft rewards sampled from the discrete distribution, accepted by the jitted engine, rejected steps
    replaced by a target step sampled from the target's reward distribution: E[accept] and E_RSD[r]."""
    draws = 20000
    atoms = np.array([0.05, 0.3, 0.55, 0.7, 0.8, 0.95], np.float32)
    probs = np.array([0.1, 0.2, 0.15, 0.2, 0.2, 0.15])
    target_atoms, target_probs = np.array([0.4, 0.75, 0.9]), np.array([0.2, 0.5, 0.3])
    mu_target = float(target_probs @ target_atoms)
    delta, p, alpha = (float(np.float32(v)) for v in (0.7, 0.35, 10.0))  # 0.7 is an atom: tie on binary

    rng = np.random.default_rng(0)
    draft = rng.choice(atoms, size=draws, p=probs)
    target = rng.choice(target_atoms, size=draws, p=target_probs)
    accept = jax.jit(acceptance.accept, static_argnums=0)
    accepted = np.asarray(accept(kind, acceptance.AcceptanceParams.create(delta=delta, p=p, alpha=alpha),
                                 jnp.asarray(draft), jax.random.key(3)))
    realised = np.where(accepted, draft.astype(np.float64), target)

    omega = theory.weighting_values(kind, atoms, delta=delta, p=p, alpha=alpha)
    rate = theory.acceptance_rate(omega, probs)
    value = theory.expected_reward(atoms, probs, omega, mu_target)
    assert abs(accepted.mean() - rate) <= 5 * math.sqrt(rate * (1 - rate) / draws) + 1e-6
    assert abs(realised.mean() - value) <= 5 * realised.std() / math.sqrt(draws) + 1e-6
