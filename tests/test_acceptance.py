"""The acceptance criterion A_ω: weighting formulas, acceptance frequencies, one compile per parameter sweep,
and the budget-aware thresholds (host calibration and the online histogram)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsd_jax.decoding import acceptance
from rsd_jax.decoding.acceptance import AcceptanceParams, RewardHistogram

REWARDS = np.linspace(0.0, 1.0, 41, dtype=np.float32)
PARAMS = dict(delta=0.55, p=0.3, alpha=12.0)


def _formula(kind: str, r: np.ndarray, delta: float, p: float, alpha: float) -> np.ndarray:
    """ω of paper Table 1, written out in float64: [n]."""
    r = r.astype(np.float64)
    return {
        "constant": np.full_like(r, p),
        "binary": (r >= np.float32(delta)).astype(np.float64),
        "clipping": np.minimum(1.0, np.maximum(0.0, r)),
        "sigmoidal": np.maximum(0.0, r / (1.0 + r)),
        "logistic": 1.0 / (1.0 + np.exp(-alpha * (r - delta))),
    }[kind]


@pytest.mark.parametrize("kind", acceptance.WEIGHTINGS)
def test_weight_matches_its_formula(kind):
    omega = acceptance.weight(kind, AcceptanceParams.create(**PARAMS), jnp.asarray(REWARDS))
    assert omega.dtype == jnp.float32 and omega.shape == REWARDS.shape
    np.testing.assert_allclose(np.asarray(omega), _formula(kind, REWARDS, **PARAMS), atol=1e-6)


def test_unknown_weighting_fails_at_trace_time():
    with pytest.raises(ValueError, match="cubic"):
        acceptance.weight("cubic", AcceptanceParams.create(), jnp.zeros(3))


@pytest.mark.parametrize("kind", [k for k in acceptance.WEIGHTINGS if k != "binary"])
def test_acceptance_frequency_is_omega(kind):
    draws = 20000
    params = AcceptanceParams.create(**PARAMS)
    rewards = jnp.broadcast_to(jnp.asarray(REWARDS), (draws, REWARDS.size))
    accepted = jax.jit(acceptance.accept, static_argnums=0)(kind, params, rewards, jax.random.key(0))
    freq = np.asarray(accepted).mean(axis=0)
    omega = _formula(kind, REWARDS, **PARAMS)
    sigma = np.sqrt(omega * (1 - omega) / draws)
    assert np.all(np.abs(freq - omega) <= 5 * sigma + 1e-12)


def test_stochastic_acceptance_is_exact_at_zero_and_one():
    params = AcceptanceParams.create(p=0.0)
    rewards = jnp.asarray(np.tile([0.0, 1.0], 5000), jnp.float32)
    clip = np.asarray(acceptance.accept("clipping", params, rewards, jax.random.key(1)))
    assert not clip[0::2].any() and clip[1::2].all()
    assert not np.asarray(acceptance.accept("constant", params, rewards, jax.random.key(2))).any()


def test_binary_is_deterministic():
    params = AcceptanceParams.create(delta=0.5)
    rewards = jnp.asarray([0.0, 0.4999, 0.5, 0.9, 1.0, jnp.nan], jnp.float32)
    runs = [np.asarray(acceptance.accept("binary", params, rewards, jax.random.key(s))) for s in range(5)]
    for run in runs:
        np.testing.assert_array_equal(run, [False, False, True, True, True, False])


def test_parameter_sweep_compiles_once():
    traces = []

    @jax.jit
    def acceptance_rate(params, rewards, key):
        traces.append(1)
        return jnp.mean(acceptance.accept("logistic", params, rewards, key))

    rewards = jnp.asarray(REWARDS)
    rates = [float(acceptance_rate(AcceptanceParams.create(delta=d, p=0.1 * d, alpha=5 + d), rewards,
                                   jax.random.key(0))) for d in np.linspace(0, 1, 6)]
    assert len(traces) == 1 and acceptance_rate._cache_size() == 1
    assert rates[0] > rates[-1]


def test_histogram_update_counts_masked_finite_rewards():
    hist = RewardHistogram.create(num_bins=4)
    rewards = jnp.asarray([0.0, 0.3, 0.3, 0.99, 1.0, jnp.nan, 0.6], jnp.float32)
    mask = jnp.asarray([True, True, False, True, True, True, True])
    np.testing.assert_array_equal(np.asarray(acceptance.update(hist, rewards, mask).counts), [1, 1, 1, 2])
    seeded = RewardHistogram.create(num_bins=4, prior_rewards=np.array([0.1, 0.9]))
    np.testing.assert_array_equal(np.asarray(seeded.counts), [1, 0, 0, 1])


def _share_accepted(rewards: np.ndarray, delta: float, q: float) -> float:
    """The expected accepted share of the randomised threshold over rewards [n]."""
    return float(np.mean(rewards > delta) + q * np.mean(rewards == delta))


@pytest.mark.parametrize("budget", [0.0, 0.05, 0.3, 0.7, 0.999, 1.0])
def test_rule_of_rewards_spends_exactly_the_budget(budget):
    rewards = np.round(np.random.default_rng(0).beta(5, 2, size=997), 2)  # rounded: atoms with ties
    delta, q = acceptance.rule_of_rewards(rewards, budget)
    assert 0.0 <= q <= 1.0
    assert _share_accepted(rewards, delta, q) == pytest.approx(1.0 - budget, abs=1e-9)
    if budget < 1.0:  # δ_γ is the largest atom with P(r >= δ) >= γ
        assert np.mean(rewards >= delta) >= 1.0 - budget - 1e-9
        assert np.mean(rewards > delta) < 1.0 - budget


def test_rule_of_rewards_edge_cases():
    rewards = np.array([0.2, 0.5, 0.5, 0.9])
    assert acceptance.rule_of_rewards(rewards, 0.0) == (0.2, 1.0)
    assert acceptance.rule_of_rewards(rewards, 0.25) == (0.5, 1.0)
    assert acceptance.rule_of_rewards(rewards, 0.5) == (0.5, 0.5)  # the tie at 0.5: one of its two steps
    assert acceptance.rule_of_rewards(rewards, 0.75) == (0.9, 1.0)
    assert acceptance.rule_of_rewards(rewards, 1.0) == (math.inf, 0.0)
    # μ_M below δ_γ: the budget does not bind, accept r >= μ_M; above it, it binds
    assert acceptance.rule_of_rewards(rewards, 0.25, mu_target=0.3) == (0.3, 1.0)
    assert acceptance.rule_of_rewards(rewards, 0.5, mu_target=0.7) == (0.5, 0.5)
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="rsd.budget"):
            acceptance.rule_of_rewards(rewards, bad)
    with pytest.raises(ValueError, match="at least one reward"):
        acceptance.rule_of_rewards(np.array([]), 0.5)


@pytest.mark.parametrize("mu_target", [None, 0.605, 0.955])  # between atoms: float32 and float64 agree
@pytest.mark.parametrize("budget", [0.1, 0.2, 0.3, 0.5])
def test_theory_and_engine_give_the_same_rule(budget, mu_target):
    """mixture.optimal_threshold / optimal_weighting (numpy, float64) and the engine's calibrated rule and its jitted
    rule over the same atoms (jax, float32) return the same (δ, q)."""
    from rsd_jax.theory import mixture

    rewards = np.round(np.random.default_rng(3).beta(4, 2, size=500), 2)
    atoms, counts = np.unique(rewards, return_counts=True)
    probs = counts / counts.sum()
    gamma = 1.0 - budget
    theory = (mixture.optimal_threshold(atoms, probs, gamma) if mu_target is None
              else mixture.optimal_weighting(atoms, probs, gamma, mu_target))
    host = acceptance.rule_of_rewards(rewards, budget, mu_target=mu_target)
    jitted = jax.jit(lambda a, c, g, m: acceptance.threshold_rule(a, c, g, mu_target=m))(
        jnp.asarray(atoms, jnp.float32), jnp.asarray(counts, jnp.float32), jnp.float32(gamma),
        jnp.float32(np.inf if mu_target is None else mu_target))
    assert host[0] == pytest.approx(theory.delta) and host[1] == pytest.approx(theory.q, abs=1e-9)
    assert float(jitted[0]) == pytest.approx(theory.delta, abs=1e-6)
    assert float(jitted[1]) == pytest.approx(theory.q, abs=1e-5)
    binds = mu_target is None or mu_target >= mixture.optimal_threshold(atoms, probs, gamma).delta
    assert bool(jitted[2]) == binds and (binds or theory == (mu_target, 1.0))


@pytest.mark.parametrize("q", [0.0, 0.25, 0.7, 1.0])
def test_acceptance_at_the_atom_is_q(q):
    """Many draws of rewards equal to δ are accepted with frequency q (binomial 5σ); above always, below never."""
    draws, delta = 40_000, np.float32(0.6)
    rewards = jnp.asarray(np.concatenate([np.full(draws, delta), [0.59, 0.61, np.nan]]), jnp.float32)
    accepted = np.asarray(jax.jit(acceptance.budget_accept)(rewards, delta, jnp.float32(q), jax.random.key(7)))
    freq = accepted[:draws].mean()
    assert abs(freq - q) <= 5 * np.sqrt(q * (1 - q) / draws) + 1e-12
    np.testing.assert_array_equal(accepted[draws:], [False, True, False])


def test_acceptance_in_the_atoms_bin_is_q_online():
    """Binned (the online histogram): rewards in δ's bin are accepted with frequency q, higher bins always."""
    draws, bins = 40_000, 4
    rewards = jnp.asarray(np.concatenate([np.random.default_rng(0).uniform(0.5, 0.75, draws), [0.49, 0.8, 1.0]]),
                          jnp.float32)
    accepted = np.asarray(acceptance.budget_accept(rewards, jnp.float32(0.5), jnp.float32(0.3), jax.random.key(1),
                                                   num_bins=bins, binned=jnp.bool_(True)))
    assert abs(accepted[:draws].mean() - 0.3) <= 5 * np.sqrt(0.3 * 0.7 / draws)
    np.testing.assert_array_equal(accepted[draws:], [False, True, True])
    none = acceptance.budget_accept(rewards, jnp.float32(np.inf), jnp.float32(0.0), jax.random.key(1),
                                    num_bins=bins, binned=jnp.bool_(True))
    assert not np.asarray(none).any()  # budget 1: +inf accepts nothing


def test_histogram_rule_edge_cases():
    rule = jax.jit(lambda h, b, m: acceptance.histogram_rule(h, b, mu_target=m, default_delta=jnp.float32(0.7)))
    inf = jnp.float32(np.inf)
    empty = RewardHistogram.create(num_bins=8)
    assert [float(v) for v in rule(empty, jnp.float32(0.3), inf)] == pytest.approx([0.7, 1.0, 0.0])
    hist = RewardHistogram.create(num_bins=4, prior_rewards=np.array([0.1, 0.3, 0.6, 0.9]))
    assert [float(v) for v in rule(hist, jnp.float32(0.0), inf)] == pytest.approx([0.0, 1.0, 1.0])
    assert [float(v) for v in rule(hist, jnp.float32(0.5), inf)] == pytest.approx([0.5, 1.0, 1.0])
    assert [float(v) for v in rule(hist, jnp.float32(0.6), inf)] == pytest.approx([0.5, 0.6, 1.0], abs=1e-6)
    assert float(rule(hist, jnp.float32(1.0), inf)[0]) == math.inf
    assert [float(v) for v in rule(hist, jnp.float32(0.6), jnp.float32(0.3))] == pytest.approx([0.3, 1.0, 0.0])


@pytest.mark.parametrize("budget", [0.1, 0.3, 0.6])
def test_online_rule_spends_the_budget(budget):
    """The loop's order (count this iteration's rewards, set (δ, q), decide): the target's share equals the budget
    within sampling error, one bin's randomisation included (no bin-width slack)."""
    num_bins, batch, iterations = 64, 32, 300

    @jax.jit
    def run(rewards, key):  # [iterations, batch]
        def body(carry, r):
            hist, key = carry
            key, sub = jax.random.split(key)
            rule = acceptance.Rule(weighting="binary", mode="online", params=AcceptanceParams.create(),
                                   budget=jnp.float32(budget), mu_target=jnp.float32(np.inf))
            accepted, _, hist = acceptance.decide(rule, r, jax.random.uniform(sub, r.shape), histogram=hist,
                                                  live=jnp.ones(r.shape, bool))
            return (hist, key), ~accepted
        return jax.lax.scan(body, (RewardHistogram.create(num_bins), key), rewards)

    rewards = np.random.default_rng(2).beta(2, 2, size=(iterations, batch)).astype(np.float32)
    _, rejected = run(jnp.asarray(rewards), jax.random.key(0))
    n = rejected.size
    assert abs(float(np.mean(rejected)) - budget) <= 4 * np.sqrt(budget * (1 - budget) / n) + 0.01


def test_no_budget_is_the_plain_binary_rule():
    rewards = jnp.asarray([0.0, 0.4999, 0.5, 0.9, jnp.nan], jnp.float32)
    params = AcceptanceParams.create(delta=0.5, q=0.0)  # q is ignored without a budget
    rule = acceptance.Rule(weighting="binary", mode="none", params=params, budget=jnp.float32(0.3),
                           mu_target=jnp.float32(np.inf))
    accepted, delta, _ = acceptance.decide(rule, rewards, jnp.zeros(5), histogram=RewardHistogram.create(4),
                                           live=jnp.ones(5, bool))
    np.testing.assert_array_equal(np.asarray(accepted), [False, False, True, True, False])
    np.testing.assert_array_equal(np.asarray(delta), [0.5] * 5)
