"""The per-context oracle on step contexts: does a threshold that knows μ_M(z) at each context beat one global δ?

Theory (rsd_jax.theory.mixture, (c)): at a context z the reward-optimal rule accepts the draft's step iff
r >= μ_M(z) when the budget is slack. With one budget on the average target rate over contexts, the same
Lagrangian argument, pointwise with one multiplier λ >= 0 for all contexts, gives δ(z) = μ_M(z) − λ (compared at
every target rate, λ of either sign traces the rule's frontier). A global δ is the rule that ignores z. Both are
randomised on the atom they land on (accept a reward equal to the threshold with probability q), so that each meets
a target rate exactly: identical steps score identically, so atoms are common. The oracle needs μ_M(z) in advance, so it is measured on a fixed set of contexts (every
step context of the draft's own sampled solutions, RSD's δ = 0 run), from samples at each:
  fit:  k draft and k target steps per context: μ̂_M(z), and the thresholds that meet each budget (both rules);
  eval: k other draft and k other target steps per context (and the exact checker's verdict on each): the rules'
        expected committed reward and step correctness at z, E = mean(1(r >= δ(z)) r) + ν(z) mean(target's r).
Held-out samples make the comparison able to fail (noise in μ̂_M(z) can cost more than the context is worth).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from rsd_jax.data.item import Item
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.theory import bootstrap
from rsd_jax.theory.contexts import Context, Samples, contexts_of, sample_steps

TIE = 1e-5  # rewards closer than this are one atom
StepCheck = Callable[[int, Sequence[str]], bool]  # (problem, its steps' texts) -> the last step is correct


@dataclasses.dataclass(frozen=True)
class ContextSamples:
    """Per context c of C (contexts [C]): fit and eval rewards [C, k] of draft and target steps, and the eval
    steps' correctness [C, k] (NaN without a checker)."""

    problem: np.ndarray  # [C] the problem each context belongs to
    draft_fit: np.ndarray
    draft_eval: np.ndarray
    draft_eval_correct: np.ndarray
    target_fit: np.ndarray
    target_eval: np.ndarray
    target_eval_correct: np.ndarray


def correctness(contexts: Sequence[Context], samples: Samples, check: StepCheck | None) -> np.ndarray:
    """[C, k] 1.0 / 0.0 whether each sampled step is correct at its context (NaN without a checker)."""
    k = samples.rewards.shape[1]
    if check is None:
        return np.full((len(contexts), k), np.nan)
    return np.array([[float(check(c.problem, [*c.steps, t])) for t in texts]
                     for c, texts in zip(contexts, samples.texts)])


def sample_contexts(engine: Engine, items: Sequence[Item], solutions: Sequence[Sequence[str]], *, k: int,
                    spec: DecodeSpec, batch_size: int, seed: int, check: StepCheck | None) -> ContextSamples:
    """2k draft and 2k target steps at every step context of `solutions` (one per item), split into fit and eval."""
    contexts = [c for i, steps in enumerate(solutions) for c in contexts_of(i, steps)]
    out = {}
    for n, writer in enumerate(("draft", "target")):
        s = sample_steps(engine, items, contexts, writer=writer, k=2 * k, spec=spec, batch_size=batch_size,
                         seed=seed + 7919 * n)
        ok = correctness(contexts, Samples([t[k:] for t in s.texts], s.rewards[:, k:]), check)
        out[writer] = (s.rewards[:, :k], s.rewards[:, k:], ok)
    # a context where a model wrote nothing in a half (its budget spent) has no estimate there: left out
    keep = np.all([np.isfinite(a).any(1) for w in out.values() for a in w[:2]], axis=0)
    return ContextSamples(np.array([c.problem for c in contexts])[keep], *(a[keep] for a in out["draft"]),
                          *(a[keep] for a in out["target"]))


def evaluate(cs: ContextSamples, thresholds: np.ndarray, q: float = 1.0) -> dict[str, np.ndarray]:
    """Per context [C], under per-context thresholds [C] on the eval samples: target rate, expected committed
    reward and expected step correctness. A reward within TIE of its threshold is on the atom: accepted with
    probability q (the theory's randomised threshold; identical steps score identically, so atoms are common)."""
    r, ok = cs.draft_eval, cs.draft_eval_correct
    valid = np.isfinite(r)
    gap = np.where(valid, r - thresholds[:, None], -np.inf)
    accept = np.where(gap > TIE / 2, 1.0, np.where(np.abs(gap) <= TIE / 2, q, 0.0))
    count = np.maximum(valid.sum(1), 1)
    nu = 1 - accept.sum(1) / count
    mu_reward = np.nanmean(cs.target_eval, 1)
    checked = np.isfinite(cs.target_eval_correct).any()
    mu_correct = np.nanmean(cs.target_eval_correct, 1) if checked else np.full(len(r), np.nan)
    reward = (accept * np.nan_to_num(r)).sum(1) / count + nu * mu_reward
    correct = (accept * np.nan_to_num(ok)).sum(1) / count + nu * mu_correct
    return {"target_rate": nu, "reward": reward, "correct": correct}


def at_budget(cs: ContextSamples, base: np.ndarray, budget: float) -> tuple[float, float]:
    """The shift s and atom acceptance q of the rule "threshold base [C] + s" whose average target rate on the fit
    draft samples is exactly `budget`: s is the atom (a fit reward minus its context's base, to TIE) at which the
    rate crosses the budget, q the share of that atom accepted."""
    d = np.round((cs.draft_fit - base[:, None]) / TIE) * TIE
    valid = np.isfinite(d)
    w = valid / (np.maximum(valid.sum(1, keepdims=True), 1) * len(d))  # each context weighs 1/C
    atoms, where = np.unique(d[valid], return_inverse=True)
    mass = np.bincount(where, w[valid])
    rejected = np.cumsum(mass)  # the rate when the atom and every one below it is rejected
    i = int(np.searchsorted(rejected, budget - 1e-12))
    if i >= len(atoms):
        return float(atoms[-1] + 1.0), 1.0
    return float(atoms[i]), float(np.clip((rejected[i] - budget) / mass[i], 0.0, 1.0))


def per_problem(cs: ContextSamples, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem sums and counts [n] of per-context values [C] (for a pooled bootstrap over problems)."""
    return np.bincount(cs.problem, weights=values, minlength=n), np.bincount(cs.problem, minlength=n).astype(float)


def compare(cs: ContextSamples, budgets: Sequence[float], n: int, **bs) -> dict:
    """At each budget: the global δ and the oracle μ̂_M(z) − λ, each set on the fit samples to that target rate
    (randomised on the atom it lands on), evaluated on the eval samples; the oracle's gain (paired by problem). And
    the slack optimum (λ = 0) against the global δ = mean μ̂_M, the draft alone and the target alone."""
    mu_fit = np.nanmean(cs.target_fit, 1)
    zero = np.zeros(len(mu_fit))

    def scored(thresholds: np.ndarray, q: float, name: str) -> tuple[dict, dict]:
        ev = evaluate(cs, thresholds, q)
        out = {"rule": name, "q": q}
        for key in ("target_rate", "reward", "correct"):
            out[key] = bootstrap.pooled(*per_problem(cs, ev[key], n), **bs).as_dict()
        return out, ev

    def gain(a: dict, b: dict) -> dict:
        return {key: bootstrap.pooled(*per_problem(cs, a[key] - b[key], n), **bs).as_dict()
                for key in ("reward", "correct")}

    rows = []
    for budget in budgets:
        delta, q_global = at_budget(cs, zero, budget)
        shift, q_oracle = at_budget(cs, mu_fit, budget)
        g, g_ev = scored(zero + delta, q_global, f"global δ = {delta:.4f} (q = {q_global:.2f})")
        o, o_ev = scored(mu_fit + shift, q_oracle, f"μ̂_M(z) − {-shift:.4f} (q = {q_oracle:.2f})")
        rows.append({"budget": budget, "global_delta": delta, "lambda": -shift, "global": g, "oracle": o,
                     "oracle_gain": gain(o_ev, g_ev)})
    mu_all = float(np.nanmean(cs.target_fit))
    slack = {name: scored(th, 1.0, name) for name, th in (
        ("draft alone", zero - 1.0), ("target alone", zero + 2.0),
        (f"global δ = mean μ̂_M = {mu_all:.3f}", zero + mu_all), ("oracle δ(z) = μ̂_M(z)", mu_fit))}
    oracle_ev, global_ev = slack["oracle δ(z) = μ̂_M(z)"][1], slack[f"global δ = mean μ̂_M = {mu_all:.3f}"][1]
    return {"n_problems": n, "n_contexts": len(cs.problem), "budgets": rows,
            "slack": [v[0] for v in slack.values()], "slack_oracle_gain": gain(oracle_ev, global_ev)}


def curves(cs: ContextSamples, rates: np.ndarray = np.linspace(0, 1, 41)) -> dict[str, dict[str, np.ndarray]]:
    """Target rate, reward and correctness on the eval samples of each rule set to each fit target rate (the
    figure's frontiers)."""
    mu_fit = np.nanmean(cs.target_fit, 1)
    out = {}
    for name, base in (("global δ", np.zeros(len(mu_fit))), ("oracle μ̂_M(z) − λ", mu_fit)):
        points = []
        for rate in rates:
            shift, q = at_budget(cs, base, float(rate))
            points.append(evaluate(cs, base + shift, q))
        out[name] = {key: np.array([float(np.mean(e[key])) for e in points])
                     for key in ("target_rate", "reward", "correct")}
    return out


def winning_rate(cs: ContextSamples, n: int, **bs) -> dict:
    """Fig. 3 (right): how often the target's step scores above the draft's at the same context (eval pairs)."""
    wins = np.where(np.isfinite(cs.draft_eval) & np.isfinite(cs.target_eval),
                    (cs.target_eval > cs.draft_eval).astype(float), np.nan)
    per_context = np.nanmean(wins, 1)
    return bootstrap.pooled(*per_problem(cs, np.nan_to_num(per_context), n), **bs).as_dict()
