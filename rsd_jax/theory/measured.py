"""The computations of the experiments on real models: the theory's predictions against what RSD measures
(empirical), and accuracy against target rate for each weighting family (end_to_end).

Every decode goes through rsd_jax.theory.decoded, which tallies its results' health. `spec` is the run's decoding
settings (budgets, sampling); each experiment decodes with the RSD method and weighting it studies (one global δ,
never the online budget).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.data.item import Item
from rsd_jax.decoding.acceptance import rule_of_rewards
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine, RSDModels
from rsd_jax.methods import RSD
from rsd_jax.models.model import full_forward
from rsd_jax.theory import mixture as th
from rsd_jax.theory.decoded import generate
from rsd_jax.tokenizer import prm_prompt_ids, prm_step_ids


def accuracy(items: Sequence[Item], results) -> float:
    return float(np.mean([i.grade(r.text) for i, r in zip(items, results)]))


# ------------------------------------------------------------------------------------------------ empirical
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


def committed_rewards(models: RSDModels, questions: list[str], step_texts: list[list[str]]) -> list[np.ndarray]:
    """The PRM's reward of every committed step, scored from scratch on its view of the final solution."""
    tok = models.prm_tok
    views, marks = [], []
    for q, steps in zip(questions, step_texts):
        ids, pos = prm_prompt_ids(tok, q), []
        for text in steps:
            ids += prm_step_ids(tok, text, models.delimiter)
            pos.append(len(ids) - 1)
        views.append(ids)
        marks.append(pos)
    width = max(map(len, views))
    buf = np.zeros((len(views), width), np.int32)
    for i, v in enumerate(views):
        buf[i, :len(v)] = v
    _, hidden = jax.jit(full_forward)(models.prm, jnp.asarray(buf))
    rewards = np.asarray(models.prm.rewards(hidden))
    return [rewards[i, pos] for i, pos in enumerate(marks)]


@dataclasses.dataclass(frozen=True)
class Empirical:
    n_problems: int
    n_draft_steps: int
    mu_draft: float  # the draft's mean step reward when it writes every step (μ_m)
    mu_target: float  # the target's, likewise (μ_M)
    sweep: list[dict]  # per δ: acceptance and mean reward predicted and measured, accuracy
    per_context: list[dict]  # per budget: one global δ against a per-problem (oracle) δ

    def summary(self) -> dict:
        return {"mu_draft": self.mu_draft, "mu_target": self.mu_target, "sweep": self.sweep,
                "per_context": self.per_context}


def empirical(engine: Engine, items: Sequence[Item], spec: DecodeSpec, batch_size: int, *,
              deltas: Sequence[float], budgets: Sequence[float]) -> Empirical:
    """Acceptance and expected reward per δ as the library predicts them from the draft's and target's step
    rewards, next to what RSD measures; and the per-context gain at each budget."""
    prompts, questions = [i.prompt for i in items], [i.question for i in items]
    draft = step_rewards(engine, prompts, questions, spec, batch_size, "draft")
    target = step_rewards(engine, prompts, questions, spec, batch_size, "target")
    r_all = np.concatenate(draft)
    mu_target = float(np.concatenate(target).mean())
    probs = np.full(len(r_all), 1 / len(r_all))
    rows = []
    for delta in deltas:
        omega = th.weighting_values("binary", r_all, delta=delta)
        results = generate(engine, prompts, questions=questions, method=RSD(delta=delta), decoding=spec)
        steps = [[s.text for s in r.steps] for r in results]
        measured = np.concatenate(committed_rewards(engine.models, questions, steps))
        sources = [s.source for r in results for s in r.steps]
        rows.append({"delta": delta, "predicted_acceptance": th.acceptance_rate(omega, probs),
                     "measured_acceptance": float(np.mean([s == "draft" for s in sources])),
                     "predicted_reward": th.expected_reward(r_all, probs, omega, mu_target),
                     "measured_reward": float(measured.mean()),
                     "accuracy": accuracy(items, results) if items[0].grade else None})
    per_context = per_context_gain(engine, items, draft, mu_target, spec, budgets)
    return Empirical(len(items), len(r_all), float(r_all.mean()), mu_target, rows, per_context)


def per_context_gain(engine: Engine, items: Sequence[Item], draft: list[np.ndarray], mu_target: float,
                     spec: DecodeSpec, budgets: Sequence[float]) -> list[dict]:
    """At each budget: one global δ (quantile of all draft rewards) against a per-problem δ_γ(z) (quantile of
    that problem's own draft rewards: an oracle, it needs the problem's rewards in advance)."""
    prompts, questions = [i.prompt for i in items], [i.question for i in items]
    rows = []
    for budget in budgets:
        # δ_γ alone, deterministic (r >= δ_γ: the target writes at most the budget), as before the randomised rule
        global_delta = rule_of_rewards(np.concatenate(draft), budget)[0]
        per_problem = [rule_of_rewards(r, budget)[0] if len(r) else global_delta for r in draft]
        per_problem = [min(d, 1.01) for d in per_problem]  # +inf (reject all) as a finite threshold
        expected = {}
        for name, deltas in (("global", [global_delta] * len(draft)), ("oracle", per_problem)):
            values = [th.expected_reward(r, np.full(len(r), 1 / len(r)), th.weighting_values("binary", r, delta=d),
                                         mu_target) for r, d in zip(draft, deltas) if len(r)]
            expected[name] = float(np.mean(values))
        acc = {}
        for name, deltas in (("global", float(global_delta)), ("oracle", per_problem)):
            acc[name] = accuracy(items, generate(engine, prompts, questions=questions, method=RSD(delta=deltas),
                                                 decoding=spec))
        rows.append({"budget": budget, "global_delta": float(global_delta), "global_accuracy": acc["global"],
                     "oracle_accuracy": acc["oracle"], "global_expected_reward": expected["global"],
                     "oracle_expected_reward": expected["oracle"]})
    return rows


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
            sources = [s.source for r in results for s in r.steps]
            curves[kind].append({**params, "target_rate": float(np.mean([s == "target" for s in sources])),
                                 "accuracy": accuracy(items, results)})
    binary_rows = curves.get("binary", [])
    best = max(binary_rows, key=lambda r: r["accuracy"]) if binary_rows else None
    return EndToEnd(len(items), mu_target, curves, best)
