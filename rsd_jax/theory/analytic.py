"""The analytic experiment's computation: the reward / target-rate frontier of every Table-1 weighting family
against the optimal (randomised threshold) frontier, for Beta and discrete draft-reward distributions."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from rsd_jax.theory import mixture as th

FAMILIES = ("binary", "constant", "logistic", "clipping", "sigmoidal")
RATES = np.linspace(0, 1, 101)  # the target rates at which the threshold frontier is drawn

Distribution = tuple[np.ndarray, np.ndarray]  # (rewards [N], probabilities [N])


def cell_name(distribution: str, mu_target: float) -> str:
    """The key of one (distribution, μ_M) case in the summary."""
    return f"{distribution}, mu_M={mu_target:g}"


def frontier_check(rewards: np.ndarray, probs: np.ndarray, mu: float) -> dict[str, Any]:
    """Each family's frontier and the threshold frontier at the same target rates; the largest amount by
    which a family beats the threshold (<= 0 up to rounding: the threshold is optimal)."""
    out = {}
    for kind in FAMILIES:
        rates, values = th.frontier(kind, rewards, probs, mu)
        best = th.threshold_frontier(rewards, probs, mu, rates)
        out[kind] = {"target_rate": rates.tolist(), "expected_reward": values.tolist(),
                     "threshold_reward": best.tolist(), "max_excess_over_threshold": float(np.max(values - best))}
    delta, value = th.slack_optimum(rewards, probs, mu)
    out["slack_optimum"] = {"delta": delta, "expected_reward": value, "mu_draft": th.mean_reward(rewards, probs),
                            "mu_target": mu}
    return out


def distributions(beta: Sequence[Sequence[float]], discrete_rewards: Sequence[float],
                  discrete_probs: Sequence[float]) -> dict[str, Distribution]:
    """The draft-reward distributions by name: Beta(a, b) on a 200-point grid, then the discrete one (its
    probabilities normalised)."""
    cases = {f"beta({a:g},{b:g})": th.beta_distribution(a, b, 200) for a, b in beta}
    probs = np.asarray(discrete_probs, np.float64)
    cases["discrete"] = (np.asarray(discrete_rewards, np.float64), probs / probs.sum())
    return cases


@dataclasses.dataclass(frozen=True)
class Frontiers:
    """Every (distribution, μ_M) case: each family's frontier against the threshold's, and the two checks."""

    distributions: tuple[str, ...]
    mu_target: tuple[float, ...]
    cases: dict[str, dict[str, Any]]  # cell_name -> frontier_check
    threshold_curves: dict[str, np.ndarray]  # cell_name -> [len(RATES)] the threshold frontier's reward
    max_excess_over_threshold: float  # the largest excess of any family over the threshold (rounding)
    min_slack_bound_margin: float  # min over cases of E_RSD[r] - max(μ_m, μ_M) at δ = μ_M (>= 0: the bound holds)

    def summary(self) -> dict:
        return {"cases": self.cases, "max_excess_over_threshold": self.max_excess_over_threshold,
                "min_slack_bound_margin": self.min_slack_bound_margin}


def frontiers(beta: Sequence[Sequence[float]], mu_target: Sequence[float], discrete_rewards: Sequence[float],
              discrete_probs: Sequence[float]) -> Frontiers:
    cases = distributions(beta, discrete_rewards, discrete_probs)
    checks, curves = {}, {}
    for mu in mu_target:
        for name, (rewards, probs) in cases.items():
            checks[cell_name(name, mu)] = frontier_check(rewards, probs, mu)
            curves[cell_name(name, mu)] = th.threshold_frontier(rewards, probs, mu, RATES)
    worst = max(check[kind]["max_excess_over_threshold"] for check in checks.values() for kind in FAMILIES)
    optima = [check["slack_optimum"] for check in checks.values()]
    bound = min(opt["expected_reward"] - max(opt["mu_draft"], opt["mu_target"]) for opt in optima)
    return Frontiers(tuple(cases), tuple(mu_target), checks, curves, worst, bound)
