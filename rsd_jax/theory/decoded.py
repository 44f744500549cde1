"""What the theory experiments decode, every result tallied: how many carried an error or a non-finite reward, so
that the summary reports them and a NaN is never silent."""

from __future__ import annotations

import numpy as np

from rsd_jax.api import generate as _generate

_HEALTH = {"n_results": 0, "n_errors": 0, "n_nonfinite_rewards": 0}  # over every decode of the experiment


def reset_health() -> None:
    _HEALTH.update(n_results=0, n_errors=0, n_nonfinite_rewards=0)


def health() -> dict[str, int]:
    """How many decoded results the experiment used, how many carried an error (non-finite logits or rewards)
    and how many had a non-finite step reward."""
    return dict(_HEALTH)


def tally(errors: list, rewards: list[list[float]]) -> None:
    """Counts results: each one's error (None or a message) and its step rewards."""
    _HEALTH["n_results"] += len(errors)
    _HEALTH["n_errors"] += sum(1 for e in errors if e)
    _HEALTH["n_nonfinite_rewards"] += sum(1 for r in rewards if not np.all(np.isfinite(r)))


def tally_records(records: list[dict]) -> None:
    """Counts result records (rsd_jax.runner.run_method's)."""
    tally([r["error"] for r in records], [[s["reward"] for s in r["steps"]] for r in records])


def generate(*args, **kwargs):
    """rsd_jax.api.generate, each result tallied in health()."""
    results = _generate(*args, **kwargs)
    tally([r.error for r in results], [[s.reward for s in r.steps] for r in results])
    return results
