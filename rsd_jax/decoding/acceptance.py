"""The acceptance criterion A_ω of RSD: weighting functions ω (paper Table 1) and budget-aware thresholds.

A draft step with PRM reward r is accepted when u <= ω(r), u ~ U(0,1]; the binary ω(r) = 1(r >= δ) is the
deterministic test r >= δ. Every function here is jit-friendly: the weighting family `kind` is a static Python
string (chosen at trace time), while δ, p, α and the budget are traced float32 scalars, so a parameter sweep
compiles once. A non-finite reward is never accepted by a reward-dependent ω (the target writes that step).

Budget mode (the theory's optimum, rsd_jax.theory.mixture derivations (b)-(c)). Budget b = the fraction of steps
the target may write, γ = 1 - b the fraction the draft must write. Over a draft reward distribution (atoms and
their mass) `threshold_rule` gives δ_γ = max{δ : P(r >= δ) >= γ} and the acceptance q on the atom at δ_γ with
P(r > δ_γ) + q P(r = δ_γ) = γ; with the target's mean step reward μ_M known, δ* = min(μ_M, δ_γ) (accept r >= μ_M,
q = 1, when the budget does not bind). It is the one implementation: the theory calls it with numpy, `rule_of_rewards`
with a calibration run's rewards on the host, `histogram_rule` with the loop's running histogram (atoms = bins).
`budget_accept` applies the rule: accept r > δ, r == δ (online: r in δ's bin) with probability q.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

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
    """Traced float32 scalars []: delta (δ of binary and logistic), p (constant ω), alpha (logistic slope), q (budget
    mode: the acceptance probability of a reward equal to δ; the binary rule without a budget ignores it)."""

    delta: jax.Array
    p: jax.Array
    alpha: jax.Array
    q: jax.Array

    @classmethod
    def create(cls, delta: float = DEFAULT_DELTA, p: float = DEFAULT_P, alpha: float = DEFAULT_ALPHA,
               q: float = 1.0) -> "AcceptanceParams":
        return cls(delta=jnp.asarray(delta, jnp.float32), p=jnp.asarray(p, jnp.float32),
                   alpha=jnp.asarray(alpha, jnp.float32), q=jnp.asarray(q, jnp.float32))


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
    """A_ω: bool of the shape of rewards [...], True where the draft step is kept (`decide` without a budget, its
    uniforms drawn from key).

    binary is deterministic (r >= δ; key unused). The others draw u ~ U(0,1] and accept iff u <= ω(r), so
    P(accept) = ω(r) exactly at the ends too: ω = 0 never accepts, ω = 1 always does.
    """
    r = jnp.asarray(rewards, jnp.float32)
    rule = Rule(weighting=kind, mode="none", params=params, budget=jnp.float32(0.0), mu_target=jnp.float32(jnp.inf))
    return decide(rule, r, jax.random.uniform(key, r.shape, jnp.float32), histogram=None, live=None)[0]


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




def threshold_rule(values, mass, gamma, *, mu_target=math.inf, xp=jnp):
    """The optimal threshold over a reward distribution: (delta, q, binding), scalars of xp's float type and bool.

    values [n]: distinct atoms in ascending order (rewards, or histogram bin edges); mass [n] >= 0: their mass
    (probabilities or counts; atoms of zero mass are skipped). gamma: the fraction the draft must write (1 - budget).
    δ_γ = the largest atom with P(r >= δ_γ) >= γ and q = (γ - P(r > δ_γ)) / P(r = δ_γ) in [0, 1], so that
    P(r > δ_γ) + q P(r = δ_γ) = γ exactly; γ = 0 gives δ = +inf (accept nothing). With mu_target = μ_M finite and
    below δ_γ the budget does not bind: δ* = μ_M, q = 1 (binding False). P(r >= δ) may fall short of γ by 8 units
    of the mass's float rounding (γ·total; about 1e-6 in float32, 2e-15 in float64). No mass at all: δ = the
    smallest atom, q = 1 (callers check the total).
    """
    values, mass = xp.asarray(values), xp.asarray(mass)
    total = xp.sum(mass)
    need = gamma * total
    at_or_above = total - xp.cumsum(mass) + mass  # mass of r >= values[i]
    slack = 8 * float(xp.finfo(mass.dtype).eps) if xp.issubdtype(mass.dtype, xp.floating) else 0.0
    reaching = (mass > 0) & (at_or_above >= need - slack * total)
    i = xp.maximum(xp.max(xp.where(reaching, xp.arange(values.shape[0]), 0)), 0)
    above = at_or_above[i] - mass[i]
    q = xp.clip((need - above) / xp.maximum(mass[i], 1e-30), 0.0, 1.0)
    delta = xp.where(gamma <= 0, xp.inf, values[i])
    q = xp.where(gamma <= 0, 0.0, q)
    binding = ~(mu_target < delta)
    return xp.where(binding, delta, mu_target), xp.where(binding, q, 1.0), binding


def _check_budget(budget: float) -> None:
    if not (isinstance(budget, (int, float)) and 0.0 <= budget <= 1.0):
        raise ConfigError(f"rsd.budget must be in [0, 1], got {budget}")


def rule_of_rewards(rewards: np.ndarray, budget: float, *, mu_target: float | None = None) -> tuple[float, float]:
    """(δ, q) of the budget (the fraction of steps the target may write) over a calibration run's draft rewards
    [n], each an atom of mass 1/n (threshold_rule in float64); mu_target: μ_M when known (δ* = min(μ_M, δ_γ))."""
    r = np.asarray(rewards, np.float64).ravel()
    if r.size == 0:
        raise InputError("the budget's threshold needs at least one reward (the calibration run wrote no step)")
    if not np.all(np.isfinite(r)):
        raise NumericalError(f"the budget's threshold: {int(np.sum(~np.isfinite(r)))} of the {r.size} rewards are "
                             "not finite (NaN or inf)")
    _check_budget(budget)
    atoms, counts = np.unique(r, return_counts=True)
    delta, q, _ = threshold_rule(atoms, counts.astype(np.float64), 1.0 - budget,
                                 mu_target=math.inf if mu_target is None else float(mu_target), xp=np)
    return float(delta), float(q)


def histogram_rule(hist: RewardHistogram, budget: jax.Array, *, mu_target: jax.Array,
                   default_delta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """threshold_rule over the running histogram, its atoms the bins (bin j stands for its lower edge j/N):
    (δ, q, binned) float32, float32, bool scalars. binned: δ is a bin edge and q applies to that bin's rewards;
    False when the budget does not bind (δ = μ_M, q = 1, compared exactly) or the histogram is empty
    (δ = default_delta, q = 1)."""
    edges = jnp.arange(hist.num_bins, dtype=jnp.float32) / hist.num_bins
    gamma = 1.0 - jnp.clip(jnp.asarray(budget, jnp.float32), 0.0, 1.0)
    delta, q, binding = threshold_rule(edges, hist.counts, gamma, mu_target=jnp.asarray(mu_target, jnp.float32))
    empty = jnp.sum(hist.counts) <= 0
    default = jnp.asarray(default_delta, jnp.float32)
    return (jnp.where(empty, default, delta).astype(jnp.float32), jnp.where(empty, 1.0, q).astype(jnp.float32),
            binding & ~empty)


def threshold_weight(r, delta, q, *, xp=jnp):
    """ω(r) of the randomised threshold (δ, q), the probability of keeping a step: 1 where r > δ, q where r == δ, 0
    below or for a non-finite reward; r [...] with the array namespace xp (jax.numpy in the loop, numpy in
    rsd_jax.theory)."""
    return xp.where(r > delta, 1.0, xp.where(r == delta, q, 0.0))


def budget_accept(rewards: jax.Array, delta: jax.Array, q: jax.Array, key: jax.Array | None, *,
                  num_bins: int = 0, binned: jax.Array | bool = False, u: jax.Array | None = None) -> jax.Array:
    """The randomised threshold: bool [B], True where u < threshold_weight(r, δ, q) with u ~ U[0,1) (r > δ always,
    r == δ with probability q, never below or for a non-finite reward). binned (with num_bins, static): compare
    bins instead (the online histogram's atoms: r in a higher bin than δ's accepted, in δ's bin with probability q).
    u [B]: the uniforms in [0, 1) to use (e.g. one per row from per-row keys) instead of drawing them from key."""
    r = jnp.asarray(rewards, jnp.float32)
    delta = jnp.asarray(delta, jnp.float32)
    u = jax.random.uniform(key, r.shape, jnp.float32) if u is None else u
    accepted = u < threshold_weight(r, delta, jnp.asarray(q, jnp.float32))
    if not num_bins:
        return accepted
    rb = _bin_index(num_bins, r)
    db = jnp.where(jnp.isfinite(delta), jnp.round(jnp.where(jnp.isfinite(delta), delta, 0.0) * num_bins),
                   num_bins).astype(jnp.int32)  # +inf: past every bin
    in_bins = jnp.isfinite(r) & ((rb > db) | ((rb == db) & (u < q)))
    return jnp.where(binned, in_bins, accepted)


MODES = ("none", "calibrated", "online")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rule:
    """The acceptance rule, one value: the weighting family and the budget mode (static: they pick the code), ω's
    parameters (δ, p, α) with the atom's acceptance q of the calibrated budget optimum, the budget and μ_M of the
    online optimum.

    Two forms of the same value: on the host (`Rule.create`: Python floats, δ a float or a tuple of one per
    prompt, budget and μ_M None when unset; what methods.RSD and the config hold, and the calibration replaces)
    and traced (`traced`: [] / [B] float32 arrays, budget 0 and μ_M +inf when unset; what `decide` runs on, so a
    sweep compiles once). mode: "none" (ω), "calibrated" (the randomised threshold (δ, q) set on the host) or
    "online" (the same rule over a running histogram)."""

    weighting: str = dataclasses.field(metadata=dict(static=True))
    mode: str = dataclasses.field(metadata=dict(static=True))
    params: AcceptanceParams
    budget: Any  # [] the fraction of steps the target may write (None on the host: no budget)
    mu_target: Any  # [] the target's mean step reward μ_M (None on the host, +inf traced: unknown)

    @classmethod
    def create(cls, weighting: str = "binary", *, delta=DEFAULT_DELTA, p: float = DEFAULT_P,
               alpha: float = DEFAULT_ALPHA, q: float = 1.0, budget: float | None = None, online_budget: bool = False,
               mu_target: float | None = None) -> "Rule":
        """The host rule, checked (ConfigError naming the setting). budget: spent by the randomised threshold
        (binary weighting only), calibrated, or with online_budget set inside the loop from a running histogram;
        delta: a float, or one per prompt (a sequence)."""
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"rsd.weighting {weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        if budget is not None and weighting != "binary":
            raise ConfigError(f"rsd.budget spends the budget with the randomised threshold (the theory's optimum), "
                              f"which replaces ω; rsd.weighting must be binary, got {weighting!r}")
        if budget is not None:
            _check_budget(budget)
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"RSD q (the acceptance at δ) must be in [0, 1], got {q}")
        delta = tuple(float(d) for d in np.asarray(delta).ravel()) if np.ndim(delta) == 1 else float(delta)
        mode = "online" if online_budget else "calibrated" if budget is not None else "none"
        return cls(weighting=weighting, mode=mode,
                   params=AcceptanceParams(delta=delta, p=float(p), alpha=float(alpha), q=float(q)),
                   budget=None if budget is None else float(budget),
                   mu_target=None if mu_target is None else float(mu_target))

    def settings(self) -> dict:
        """The keywords of `create` that rebuild this host rule."""
        pa = self.params
        return dict(weighting=self.weighting, delta=pa.delta, p=pa.p, alpha=pa.alpha, q=pa.q, budget=self.budget,
                    online_budget=self.mode == "online", mu_target=self.mu_target)

    def updated(self, **changes) -> "Rule":
        """This host rule with some of `create`'s keywords changed (None is a value: budget=None drops the
        budget), checked again."""
        return Rule.create(**{**self.settings(), **changes})

    def traced(self, rows: int | None = None) -> "Rule":
        """The rule as float32 arrays for the loop: δ [] or, one per prompt, [rows] (padding rows take the last
        value); budget 0 and μ_M +inf where unset."""
        delta = self.params.delta
        if isinstance(delta, tuple) and rows is not None:
            delta = np.pad(np.asarray(delta, np.float32), (0, rows - len(delta)), mode="edge")
        return Rule(weighting=self.weighting, mode=self.mode,
                    params=AcceptanceParams.create(delta=delta, p=self.params.p, alpha=self.params.alpha,
                                                   q=self.params.q),
                    budget=jnp.float32(0.0 if self.budget is None else self.budget),
                    mu_target=jnp.float32(math.inf if self.mu_target is None else self.mu_target))


def calibrated(rule: Rule, rewards: np.ndarray) -> Rule:
    """The host `rule` (a budget mode) with the (δ, q) of its budget over a calibration run's draft rewards [n]
    (rule_of_rewards, with the rule's μ_M when set)."""
    if rule.budget is None:
        raise ConfigError("the budget's threshold needs rsd.budget (the fraction of steps the target may write)")
    delta, q = rule_of_rewards(rewards, rule.budget, mu_target=rule.mu_target)
    return rule.updated(delta=delta, q=q)


def decide(rule: Rule, rewards: jax.Array, u: jax.Array, *, histogram: RewardHistogram | None,
           live: jax.Array | None) -> tuple[jax.Array, jax.Array, RewardHistogram | None]:
    """The acceptance of the live rows' rewards [B] with one uniform in [0, 1) per row u [B]: (accepted [B] bool,
    δ in force [B], the histogram).

    mode "none": A_ω of the weighting family, accept iff 1 - u <= ω(r) (binary: r >= δ, u unused); "calibrated": the
    randomised threshold (δ, q) set on the host (rule_of_rewards): r > δ, or r == δ and u < q; "online": the rule of
    the running histogram after counting the live rewards [B] bool, with the budget and μ_M (histogram_rule; the
    other modes ignore histogram and live)."""
    params, histogram_out = rule.params, histogram
    delta = jnp.broadcast_to(params.delta, rewards.shape)
    if rule.mode == "none":
        if rule.weighting == "binary":
            return jnp.asarray(rewards, jnp.float32) >= params.delta, delta, histogram
        return (1.0 - u) <= weight(rule.weighting, params, rewards), delta, histogram
    if rule.mode == "calibrated":
        return budget_accept(rewards, params.delta, params.q, None, u=u), delta, histogram
    if rule.mode != "online":
        raise ValueError(f"budget mode {rule.mode!r} is not one of none, calibrated, online")
    histogram_out = update(histogram, rewards, live)
    rule_delta, q, binned = histogram_rule(histogram_out, rule.budget, mu_target=rule.mu_target,
                                           default_delta=params.delta)
    accepted = budget_accept(rewards, rule_delta, q, None, num_bins=histogram.num_bins, binned=binned, u=u)
    return accepted, jnp.broadcast_to(rule_delta, rewards.shape), histogram_out
