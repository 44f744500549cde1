"""Decoding methods as values: `generate(engine, prompts, method=RSD(delta=0.8))`.

Each method is a frozen dataclass of its parameters (the one home of their defaults). It knows its static part
(`spec`: what it changes in the decoding spec, e.g. RSD's weighting, Best-of-N's sampling temperature), runs its
jitted loop on an encoded batch (`run`), and turns the loop's arrays into per-prompt results (rsd_jax.results).
The config's method names map onto these classes in one place (`BY_NAME`, `from_options`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Protocol, Sequence

import jax
import numpy as np

from rsd_jax import results as res
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.best_of_n import AGGREGATES, best_of_n, majority_vote, sample_n
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import Knobs
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.errors import ConfigError, InputError
from rsd_jax.placement import to_host
from rsd_jax.results import GenerationResult


class Method(Protocol):
    """What `generate` needs of a method."""

    name: ClassVar[str]  # the config's name for it
    scored: ClassVar[bool]  # its steps carry PRM rewards (the others record NaN by design)

    def spec(self, decoding: DecodeSpec) -> DecodeSpec:
        """The static spec of its loop, from the decoding settings (budgets, sampling, chunk)."""

    def run(self, engine: Engine, batch: Prompts, *, prompts: Sequence[str], key: jax.Array,
            spec: DecodeSpec) -> list[GenerationResult]:
        """Results for the first len(prompts) rows of `batch` (the rest are padding)."""


_RULE_KEYWORDS = ("delta", "weighting", "p", "alpha", "q", "budget", "online_budget", "mu_target")


@dataclasses.dataclass(frozen=True, init=False)
class RSD:
    """Reward-guided speculative decoding: one acceptance rule (acceptance.Rule, held on the host; its values traced
    in the loop, so a sweep compiles once) and how the target writes its steps.

    rule: the weighting ω and its parameters (δ may be one threshold per prompt), or the budget mode: the fraction
    of steps the target may write spent by the theory's optimum (acceptance.threshold_rule; binary only),
    calibrated (the randomised threshold (δ, q) set from a calibration split's rewards, rsd_jax.calibration) or
    online (the same rule over a running histogram of the draft's rewards seeded by calibration_rewards [n], with
    δ* = min(μ_M, δ_γ) when μ_M is known). The keywords delta, weighting, p, alpha, q, budget, online_budget and
    mu_target set the rule's fields (acceptance.Rule.create; given with `rule`, they change that rule); the
    attributes of the same names read them back: RSD(delta=0.8).delta == 0.8. speculative_gamma > 0: the target
    writes its steps by speculative decoding with γ draft tokens a round."""

    rule: acceptance.Rule = dataclasses.field(default_factory=acceptance.Rule.create)
    speculative_gamma: int = 0
    calibration_rewards: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    name: ClassVar[str] = "rsd"
    scored: ClassVar[bool] = True

    def __init__(self, rule: acceptance.Rule | None = None, speculative_gamma: int = 0,
                 calibration_rewards: np.ndarray | None = None, **keywords) -> None:
        """keywords: acceptance.Rule.create's (_RULE_KEYWORDS), setting the fields of `rule` (default: the default
        rule)."""
        unknown = sorted(set(keywords) - set(_RULE_KEYWORDS))
        if unknown:
            raise ConfigError(f"RSD got unknown keyword(s) {', '.join(unknown)}; the rule's are "
                              f"{', '.join(_RULE_KEYWORDS)}")
        rule = acceptance.Rule.create() if rule is None else rule
        if not isinstance(rule, acceptance.Rule):
            raise ConfigError(f"RSD rule must be an acceptance.Rule (acceptance.Rule.create(...)), got "
                              f"{type(rule).__name__}")
        object.__setattr__(self, "rule", rule.updated(**keywords) if keywords else rule)
        object.__setattr__(self, "speculative_gamma", speculative_gamma)
        object.__setattr__(self, "calibration_rewards", calibration_rewards)

    def spec(self, decoding: DecodeSpec) -> DecodeSpec:
        rule = self.rule
        return decoding.replace(weighting=rule.weighting, budget=rule.budget is not None,
                                online_budget=rule.mode == "online", speculative_gamma=self.speculative_gamma)

    def knobs(self, spec: DecodeSpec, rows: int) -> Knobs:
        return Knobs.of_rule(self.rule, rows=rows, histogram_bins=spec.histogram_bins,
                             calibration_rewards=self.calibration_rewards)

    def run(self, engine: Engine, batch: Prompts, *, prompts: Sequence[str], key: jax.Array,
            spec: DecodeSpec) -> list[GenerationResult]:
        out = rsd_decode(engine, prompts=batch, knobs=self.knobs(spec, batch.length.shape[0]), key=key, spec=spec)
        return res.rsd_results(engine.models, prompts, to_host(out))


def _rule_field(name: str) -> property:
    return property(lambda self: self.rule.settings()[name], doc=f"the rule's {name} (acceptance.Rule.create)")


for _name in _RULE_KEYWORDS:  # read access to the rule's fields (the dataclass's fields are rule and the others)
    setattr(RSD, _name, _rule_field(_name))


@dataclasses.dataclass(frozen=True)
class TargetOnly:
    """The target alone: the baseline RSD's FLOPs are compared with."""

    name: ClassVar[str] = "target"
    scored: ClassVar[bool] = False
    role: ClassVar[str] = "target"

    def spec(self, decoding: DecodeSpec) -> DecodeSpec:
        return decoding

    def run(self, engine: Engine, batch: Prompts, *, prompts: Sequence[str], key: jax.Array,
            spec: DecodeSpec) -> list[GenerationResult]:
        from rsd_jax.decoding.single import single_decode

        out = single_decode(engine, role=self.role, prompts=batch, key=key, spec=spec)
        return res.single_results(engine.models, prompts, to_host(out), self.name,
                                  split_stop=spec.stop_on_split_delimiter)


@dataclasses.dataclass(frozen=True)
class DraftOnly(TargetOnly):
    """The draft alone."""

    name: ClassVar[str] = "draft"
    role: ClassVar[str] = "draft"


@dataclasses.dataclass(frozen=True)
class Speculative:
    """Token-level speculative decoding (the target's distribution, fewer target passes): γ draft tokens a round."""

    gamma: int = 4

    name: ClassVar[str] = "speculative"
    scored: ClassVar[bool] = False

    def spec(self, decoding: DecodeSpec) -> DecodeSpec:
        return decoding

    def run(self, engine: Engine, batch: Prompts, *, prompts: Sequence[str], key: jax.Array,
            spec: DecodeSpec) -> list[GenerationResult]:
        from rsd_jax.decoding.single import SingleOutput
        from rsd_jax.decoding.speculative import speculative_decode

        _one_device(engine, self.name)
        out = jax.device_get(speculative_decode(engine, prompts=batch, key=key, spec=spec, gamma=self.gamma))
        single = SingleOutput(tokens=out.tokens, length=out.length, prompt_length=out.prompt_length,
                              ended_eos=out.ended_eos, nonfinite=np.zeros_like(out.ended_eos), usage=out.target)
        results = res.single_results(engine.models, prompts, single, "target", split_stop=spec.stop_on_split_delimiter)
        for i, r in enumerate(results):
            draft, acc = float(out.draft.useful_flops[i]), r.accounting
            acc["useful_flops"]["draft"] = draft
            acc["tokens_processed"]["draft"] = int(out.draft.tokens[i])
            acc["draft_kept_tokens"] = int(out.draft_kept[i])
            acc["executed_flops"] += float(out.draft.executed_flops) / len(prompts)
            acc["batch_passes"]["draft"] = res.batch_passes(out.draft)
            acc["useful_flops_total"] += draft
            acc["flops_ratio_vs_target"] = acc["target_only_flops"] / acc["useful_flops_total"]
        return results


@dataclasses.dataclass(frozen=True)
class _Sampled:
    """n draft samples per prompt at `temperature`, each step scored by the PRM (the RSD loop, every step kept)."""

    n: int = 4
    temperature: float = 0.8

    scored: ClassVar[bool] = True

    def spec(self, decoding: DecodeSpec) -> DecodeSpec:
        return decoding.replace(sampling=dataclasses.replace(decoding.sampling, temperature=self.temperature))

    def samples(self, engine: Engine, batch: Prompts, prompts: Sequence[str], key: jax.Array, spec: DecodeSpec):
        out = to_host(sample_n(engine, prompts=batch, key=key, spec=spec, n=self.n))
        return out, res.rsd_results(engine.models, [p for p in prompts for _ in range(self.n)], out)


@dataclasses.dataclass(frozen=True)
class BestOfN(_Sampled):
    """Best-of-N: the sample whose step rewards, aggregated by `select` (last, min, prod), score highest."""

    select: str = "min"

    name: ClassVar[str] = "best_of_n"

    def __post_init__(self) -> None:
        if self.select not in AGGREGATES:
            raise ConfigError(f"best_of_n select={self.select!r} is not one of {', '.join(AGGREGATES)}")

    def run(self, engine: Engine, batch: Prompts, *, prompts: Sequence[str], key: jax.Array,
            spec: DecodeSpec) -> list[GenerationResult]:
        out = to_host(best_of_n(engine, prompts=batch, key=key, spec=spec, n=self.n, aggregate=self.select))
        rows = res.rsd_results(engine.models, [p for p in prompts for _ in range(self.n)], out.samples)
        return [res.grouped(rows[b * self.n:(b + 1) * self.n], int(out.chosen[b]), self.n)
                for b in range(len(prompts))]


@dataclasses.dataclass(frozen=True)
class Majority(_Sampled):
    """Majority voting over n samples: the most common answer, read by `extract` (the problems' answer reader)."""

    extract: Callable[[str], Any] | None = dataclasses.field(default=None, compare=False)

    name: ClassVar[str] = "majority"

    def run(self, engine: Engine, batch: Prompts, *, prompts: Sequence[str], key: jax.Array,
            spec: DecodeSpec) -> list[GenerationResult]:
        if self.extract is None:
            raise InputError("majority voting needs an answer extractor for these problems")
        _, rows = self.samples(engine, batch, prompts, key, spec)
        picked = []
        for b in range(len(prompts)):
            answers = [self.extract(r.text) for r in rows[b * self.n:(b + 1) * self.n]]
            winner = majority_vote(answers)
            picked.append(res.grouped(rows[b * self.n:(b + 1) * self.n],
                                      answers.index(winner) if winner is not None else 0, self.n))
        return picked


@dataclasses.dataclass(frozen=True)
class Beam:
    """Process beam search with the PRM: `width` beams, each expanded by `expand` sampled steps."""

    width: int = 4
    expand: int = 4
    temperature: float = 0.8

    name: ClassVar[str] = "beam_search"
    scored: ClassVar[bool] = True

    def spec(self, decoding: DecodeSpec) -> DecodeSpec:
        return decoding.replace(sampling=dataclasses.replace(decoding.sampling, temperature=self.temperature))

    def run(self, engine: Engine, batch: Prompts, *, prompts: Sequence[str], key: jax.Array,
            spec: DecodeSpec) -> list[GenerationResult]:
        from rsd_jax.decoding.beam_search import beam_search

        _one_device(engine, self.name)
        out = jax.device_get(beam_search(engine, prompts=batch, key=key, spec=spec, width=self.width,
                                         expansions=self.expand))
        k = self.width * self.expand
        rows = res.rsd_results(engine.models, [p for p in prompts for _ in range(k)], out.beams)
        usage = np.asarray(out.beams.stats.draft.useful_flops) + np.asarray(out.beams.stats.prm.useful_flops)
        share = usage / max(usage.sum(), 1.0) * float(out.useful_flops)
        return [res.grouped(rows[b * k:(b + 1) * k], 0, k, float(share[b * k:(b + 1) * k].sum()))
                for b in range(len(prompts))]


def _one_device(engine: Engine, name: str) -> None:
    if engine.mesh is not None:
        raise InputError(f"method {name!r} runs on one device (an engine without a mesh) for now")


#: Every method by its config name (the CLI, the evaluator and the docs read this one table).
BY_NAME: dict[str, type] = {cls.name: cls for cls in (RSD, TargetOnly, DraftOnly, Speculative, BestOfN, Majority,
                                                       Beam)}
NAMES = tuple(BY_NAME)
SCORED = tuple(name for name, cls in BY_NAME.items() if cls.scored)


def from_options(name: str, options, *, delta=None, extract: Callable | None = None) -> Method:
    """The method `name` with the options that apply to it: `options` holds the config's rsd section's keys
    (rsd_jax.config.RSDConfig); delta overrides its δ; extract: the problems' answer reader (majority voting)."""
    o = options
    if name not in BY_NAME:
        raise ConfigError(f"method {name!r} is not one of {', '.join(NAMES)}")
    if name == "rsd":
        rule = o.rule() if delta is None else o.rule().updated(delta=delta)
        return RSD(rule=rule, speculative_gamma=o.speculative_gamma)
    if name == "speculative":
        return Speculative(gamma=o.speculative_gamma or Speculative.gamma)
    if name == "best_of_n":
        return BestOfN(n=o.n, temperature=o.sample_temperature, select=o.aggregate)
    if name == "majority":
        return Majority(n=o.n, temperature=o.sample_temperature, extract=extract)
    if name == "beam_search":
        return Beam(width=o.beam_width, expand=o.beam_expansions, temperature=o.sample_temperature)
    return BY_NAME[name]()

