"""The acceptance criterion A_ω of RSD: weighting functions ω (paper Table 1) and budget-aware thresholds.

A draft step with PRM reward r is accepted when u <= ω(r), u ~ U(0,1]; the binary ω(r) = 1(r >= δ) is the
deterministic test r >= δ. Every function here is jit-friendly: the weighting family `kind` is a static Python
string (chosen at trace time), while δ, p, α and the budget are traced float32 scalars, so a parameter sweep
compiles once. A non-finite reward is never accepted by a reward-dependent ω (the target writes that step).

Budget b = the largest fraction of steps that may go to the target. For the binary rule the target writes the
steps with r < δ, so the best δ is the lower-b quantile of the draft's rewards: `calibrate_threshold` computes
it from a calibration run on the host, `RewardHistogram` + `threshold` estimate it online inside the loop.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.errors import ConfigError, InputError, NumericalError

WEIGHTINGS = ("constant", "binary", "clipping", "sigmoidal", "logistic")
DEFAULT_DELTA = 0.7
DEFAULT_P = 0.5
DEFAULT_ALPHA = 20.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AcceptanceParams:
    """Traced float32 scalars []: delta (δ of binary and logistic), p (constant ω), alpha (logistic slope)."""

    delta: jax.Array
    p: jax.Array
    alpha: jax.Array

    @classmethod
    def create(cls, delta: float = DEFAULT_DELTA, p: float = DEFAULT_P,
               alpha: float = DEFAULT_ALPHA) -> "AcceptanceParams":
        return cls(delta=jnp.asarray(delta, jnp.float32), p=jnp.asarray(p, jnp.float32),
                   alpha=jnp.asarray(alpha, jnp.float32))


def omega(kind: str, r, *, delta, p, alpha, xp=jnp):
    """ω(r) of the Table-1 family `kind` with the array namespace `xp` (jax.numpy in the loop, numpy in
    rsd_jax.theory): constant p; binary 1(r >= δ); clipping min(1, max(0, r)); sigmoidal max(0, r)/(1 + max(0, r))
    (the paper's max(0, r/(1+r)) for r > -1); logistic 1/(1 + exp(-α(r - δ)))."""
    if kind == "constant":
        return xp.full(r.shape, p, r.dtype)
    if kind == "binary":
        return (r >= delta).astype(r.dtype)
    if kind == "clipping":
        return xp.clip(r, 0.0, 1.0)
    if kind == "sigmoidal":
        positive = xp.maximum(r, 0.0)
        return positive / (1.0 + positive)
    if kind == "logistic":
        return 1.0 / (1.0 + xp.exp(-alpha * (r - delta)))
    raise ValueError(f"weighting {kind!r} is not one of {', '.join(WEIGHTINGS)}")


def weight(kind: str, params: AcceptanceParams, rewards: jax.Array) -> jax.Array:
    """ω(r) of the family `kind` (static), float32 of the shape of rewards [...]."""
    r = jnp.asarray(rewards, jnp.float32)
    return omega(kind, r, delta=params.delta, p=params.p, alpha=params.alpha).astype(jnp.float32)


def accept(kind: str, params: AcceptanceParams, rewards: jax.Array, key: jax.Array) -> jax.Array:
    """A_ω: bool of the shape of rewards [...], True where the draft step is kept.

    binary is deterministic (r >= δ; key unused). The others draw u ~ U(0,1] and accept iff u <= ω(r), so
    P(accept) = ω(r) exactly at the ends too: ω = 0 never accepts, ω = 1 always does.
    """
    if kind == "binary":
        return jnp.asarray(rewards, jnp.float32) >= params.delta
    omega = weight(kind, params, rewards)
    u = 1.0 - jax.random.uniform(key, omega.shape, jnp.float32)  # in (0, 1]
    return u <= omega


def calibrate_threshold(rewards: np.ndarray, budget: float) -> float:
    """The largest δ with  #{r < δ} / n <= budget  over the draft rewards [n] of a calibration run.

    With the rewards sorted, r_(1) <= ... <= r_(n), and k = floor(budget·n), this is δ = r_(k+1): the target
    writes at most k of the n steps (fewer when r_(k+1) is tied with rewards below it, since ties are accepted
    together). budget = 0 gives min(rewards) (every step accepted); k = n (budget 1) allows rejecting every step,
    and the largest such δ is +inf. budget·n is rounded up by 1e-9 so that e.g. 0.7·10 counts as 7.
    """
    r = np.asarray(rewards, np.float64).ravel()
    if r.size == 0:
        raise InputError("calibrate_threshold needs at least one reward (the calibration run wrote no step)")
    if not np.all(np.isfinite(r)):
        raise NumericalError(f"calibrate_threshold: {int(np.sum(~np.isfinite(r)))} of the {r.size} rewards are "
                             "not finite (NaN or inf)")
    if not 0.0 <= budget <= 1.0:
        raise ConfigError(f"budget must be in [0, 1], got {budget}")
    k = math.floor(budget * r.size + 1e-9)
    if k >= r.size:
        return math.inf
    return float(np.sort(r)[k])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RewardHistogram:
    """Running histogram of draft rewards: counts [num_bins] float32 over equal bins on [0, 1].

    Bin j holds [j/N, (j+1)/N) (the last one also holds 1); rewards outside [0, 1] fall into the end bins.
    """

    counts: jax.Array

    @property
    def num_bins(self) -> int:
        return self.counts.shape[0]

    @classmethod
    def create(cls, num_bins: int = 256, prior_rewards: np.ndarray | None = None) -> "RewardHistogram":
        """An empty histogram, or one seeded with the rewards [n] of a calibration run."""
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        hist = cls(counts=jnp.zeros((num_bins,), jnp.float32))
        if prior_rewards is None:
            return hist
        prior = jnp.asarray(np.asarray(prior_rewards, np.float32).ravel())
        return update(hist, prior, jnp.ones(prior.shape, bool))


def _bin_index(num_bins: int, rewards: jax.Array) -> jax.Array:
    """Bin of each reward [...] -> int32 [...]; non-finite rewards go to bin 0 (callers mask them out)."""
    r = jnp.where(jnp.isfinite(rewards), rewards, 0.0)
    return jnp.clip(jnp.floor(r * num_bins), 0, num_bins - 1).astype(jnp.int32)


def update(hist: RewardHistogram, rewards: jax.Array, mask: jax.Array) -> RewardHistogram:
    """Adds the rewards [...] where mask [...] is True (non-finite rewards are skipped)."""
    r = jnp.asarray(rewards, jnp.float32).ravel()
    counted = (jnp.asarray(mask).ravel() & jnp.isfinite(r)).astype(jnp.float32)
    return RewardHistogram(counts=hist.counts.at[_bin_index(hist.num_bins, r)].add(counted))


def threshold(hist: RewardHistogram, budget: jax.Array, default_delta: jax.Array) -> jax.Array:
    """The budget quantile of the histogram, a float32 scalar δ: the largest bin edge j/N whose mass below,
    counts[:j].sum() / total, is <= budget.

    At bin resolution this is conservative: on the counted rewards the binary rule with this δ rejects at
    most a `budget` fraction, and at most one bin's mass less than the exact quantile (calibrate_threshold)
    would. When every bin fits in the budget, δ = +inf (reject every step). Empty histogram: default_delta.
    """
    n = hist.num_bins
    below = jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.cumsum(hist.counts)])  # [N+1], mass below j/N
    total = below[-1]
    fits = below <= jnp.clip(budget, 0.0, 1.0) * total  # a prefix of True, always True at j = 0
    j = jnp.sum(fits) - 1
    edge = jnp.where(j == n, jnp.inf, j.astype(jnp.float32) / n)
    return jnp.where(total > 0, edge, jnp.asarray(default_delta, jnp.float32)).astype(jnp.float32)
