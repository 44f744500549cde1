"""The end_to_end experiment on real models: accuracy against target rate for each weighting family, with 95%
bootstrap intervals over problems (the empirical experiment: rsd_jax.theory.empirical and .oracle).

Every decode goes through rsd_jax.theory.decoded, which tallies its results' health. `spec` is the run's decoding
settings (budgets, sampling); each experiment decodes with the RSD method and weighting it studies (one global δ,
never the online budget).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rsd_jax.data.item import Item
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.methods import RSD
from rsd_jax.theory import bootstrap
from rsd_jax.theory.decoded import generate


def accuracy(items: Sequence[Item], results) -> float:
    return float(np.mean([i.grade(r.text) for i, r in zip(items, results)]))


def step_rewards(engine: Engine, prompts: list[str], questions: list[str], spec: DecodeSpec, batch_size: int,
                 writer: str) -> list[np.ndarray]:
    """Per problem, the PRM rewards of the steps `writer` ("draft" or "target") writes when it writes them all."""
    drafting = engine if writer == "draft" else dataclasses.replace(engine, draft=engine.target)
    rewards = []
    for start in range(0, len(prompts), batch_size):
        results = generate(drafting, prompts[start:start + batch_size], questions=questions[start:start + batch_size],
                           method=RSD(delta=0.0), decoding=spec, pad_batch_to=batch_size)
        rewards += [np.array([step.reward for step in r.steps]) for r in results]
    return rewards


# ------------------------------------------------------------------------------------------------ end to end
def family_sweep(kind: str, deltas: Sequence[float]) -> list[dict[str, float]]:
    """The parameters a weighting family is swept over: δ for binary and logistic, p for constant."""
    if kind in ("binary", "logistic"):
        return [{"delta": d} for d in deltas]
    if kind == "constant":
        return [{"p": p} for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return [{}]


@dataclasses.dataclass(frozen=True)
class EndToEnd:
    n_problems: int
    mu_target: float  # the theory's slack optimum δ = μ_M
    curves: dict[str, list[dict]]  # weighting -> per parameter: target rate and accuracy
    best_delta: dict | None  # the binary sweep's accuracy-best row

    def summary(self) -> dict:
        return {"mu_target": self.mu_target, "theory_delta": self.mu_target, "best_delta": self.best_delta,
                "curves": self.curves}


def end_to_end(engine: Engine, items: Sequence[Item], spec: DecodeSpec, batch_size: int, *,
               weightings: Sequence[str], deltas: Sequence[float], seed: int) -> EndToEnd:
    """Accuracy against the fraction of steps the target writes, for each weighting family over its sweep."""
    prompts, questions = [i.prompt for i in items], [i.question for i in items]
    target = step_rewards(engine, prompts, questions, spec, batch_size, "target")
    mu_target = float(np.concatenate(target).mean())
    curves: dict[str, list[dict]] = {}
    for kind in weightings:
        curves[kind] = []
        for params in family_sweep(kind, deltas):
            results = generate(engine, prompts, questions=questions, method=RSD(weighting=kind, **params),
                               decoding=spec, seed=seed)
            targets = [sum(s.source == "target" for s in r.steps) for r in results]
            rate = bootstrap.pooled(targets, [len(r.steps) for r in results])
            acc = bootstrap.mean([i.grade(r.text) for i, r in zip(items, results)])
            curves[kind].append({**params, "target_rate": rate.value, "target_rate_ci": [rate.low, rate.high],
                                 "accuracy": acc.value, "accuracy_ci": [acc.low, acc.high]})
    binary_rows = curves.get("binary", [])
    best = max(binary_rows, key=lambda r: r["accuracy"]) if binary_rows else None
    return EndToEnd(len(items), mu_target, curves, best)
