r"""The RSD mixture in closed form, for one context z, over a discrete draft step distribution.

The draft's step distribution is given by its rewards: atoms `rewards` [n] (in [0, 1]) with `probs` [n]
(nonnegative, summing to 1; an empirical sample is equal probs; ties and zero-probability atoms are allowed).
The target enters only through its expected step reward μ_M = E_{P_M}[r]. A weighting is given by its values
ω [n] in [0, 1] on the atoms (any ω, not only the Table-1 families). μ_m = E_m[r] is the draft's mean reward.

Derivations (the paper's theory section and its abstract's threshold-optimality claim, reconstructed:
the steps below are ours).

(a) Objective. P_RSD(y) = ω(r(y)) P_m(y) + ν P_M(y) with ν = 1 - E_m[ω] (the target rate), so
        E_RSD[r] = E_m[ω r] + ν μ_M = μ_M + E_m[ω (r - μ_M)].

(b) Threshold optimality under the equality budget E_m[ω] = γ. ν μ_M is then fixed, so one maximises E_m[ω r]
    over 0 <= ω <= 1 with E_m[ω] = γ: a fractional knapsack in which every atom has cost = its probability and
    value per unit cost = its reward, so the best fills the highest rewards first. Formally, let
    δ_γ = max{δ : P(r >= δ) >= γ} (the upper-γ quantile) and ω* = 1 on r > δ_γ, q on r = δ_γ, 0 below, with q
    chosen so that E[ω*] = γ. For any feasible ω, (ω* - ω)(r - δ_γ) >= 0 pointwise: above δ_γ both factors
    are >= 0, below both are <= 0, at δ_γ the second is 0. Taking expectations (exchange argument),
        E[ω* r] - E[ω r] >= δ_γ (E[ω*] - E[ω]) = 0.
    So the randomised threshold at δ_γ is optimal; it is deterministic (q = 1) unless an atom straddles the budget.

(c) Inequality budget E_m[ω] >= γ ("the target writes at most a 1 - γ fraction"). Maximise E[ω (r - μ_M)]
    subject to E[ω] >= γ; the Lagrangian with multiplier λ >= 0,
        L = E[ω (r - μ_M + λ)] - λ γ,
    is maximised pointwise by ω = 1(r > μ_M - λ) (anything on r = μ_M - λ). KKT: either λ = 0, threshold μ_M,
    feasible iff P(r >= μ_M) >= γ, i.e. μ_M <= δ_γ; or λ > 0, the budget binds and the threshold is δ_γ < μ_M.
    Hence δ* = min(μ_M, δ_γ): accept a draft step iff its reward beats the target's mean, unless that
    would call the target too often.

(d) The bound at δ = μ_M (binary, deterministic): E_RSD[r] >= max(μ_m, μ_M). Proof: by (a),
        E_RSD[r] - μ_M = E_m[1(r >= μ_M)(r - μ_M)] >= 0, and
        E_RSD[r] - μ_m = E_m[1(r < μ_M)(μ_M - r)] >= 0,
    since each integrand is nonnegative where its indicator is 1.

Frontiers plot E_RSD[r] against the target rate ν. By (b) the randomised-threshold curve bounds every weighting
with the same ν from above. Families with a parameter trace a curve (constant: p; binary: δ; logistic: δ at a fixed
α); clipping and sigmoidal have none and give a single point each.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from rsd_jax.decoding.acceptance import (DEFAULT_ALPHA, DEFAULT_DELTA, DEFAULT_P, omega, threshold_rule,
                                         threshold_weight)

_PROB_TOLERANCE = 1e-6  # |sum(probs) - 1| allowed


class ThresholdRule(NamedTuple):
    """Accept r > delta always, r == delta with probability q, r < delta never."""

    delta: float
    q: float


def _distribution(rewards: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 copies of rewards [n] and probs [n]."""
    r = np.asarray(rewards, np.float64)
    pr = np.asarray(probs, np.float64)
    if r.ndim != 1 or r.shape != pr.shape or r.size == 0:
        raise ValueError(f"rewards and probs must be non-empty 1-D arrays of one shape, got {r.shape}, {pr.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    if np.any(pr < 0) or abs(pr.sum() - 1.0) > _PROB_TOLERANCE:
        raise ValueError(f"probs must be nonnegative and sum to 1, got sum {pr.sum()}")
    return r, pr


def _check_gamma(gamma: float) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")


def weighting_values(kind: str, rewards: np.ndarray, delta: float = DEFAULT_DELTA, p: float = DEFAULT_P,
                     alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """ω(r) [n] of a Table-1 family in float64: the engine's formulas (acceptance.omega) with numpy."""
    return omega(kind, np.asarray(rewards, np.float64), delta=delta, p=float(p), alpha=alpha, xp=np)


def mean_reward(rewards: np.ndarray, probs: np.ndarray) -> float:
    """μ = E[r] of the distribution (rewards [n], probs [n])."""
    r, pr = _distribution(rewards, probs)
    return float(pr @ r)


def acceptance_rate(omega_values: np.ndarray, probs: np.ndarray) -> float:
    """E_m[ω]: the fraction of steps the draft writes. omega_values [n], probs [n]."""
    return float(np.asarray(probs, np.float64) @ np.asarray(omega_values, np.float64))


def target_rate(omega_values: np.ndarray, probs: np.ndarray) -> float:
    """ν = 1 - E_m[ω]: the fraction of steps the target writes."""
    return 1.0 - acceptance_rate(omega_values, probs)


def expected_reward(rewards: np.ndarray, probs: np.ndarray, omega_values: np.ndarray, mu_target: float) -> float:
    """E_RSD[r] = E_m[ω r] + ν μ_M for rewards [n], probs [n], omega_values [n]."""
    r, pr = _distribution(rewards, probs)
    omega = np.asarray(omega_values, np.float64)
    return float(pr @ (omega * r) + (1.0 - pr @ omega) * mu_target)


def _atoms(rewards: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct atoms [k] ascending and their total probability [k] (ties merged)."""
    r, pr = _distribution(rewards, probs)
    atoms, inverse = np.unique(r, return_inverse=True)
    return atoms, np.bincount(inverse, weights=pr, minlength=atoms.size)


def optimal_threshold(rewards: np.ndarray, probs: np.ndarray, gamma: float) -> ThresholdRule:
    """The optimum under E_m[ω] = gamma (derivation (b)): δ_γ = max{δ : P(r >= δ) >= γ} and q in [0, 1], the
    acceptance probability on the atoms at δ_γ, such that P(r > δ_γ) + q P(r = δ_γ) = γ.

    δ_γ is always an atom of positive probability, except gamma = 0, where the largest δ is +inf (q = 0: accept
    nothing). gamma = 1 gives the smallest atom of positive probability with q = 1. Tied atoms share q.
    Computed by the engine's own rule (rsd_jax.decoding.acceptance.threshold_rule, here with numpy).
    """
    _check_gamma(gamma)
    delta, q, _ = threshold_rule(*_atoms(rewards, probs), gamma, xp=np)
    return ThresholdRule(delta=float(delta), q=float(q))


def threshold_omega(rewards: np.ndarray, delta: float, q: float) -> np.ndarray:
    """ω [n] of the randomised threshold: 1 where r > delta, q where r == delta, 0 below (the engine's
    acceptance.threshold_weight, with numpy in float64)."""
    return threshold_weight(np.asarray(rewards, np.float64), delta, float(q), xp=np)


def slack_optimum(rewards: np.ndarray, probs: np.ndarray, mu_target: float) -> tuple[float, float]:
    """The optimum without a binding budget (derivation (c), λ = 0): δ = μ_M, deterministic, and its
    E_RSD[r], which is >= max(μ_m, μ_M) (derivation (d))."""
    omega = weighting_values("binary", rewards, delta=mu_target)
    return float(mu_target), expected_reward(rewards, probs, omega, mu_target)


def optimal_weighting(rewards: np.ndarray, probs: np.ndarray, gamma: float, mu_target: float) -> ThresholdRule:
    """The optimum under E_m[ω] >= gamma (derivation (c)): the threshold δ* = min(μ_M, δ_γ).

    When μ_M < δ_γ the budget is slack: accept every r >= μ_M (q = 1). Otherwise it binds: the randomised
    threshold of optimal_threshold, accepting exactly gamma. (acceptance.threshold_rule with μ_M, as the engine.)
    """
    _check_gamma(gamma)
    delta, q, _ = threshold_rule(*_atoms(rewards, probs), gamma, mu_target=float(mu_target), xp=np)
    return ThresholdRule(delta=float(delta), q=float(q))


def frontier(kind: str, rewards: np.ndarray, probs: np.ndarray, mu_target: float,
             params: np.ndarray | None = None, alpha: float = DEFAULT_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(target_rate [k], expected_reward [k]) of a Table-1 family, sweeping its parameter `params` [k]
    (default 101 values on [0, 1]): p for constant, δ for binary, δ at fixed `alpha` for logistic.
    clipping and sigmoidal have no parameter: a single point (k = 1), params ignored.
    """
    if kind in ("clipping", "sigmoidal"):
        omegas = [weighting_values(kind, rewards)]
    else:
        sweep = np.linspace(0.0, 1.0, 101) if params is None else np.asarray(params, np.float64)
        name = "p" if kind == "constant" else "delta"
        omegas = [weighting_values(kind, rewards, alpha=alpha, **{name: value}) for value in sweep]
    rates = np.array([target_rate(omega, probs) for omega in omegas])
    values = np.array([expected_reward(rewards, probs, omega, mu_target) for omega in omegas])
    return rates, values


def threshold_frontier(rewards: np.ndarray, probs: np.ndarray, mu_target: float,
                       target_rates: np.ndarray) -> np.ndarray:
    """E_RSD[r] [k] of the optimal (randomised threshold) rule at each target rate [k] (γ = 1 - rate, clipped
    to [0, 1]): the upper envelope of every weighting with the same target rate (derivation (b))."""
    gammas = np.clip(1.0 - np.asarray(target_rates, np.float64), 0.0, 1.0)
    values = []
    for gamma in gammas.ravel():
        rule = optimal_threshold(rewards, probs, float(gamma))
        values.append(expected_reward(rewards, probs, threshold_omega(rewards, *rule), mu_target))
    return np.asarray(values).reshape(gammas.shape)


def beta_distribution(a: float, b: float, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Beta(a, b) on [0, 1] discretised into n_atoms equal bins: (rewards [n] at the bin midpoints,
    probs [n] = the Beta mass of each bin)."""
    if a <= 0 or b <= 0 or n_atoms < 1:
        raise ValueError(f"need a > 0, b > 0, n_atoms >= 1, got {a}, {b}, {n_atoms}")
    edges = np.linspace(0.0, 1.0, n_atoms + 1)
    probs = np.diff(stats.beta.cdf(edges, a, b))
    return (edges[:-1] + edges[1:]) / 2, probs / probs.sum()
