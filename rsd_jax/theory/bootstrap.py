"""Bootstrap confidence intervals over problems, for every figure of the theory experiments.

A problem is the unit of resampling (its steps are not independent: one wrong step makes the next ones wrong).
Most statistics are pooled means over the steps of the resampled problems: per problem a sum [n] and a count [n]
(steps, or 1 for a per-problem quantity), the statistic sum(sums[idx]) / sum(counts[idx]). A paired difference
(measured − predicted on the same problems) is a pooled mean of per-problem differences. Percentile intervals,
numpy, seeded: the same inputs give the same interval.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A statistic over n problems and its bootstrap confidence interval [low, high] at `level`."""

    value: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def covers(self, x: float) -> bool:
        return self.low <= x <= self.high

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n, "level": self.level}

    def fmt(self, scale: float = 1.0, digits: int = 3) -> str:
        """'value [low, high]', each times `scale` (100 for percentages)."""
        v, lo, hi = (scale * x for x in (self.value, self.low, self.high))
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def resampled(n: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[resamples, n] problem indices drawn with replacement."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one problem")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def pooled(sums: Sequence[float], counts: Sequence[float], *, resamples: int = RESAMPLES, level: float = LEVEL,
           seed: int = SEED) -> Estimate:
    """sum(sums) / sum(counts) over problems (sums [n], counts [n] >= 0) with its percentile interval; resamples
    whose counts sum to 0 are left out. NaN (and an empty interval) when no problem counts."""
    s, c = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    if s.shape != c.shape or s.ndim != 1:
        raise ValueError(f"sums and counts must be 1-D arrays of one shape, got {s.shape}, {c.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if c.sum() <= 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, len(s), level)
    idx = resampled(len(s), resamples=resamples, seed=seed)
    total = c[idx].sum(axis=1)
    keep = total > 0
    stats = s[idx].sum(axis=1)[keep] / total[keep]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Estimate(float(s.sum() / c.sum()), float(low), float(high), len(s), level)


def mean(values: Sequence[float], **kwargs) -> Estimate:
    """The mean of one value per problem (e.g. correct or not) with its interval."""
    v = np.asarray(values, np.float64)
    return pooled(v, np.ones_like(v), **kwargs)


def step_mean(per_problem: Sequence[Sequence[float]], **kwargs) -> Estimate:
    """The mean over all steps of the values of each problem's steps (problems resampled, steps pooled)."""
    return pooled([float(np.sum(v)) for v in per_problem], [len(v) for v in per_problem], **kwargs)


def statistic(fn, n: int, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> Estimate:
    """Any statistic of the problems, fn(indices [n']) -> float, on all n problems and on each resample (for
    what is not a pooled mean, e.g. a prediction made from two runs of the same problems)."""
    values = np.array([fn(idx) for idx in resampled(n, resamples=resamples, seed=seed)], np.float64)
    values = values[np.isfinite(values)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
    return Estimate(float(fn(np.arange(n))), float(low), float(high), n, level)
