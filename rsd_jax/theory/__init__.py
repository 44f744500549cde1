"""Theory of the RSD mixture: closed forms over a discrete draft step distribution, the optimal (threshold)
weighting under a target-rate budget, and reward/target-rate frontiers of the Table-1 weighting families."""

from rsd_jax.theory.mixture import (
    ThresholdRule,
    acceptance_rate,
    beta_distribution,
    expected_reward,
    frontier,
    mean_reward,
    optimal_threshold,
    optimal_weighting,
    slack_optimum,
    target_rate,
    threshold_frontier,
    threshold_omega,
    weighting_values,
)

__all__ = [
    "ThresholdRule",
    "acceptance_rate",
    "beta_distribution",
    "expected_reward",
    "frontier",
    "mean_reward",
    "optimal_threshold",
    "optimal_weighting",
    "slack_optimum",
    "target_rate",
    "threshold_frontier",
    "threshold_omega",
    "weighting_values",
]
