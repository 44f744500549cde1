"""The budget mode's calibration: (δ, q) of the theory's optimum from a calibration split's draft rewards, and μ_M.

A budget b (rsd.budget: the fraction of RSD's steps the target may write) is spent by the randomised threshold of
rsd_jax.decoding.acceptance.threshold_rule over the draft's step rewards. They come from a split that is never the
evaluated one (rsd.calibration, rsd_jax.config.calibration_data):
1. the draft writes every step of the split's problems (RSD at δ = 0) and the PRM scores each in context: the
   first (δ, q);
2. the draft's rewards at RSD's own contexts differ from those at draft-only contexts (after a target step the
   prefix is better and the draft's next step scores higher), so that δ under-spends the budget; each of
   rsd.calibration_rounds rounds decodes the split with RSD at the current (δ, q) and recomputes (δ, q) from the
   rewards of the draft's proposals there (a fixed-point iteration; the share each round realised is kept);
3. with rsd.calibration_target the target decodes the split and the PRM scores its steps the same way (the target
   in the draft's seat, at δ = 0): their mean is μ_M, and the rule is δ* = min(μ_M, δ_γ): where the target's steps
   score lower on average than the draft's upper-γ quantile, the budget is left partly unspent (derivation (c) of
   rsd_jax.theory.mixture).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rsd_jax.api import generate
from rsd_jax.config import RunConfig, calibration_data
from rsd_jax.data.problems import load_items
from rsd_jax.decoding import acceptance
from rsd_jax.errors import ConfigError, NumericalError
from rsd_jax.methods import RSD

if TYPE_CHECKING:
    from rsd_jax.data.item import Item
    from rsd_jax.engine import Engine


@dataclasses.dataclass(frozen=True)
class CalibrationSplit:
    """items: the calibration split's problems; draft_rewards [n]: the PRM's rewards of the draft's steps there
    (draft-only contexts); mu_target: μ_M, the mean reward of the target's steps there (None: not measured)."""

    items: tuple["Item", ...]
    draft_rewards: np.ndarray
    mu_target: float | None


@dataclasses.dataclass(frozen=True)
class BudgetCalibration:
    """The budget's rule: rule, the calibrated acceptance.Rule (its δ, q and μ_M: None when δ_γ alone; the budget
    mode's base rule with the threshold replaced); rewards [n]: the draft proposals' rewards it was computed from
    (they also seed the online histogram); shares: the target share RSD realised on the split in each round;
    problems: the split's size."""

    rule: acceptance.Rule
    rewards: np.ndarray
    shares: tuple[float, ...]
    problems: int

    budget = property(lambda self: self.rule.budget, doc="the fraction of steps the target may write")
    delta = property(lambda self: self.rule.params.delta, doc="the calibrated threshold δ")
    q = property(lambda self: self.rule.params.q, doc="the acceptance of a reward equal to δ")
    mu_target = property(lambda self: self.rule.mu_target, doc="the μ_M the rule used (None: δ_γ alone)")

    def method(self, rsd: RSD) -> RSD:
        """`rsd` (a budget-mode RSD) with this calibration's threshold, q, μ_M and histogram seed."""
        rule = rsd.rule.updated(delta=self.delta, q=self.q, mu_target=self.mu_target)
        return dataclasses.replace(rsd, rule=rule, calibration_rewards=self.rewards if rsd.online_budget else None)


def decode_steps(engine: "Engine", items: Sequence["Item"], cfg: RunConfig, method: RSD) -> list[dict]:
    """Every step RSD (`method`) takes on `items` as {source, reward} (reward: the PRM's reward of the draft's
    proposal in that context), in batches of decoding.batch_size; non-finite rewards are a NumericalError."""
    bs, steps = cfg.decoding.batch_size, []
    for start in range(0, len(items), bs):
        chunk = items[start:start + bs]
        results = generate(engine, [i.prompt for i in chunk], questions=[i.question for i in chunk], method=method,
                           decoding=cfg.decoding.spec(), seed=cfg.decoding.seed + start, pad_batch_to=bs)
        steps += [{"source": s.source, "reward": s.reward} for r in results for s in r.steps]
    bad = sum(not np.isfinite(s["reward"]) for s in steps)
    if bad:
        raise NumericalError(f"rsd.budget: cannot calibrate, the PRM gave non-finite rewards to {bad} of the "
                             f"{len(steps)} steps of the calibration split (is the PRM checkpoint broken?)")
    return steps


def step_rewards(engine: "Engine", items: Sequence["Item"], cfg: RunConfig, *, role: str = "draft") -> np.ndarray:
    """The PRM's rewards [n] of every step `role` ("draft" or "target") writes on `items`, each scored in its own
    context (RSD at δ = 0 with that model in the draft's seat)."""
    seat = engine if role == "draft" else dataclasses.replace(engine, draft=engine.target)
    return np.asarray([s["reward"] for s in decode_steps(seat, items, cfg, RSD(delta=0.0))], np.float64)


def calibration_split(engine: "Engine", cfg: RunConfig, tokenizer=None) -> CalibrationSplit:
    """The draft's step rewards on cfg.rsd.calibration's problems, and μ_M with rsd.calibration_target.
    tokenizer: the draft's (for the chat template)."""
    data = calibration_data(cfg.rsd, cfg.data)
    if data is None:
        raise ConfigError("rsd.budget needs rsd.calibration: the split whose draft rewards set the threshold, never "
                          "the evaluated one (e.g. rsd.calibration=dev on the embedded task)")
    items = tuple(load_items(data, None, tokenizer))
    rewards = step_rewards(engine, items, cfg)
    mu_target = float(np.mean(step_rewards(engine, items, cfg, role="target"))) if cfg.rsd.calibration_target else None
    return CalibrationSplit(items=items, draft_rewards=rewards, mu_target=mu_target)


def calibrate_budget(engine: "Engine", cfg: RunConfig, split: CalibrationSplit | None = None, *,
                     tokenizer=None, use_mu: bool = True) -> BudgetCalibration:
    """The rule of cfg.rsd.budget: from the split's draft rewards, then rsd.calibration_rounds fixed-point rounds
    at RSD's own contexts (none once the rule is slack, δ* = μ_M). split: computed once and shared (default:
    calibration_split); use_mu: apply μ_M when the split measured it (False: δ_γ alone)."""
    split = split or calibration_split(engine, cfg, tokenizer)
    rule = acceptance.Rule.create(budget=cfg.rsd.budget, mu_target=split.mu_target if use_mu else None)
    rewards = split.draft_rewards
    rule = acceptance.calibrated(rule, rewards)
    shares = []
    for _ in range(cfg.rsd.calibration_rounds):
        if rule.mu_target is not None and rule.params.delta == rule.mu_target:
            break  # the budget does not bind: δ* = μ_M whatever the rewards' quantile (rounds would not move it)
        steps = decode_steps(engine, split.items, cfg, RSD(rule=rule))
        shares.append(float(np.mean([s["source"] == "target" for s in steps])))
        rewards = np.asarray([s["reward"] for s in steps], np.float64)
        rule = acceptance.calibrated(rule, rewards)
    return BudgetCalibration(rule=rule, rewards=rewards, shares=tuple(shares), problems=len(split.items))
