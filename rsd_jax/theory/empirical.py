"""The empirical experiment: the theory's prediction of RSD's committed step reward against what the loop measures,
per δ, on sampled decoding (temperature > 0: a context has several valid steps), every figure with a bootstrap
interval over problems (rsd_jax.theory.bootstrap).

Per δ, one RSD run records at every step the draft's reward r and, where the target wrote the step, the PRM's reward
of the target's step (DecodeSpec.record_target_reward). The theory's per-context mixture, P_RSD(·|z) = ω(r) P_m +
ν(z) P_M, predicts the committed step's expected reward at context z: r if the draft's step is kept, μ_M(z) if not.
  measured:              committed reward = r on kept steps, the recorded target step's reward on rejected ones;
  predicted per context: r on kept steps, μ̂_M(z) on rejected ones, the mean PRM reward of k fresh target steps
                         sampled at that context (independent of the step the loop committed);
  predicted globally:    the draft's reward distribution over its own solutions (the δ = 0 run) and one global
                         μ_M (the target's mean step reward over its own solutions, the δ = 1.01 run), as the
                         closed forms of rsd_jax.theory.mixture combine them.
Per-context agreement is the mixture identity holding in the loop; the global prediction's miss measures how much
the contexts RSD visits differ from those of either model alone.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from rsd_jax.data.item import Item
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.methods import RSD
from rsd_jax.results import GenerationResult
from rsd_jax.theory import bootstrap, mixture
from rsd_jax.theory.contexts import Context, sample_steps
from rsd_jax.theory.decoded import generate

DRAFT_ONLY, TARGET_ONLY = 0.0, 1.01  # the sweep's ends: every draft step kept, every one rejected


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One RSD run of every problem at δ, as per-problem arrays (n problems, ragged steps)."""

    delta: float
    draft_reward: list[np.ndarray]  # [n][steps] the PRM's reward of the draft's proposal at each step
    target_reward: list[np.ndarray]  # [n][steps] of the target's step where it wrote one, NaN elsewhere
    kept: list[np.ndarray]  # [n][steps] bool: the draft's step was committed
    texts: list[list[str]]  # [n][steps] the committed steps
    correct: np.ndarray  # [n] bool (False when the problems have no grader)

    @property
    def committed_reward(self) -> list[np.ndarray]:
        return [np.where(k, r, t) for k, r, t in zip(self.kept, self.draft_reward, self.target_reward)]

    def rejected_contexts(self) -> list[tuple[int, int]]:
        """(problem, step) of every step the target wrote."""
        return [(i, j) for i, k in enumerate(self.kept) for j in np.flatnonzero(~k)]


def sweep_run(delta: float, items: Sequence[Item], results: Sequence[GenerationResult]) -> SweepRun:
    steps = [r.steps for r in results]
    return SweepRun(
        delta=delta, draft_reward=[np.array([s.reward for s in st], np.float64) for st in steps],
        target_reward=[np.array([s.target_reward for s in st], np.float64) for st in steps],
        kept=[np.array([s.source == "draft" for s in st], bool) for st in steps],
        texts=[[s.text for s in st] for st in steps],
        correct=np.array([bool(i.grade and i.grade(r.text)) for i, r in zip(items, results)]))


def decode_sweep(engine: Engine, items: Sequence[Item], spec: DecodeSpec, *, deltas: Sequence[float],
                 seed: int) -> list[SweepRun]:
    """RSD at each δ (and at the two ends) with the target's step rewards recorded, on the same problems."""
    spec = spec.replace(record_target_reward=True)
    prompts, questions = [i.prompt for i in items], [i.question for i in items]
    runs = []
    for delta in sorted({*deltas, DRAFT_ONLY, TARGET_ONLY}):
        results = generate(engine, prompts, questions=questions, method=RSD(delta=delta), decoding=spec, seed=seed)
        runs.append(sweep_run(delta, items, results))
    return runs


def target_means_at_rejections(engine: Engine, items: Sequence[Item], runs: Sequence[SweepRun], *, k: int,
                               spec: DecodeSpec, batch_size: int,
                               seed: int) -> tuple[dict[float, list[np.ndarray]], dict]:
    """μ̂_M(z) at every rejected context of every run strictly inside the sweep: per δ, per problem [steps] (NaN
    on kept steps), each the mean PRM reward of k target steps sampled at z; and how varied those k steps are
    (contexts, mean distinct steps per context, mean within-context standard deviation of their rewards)."""
    where = [(run.delta, i, j) for run in runs if DRAFT_ONLY < run.delta < TARGET_ONLY
             for i, j in run.rejected_contexts()]
    by_delta = {run.delta: run for run in runs}
    contexts = [Context(i, tuple(by_delta[d].texts[i][:j])) for d, i, j in where]
    samples = sample_steps(engine, items, contexts, writer="target", k=k, spec=spec, batch_size=batch_size,
                           seed=seed) if contexts else None
    out = {run.delta: [np.full(len(r), np.nan) for r in run.draft_reward] for run in runs
           if DRAFT_ONLY < run.delta < TARGET_ONLY}
    for n, (d, i, j) in enumerate(where):
        out[d][i][j] = np.nanmean(samples.rewards[n])
    spread = {"contexts": len(contexts), "samples_per_context": k,
              "distinct_steps": float(np.mean([len(set(t)) for t in samples.texts])) if contexts else None,
              "reward_sd": float(np.mean(np.nanstd(samples.rewards, 1))) if contexts else None}
    return out, spread


def global_prediction(draft_only: SweepRun, target_only: SweepRun, delta: float) -> tuple[Callable, Callable]:
    """The closed-form predictions of acceptance and mean reward at δ from the two ends' runs, as statistics of a
    set of problem indices (bootstrapped jointly: the same problems in both runs)."""
    r, mu = draft_only.draft_reward, target_only.target_reward

    def kept(idx) -> tuple[np.ndarray, np.ndarray]:  # the steps' rewards and the engine's binary ω of them
        steps = np.concatenate([r[i] for i in idx])
        return steps, mixture.weighting_values("binary", steps, delta=delta)

    def acceptance(idx) -> float:
        return float(np.mean(kept(idx)[1]))

    def reward(idx) -> float:
        steps, omega = kept(idx)
        mu_target = float(np.nanmean(np.concatenate([mu[i] for i in idx])))
        return float(np.mean(np.where(omega == 1.0, steps, mu_target)))

    return acceptance, reward


def sweep_rows(runs: Sequence[SweepRun], mu_hat: dict[float, list[np.ndarray]], **bs) -> list[dict]:
    """Per δ: measured acceptance and reward, their per-context and global predictions, the per-context
    difference (measured − predicted, paired by problem), accuracy and the share solved by the draft alone, each
    an Estimate (as a dict)."""
    ends = {run.delta: run for run in runs}
    draft_only, target_only = ends[DRAFT_ONLY], ends[TARGET_ONLY]
    rows = []
    for run in runs:
        n = len(run.kept)
        steps = np.array([len(k) for k in run.kept], np.float64)
        committed = run.committed_reward
        acc_fn, reward_fn = global_prediction(draft_only, target_only, run.delta)
        row = {"delta": run.delta, "n_problems": n, "n_steps": int(steps.sum()),
               "n_rejected": int(sum((~k).sum() for k in run.kept)),
               "measured_acceptance": bootstrap.pooled([k.sum() for k in run.kept], steps, **bs),
               "measured_reward": bootstrap.pooled([np.sum(c) for c in committed], steps, **bs),
               "global_predicted_acceptance": bootstrap.statistic(acc_fn, n, **bs),
               "global_predicted_reward": bootstrap.statistic(reward_fn, n, **bs),
               "accuracy": bootstrap.mean(run.correct, **bs),
               "draft_alone": bootstrap.mean([k.all() for k in run.kept], **bs)}
        if run.delta in mu_hat:
            predicted = [np.where(k, r, m) for k, r, m in zip(run.kept, run.draft_reward, mu_hat[run.delta])]
            rejected = [(~k).sum() for k in run.kept]
            row.update(
                context_predicted_reward=bootstrap.pooled([np.sum(p) for p in predicted], steps, **bs),
                measured_minus_predicted=bootstrap.pooled([np.sum(c - p) for c, p in zip(committed, predicted)],
                                                          steps, **bs),
                target_reward_at_rejections=bootstrap.pooled(
                    [np.sum(t[~k]) for t, k in zip(run.target_reward, run.kept)], rejected, **bs),
                mu_hat_at_rejections=bootstrap.pooled([np.sum(m[~k]) for m, k in zip(mu_hat[run.delta], run.kept)],
                                                      rejected, **bs))
        rows.append({key: v.as_dict() if isinstance(v, bootstrap.Estimate) else v for key, v in row.items()})
    return rows


# ------------------------------------------------------------------------------------------------ paper figures
def reward_histograms(run: SweepRun, bins: np.ndarray) -> dict[str, np.ndarray]:
    """Fig. 3-style: counts per reward bin (bins [m + 1] edges) of the draft's kept steps, its rejected steps, and
    the target's steps written in their place."""
    r, kept = np.concatenate(run.draft_reward), np.concatenate(run.kept)
    target = np.concatenate(run.target_reward)
    return {"draft_kept": np.histogram(r[kept], bins)[0], "draft_rejected": np.histogram(r[~kept], bins)[0],
            "target_at_rejections": np.histogram(target[~kept & np.isfinite(target)], bins)[0]}


def accuracy_by_level(levels: Sequence, correct: np.ndarray, **bs) -> dict:
    """Fig. B.1-style: accuracy of each difficulty level (levels [n], correct [n]) with its interval."""
    levels = np.asarray(levels)
    return {lv: bootstrap.mean(np.asarray(correct)[levels == lv], **bs) for lv in sorted(set(levels.tolist()))}


@dataclasses.dataclass(frozen=True)
class Empirical:
    n_problems: int
    samples_per_context: int
    temperature: float
    sweep: list[dict]  # sweep_rows
    target_spread: dict  # how varied the target's k steps at a rejected context are (target_means_at_rejections)
    runs: list[SweepRun]  # the decoded runs (figures)
    levels: list  # [n] each problem's difficulty level (None when the problems have none)

    def run_at(self, delta: float) -> SweepRun:
        return min(self.runs, key=lambda r: abs(r.delta - delta))

    def by_level(self, **bs) -> dict[float, dict]:
        """Accuracy by level at every δ of the sweep."""
        return {run.delta: accuracy_by_level(self.levels, run.correct, **bs) for run in self.runs}

    def summary(self) -> dict:
        by_level = {f"{d:g}": {str(lv): e.as_dict() for lv, e in levels.items()}
                    for d, levels in self.by_level().items()} if self.levels[0] is not None else None
        return {"n_problems": self.n_problems, "samples_per_context": self.samples_per_context,
                "temperature": self.temperature, "target_spread": self.target_spread, "sweep": self.sweep, "accuracy_by_level": by_level}


def empirical(engine: Engine, items: Sequence[Item], spec: DecodeSpec, *, deltas: Sequence[float],
              samples_per_context: int, batch_size: int, seed: int) -> Empirical:
    """The sweep, the per-context μ̂_M(z) at its rejections and the rows (see the module's docstring)."""
    runs = decode_sweep(engine, items, spec, deltas=deltas, seed=seed)
    mu_hat, spread = target_means_at_rejections(engine, items, runs, k=samples_per_context, spec=spec,
                                                batch_size=batch_size, seed=seed + 1)
    return Empirical(len(items), samples_per_context, spec.sampling.temperature, sweep_rows(runs, mu_hat), spread,
                     runs, [i.level for i in items])
