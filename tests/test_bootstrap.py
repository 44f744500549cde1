"""The bootstrap intervals of the theory experiments cover what they claim to on known distributions."""

import numpy as np
import pytest

from rsd_jax.theory import bootstrap


def coverage(level: float, trials: int = 300, n: int = 80) -> float:
    """How often the interval of the mean of n exponential(1) draws covers the true mean 1."""
    rng = np.random.default_rng(7)
    hits = [bootstrap.mean(rng.exponential(1.0, n), level=level, resamples=500, seed=t).covers(1.0)
            for t in range(trials)]
    return float(np.mean(hits))


def test_a_95_percent_interval_covers_the_mean_about_95_percent_of_the_time():
    assert 0.90 <= coverage(0.95) <= 0.985


def test_a_narrow_interval_covers_less_so_the_coverage_test_can_fail():
    assert 0.40 <= coverage(0.5) <= 0.60  # a 50% interval would fail the 95% test above


def test_pooled_steps_resample_problems_not_steps():
    # problems of 10 steps that are all right or all wrong: the steps are not independent, so the interval is as wide
    # as one over 40 problems, not one over 400 steps
    rng = np.random.default_rng(0)
    per_problem = [np.full(10, float(rng.random() < 0.5)) for _ in range(40)]
    est = bootstrap.step_mean(per_problem)
    p = est.value
    assert est.half_width > 0.8 * 1.96 * np.sqrt(p * (1 - p) / 40)
    assert est.n == 40 and est.low <= p <= est.high


def test_pooled_is_the_ratio_of_sums_and_seeded():
    sums, counts = [3.0, 1.0, 0.0, 4.0], [4, 2, 0, 5]
    a, b = bootstrap.pooled(sums, counts, seed=3), bootstrap.pooled(sums, counts, seed=3)
    assert a == b and a.value == pytest.approx(8 / 11)
    assert np.isnan(bootstrap.pooled([0.0], [0]).value)
    with pytest.raises(ValueError):
        bootstrap.pooled([1.0], [1, 2])
