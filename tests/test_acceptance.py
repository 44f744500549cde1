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


@pytest.mark.parametrize("budget", [0.0, 0.05, 0.3, 0.7, 0.999])
def test_calibrate_threshold_meets_the_budget(budget):
    rewards = np.random.default_rng(0).beta(5, 2, size=997)
    delta = acceptance.calibrate_threshold(rewards, budget)
    assert np.mean(rewards < delta) <= budget + 1e-12
    # the largest such δ: any larger reward as threshold breaks the budget
    assert np.mean(rewards <= delta) > budget


def test_calibrate_threshold_edge_cases():
    rewards = np.array([0.2, 0.5, 0.5, 0.9])
    assert acceptance.calibrate_threshold(rewards, 0.0) == 0.2
    assert acceptance.calibrate_threshold(rewards, 0.25) == 0.5
    assert acceptance.calibrate_threshold(rewards, 0.5) == 0.5  # tie: at most 2 rejected, only 1 is
    assert acceptance.calibrate_threshold(rewards, 0.75) == 0.9
    assert acceptance.calibrate_threshold(rewards, 1.0) == math.inf
    assert acceptance.calibrate_threshold(np.linspace(0, 1, 10), 0.7) == pytest.approx(7 / 9)
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError):
            acceptance.calibrate_threshold(rewards, bad)
    with pytest.raises(ValueError):
        acceptance.calibrate_threshold(np.array([]), 0.5)


def test_histogram_update_counts_masked_finite_rewards():
    hist = RewardHistogram.create(num_bins=4)
    rewards = jnp.asarray([0.0, 0.3, 0.3, 0.99, 1.0, jnp.nan, 0.6], jnp.float32)
    mask = jnp.asarray([True, True, False, True, True, True, True])
    np.testing.assert_array_equal(np.asarray(acceptance.update(hist, rewards, mask).counts), [1, 1, 1, 2])
    seeded = RewardHistogram.create(num_bins=4, prior_rewards=np.array([0.1, 0.9]))
    np.testing.assert_array_equal(np.asarray(seeded.counts), [1, 0, 0, 1])


def test_histogram_threshold_edge_cases():
    threshold = jax.jit(acceptance.threshold)
    empty = RewardHistogram.create(num_bins=8)
    assert float(threshold(empty, jnp.float32(0.3), jnp.float32(0.7))) == pytest.approx(0.7)
    hist = RewardHistogram.create(num_bins=4, prior_rewards=np.array([0.1, 0.3, 0.6, 0.9]))
    assert float(threshold(hist, jnp.float32(0.0), 0.7)) == 0.0
    assert float(threshold(hist, jnp.float32(0.5), 0.7)) == 0.5
    assert float(threshold(hist, jnp.float32(0.6), 0.7)) == 0.5
    assert float(threshold(hist, jnp.float32(1.0), 0.7)) == math.inf


@pytest.mark.parametrize("budget", [0.1, 0.3, 0.6])
def test_histogram_threshold_converges_to_the_calibrated_one(budget):
    num_bins = 256
    rewards = np.random.default_rng(1).beta(5, 2, size=200_000).astype(np.float32)
    hist = RewardHistogram.create(num_bins, rewards)
    delta = float(acceptance.threshold(hist, jnp.float32(budget), jnp.float32(0.7)))
    calibrated = acceptance.calibrate_threshold(rewards, budget)
    assert calibrated - 1 / num_bins - 1e-6 <= delta <= calibrated + 1e-6
    max_bin_mass = float(hist.counts.max() / hist.counts.sum())
    assert budget - max_bin_mass <= np.mean(rewards < delta) <= budget


def test_online_threshold_rejection_rate_stays_within_budget():
    """The loop's order: count this iteration's rewards, then set δ, then decide."""
    budget, num_bins, batch, iterations = 0.25, 64, 32, 300

    @jax.jit
    def run(rewards):  # [iterations, batch]
        def body(hist, r):
            hist = acceptance.update(hist, r, jnp.ones(r.shape, bool))
            delta = acceptance.threshold(hist, jnp.float32(budget), jnp.float32(0.7))
            params = AcceptanceParams.create(delta=delta)
            return hist, ~acceptance.accept("binary", params, r, jax.random.key(0))
        return jax.lax.scan(body, RewardHistogram.create(num_bins), rewards)

    rewards = np.random.default_rng(2).beta(2, 2, size=(iterations, batch)).astype(np.float32)
    hist, rejected = run(jnp.asarray(rewards))
    max_bin_mass = float(hist.counts.max() / hist.counts.sum())
    rate = float(np.mean(rejected))
    assert budget - 2 * max_bin_mass <= rate <= budget + max_bin_mass
