"""The computations of the experiments that need the embedded task's exact step checker: RSD with a perfect PRM
against the learned PRM's sweep (perfect_prm), and the learned PRM's rewards of the draft's own steps by what the
checker finds wrong with them (prm_errors). The learned PRM's runs come in as rsd_jax.runner.run_method's records.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rsd_jax.data import arith
from rsd_jax.data.item import Item, ProblemSource
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.errors import InputError
from rsd_jax.summary import summarize
from rsd_jax.theory import perfect_prm as perfect
from rsd_jax.training.prm import auroc


def arith_problems(data: ProblemSource, items: Sequence[Item], experiment: str) -> list[arith.Problem]:
    """The embedded task's problems behind `items`, drawn from `data` (the run's data section)."""
    if data.source != "arith":
        raise InputError(f"{experiment} needs the embedded task (run.data.source: arith), got {data.source!r}: "
                         f"only it has an exact checker for every step")
    problems = arith.generate_problems(len(items), data.seed, data.levels)
    if [p.uid for p in problems] != [i.uid for i in items]:
        raise InputError(f"{experiment}: the problems do not match the items of run.data")
    return problems


# ------------------------------------------------------------------------------------------------ perfect PRM
@dataclasses.dataclass(frozen=True)
class PerfectPRM:
    n_problems: int
    rows: list[dict]  # the perfect PRM's row, then the learned PRM's at each δ

    def summary(self) -> dict:
        return {"rows": self.rows}


def learned_row(delta: float, records: list[dict]) -> dict:
    """The learned PRM's row at δ: accuracy, FLOPs against target-only (total and by model), draft acceptance,
    and the share of problems with a target step."""
    measured = summarize(records)
    target_only = sum(r["accounting"]["target_only_flops"] for r in records)
    return {"prm": "learned", "delta": delta, "accuracy": measured["accuracy"],
            "flops_vs_target_only": measured["flops_vs_target_only"],
            "flops_by_model": {model: sum(r["accounting"]["useful_flops"].get(model, 0.0) for r in records)
                               / target_only for model in ("draft", "prm", "target")},
            "draft_acceptance": measured["draft_acceptance_rate"],
            "problems_with_target_steps": float(np.mean([any(s["source"] == "target" for s in r["steps"])
                                                         for r in records]))}


def perfect_prm(engine: Engine, problems: list[arith.Problem], spec: DecodeSpec, batch_size: int,
                learned: Sequence[tuple[float, list[dict]]]) -> PerfectPRM:
    """RSD with the exact checker as its PRM (rsd_jax.theory.perfect_prm) next to the learned PRM's records at
    each δ of `learned`, (δ, records) pairs."""
    runs = perfect.decode(engine, problems, spec, batch_size)
    costs = [perfect.useful_flops(engine.models, p, r) for p, r in zip(problems, runs)]
    rows = [{"prm": "perfect (exact checker)", "delta": None, **perfect.summarize(problems, runs, costs)}]
    rows += [learned_row(delta, records) for delta, records in learned]
    return PerfectPRM(len(problems), rows)


# ------------------------------------------------------------------------------------------------ PRM errors
def step_kind(problem: arith.Problem, i: int) -> str:
    return "multiply" if i == 0 else "add/sub" if i < problem.level else "answer"


def draft_step_rewards(problems: list[arith.Problem], records: list[dict]) -> list[tuple[str, str, float]]:
    """(step kind, what is wrong ("correct" or the checker's findings joined by "+"), PRM reward) of every step of
    the draft's own solutions up to and including its first wrong step (the states RSD's PRM is asked about)."""
    rows = []
    for p, r in zip(problems, records):
        steps = [s["text"].strip() for s in r["steps"]]
        for i, step in enumerate(r["steps"]):
            errors = arith.step_errors(p, steps, i)
            rows.append((step_kind(p, i), "+".join(errors) or "correct", float(step["reward"])))
            if errors:
                break
    return rows


def prm_errors(problems: list[arith.Problem], records: list[dict], deltas: Sequence[float]) -> dict:
    """The learned PRM's rewards of the draft's steps (`records`: RSD at δ = 0, which keeps every draft step),
    grouped by step kind and error, with what each δ keeps; the step AUROC; per δ the wrong steps kept and the
    share of correct steps rejected."""
    rows = draft_step_rewards(problems, records)
    rewards = np.array([r for _, _, r in rows])
    correct = np.array([e == "correct" for _, e, _ in rows])
    groups: dict[tuple[str, str], list[float]] = {}
    for kind, error, reward in rows:
        groups.setdefault((kind, error), []).append(reward)
    table = [{"step": kind, "error": error, "n": len(v), "mean_reward": float(np.mean(v)),
              "kept": {f"{d:g}": float(np.mean(np.asarray(v) >= d)) for d in deltas}}
             for (kind, error), v in sorted(groups.items(), key=lambda kv: (kv[0][1] != "correct", -len(kv[1])))]
    return {"n_problems": len(problems), "n_steps": len(rows), "auroc": auroc(rewards, correct),
            "wrong_kept": {f"{d:g}": int(np.sum(rewards[~correct] >= d)) for d in deltas},
            "correct_rejected": {f"{d:g}": float(np.mean(rewards[correct] < d)) for d in deltas},
            "by_error": table}
