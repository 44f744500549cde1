"""The RSD loop's values: the traced knobs it is called with, its state between steps, the per-step trace, the
accounting, the three caches and what it returns. Shapes: B rows, T committed-token buffer, Tp the PRM's view
buffer, S = max_steps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.decoding.usage import Usage

if TYPE_CHECKING:
    from rsd_jax.engine import Engine
    from rsd_jax.models.model import Model

DRAFT, TARGET, NO_STEP = 0, 1, -1  # a step's source in the trace
DRAFTING, SCORING, WAITING, REWRITING, DONE, HELD = 0, 1, 2, 3, 4, 5  # a row's phase


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Knobs:
    """The loop's traced controls (changing them does not recompile: a δ sweep compiles once).

    acceptance: δ (a scalar, or one per row [B]), p, α of the weighting ω, and q, the acceptance of a reward equal
    to δ in the calibrated budget mode. budget: [] the fraction of steps the target may write (spec.online_budget).
    mu_target: [] the target's mean step reward μ_M where known (+inf: unknown), for δ* = min(μ_M, δ_γ) online.
    histogram: the running reward histogram it starts from (e.g. seeded with a calibration run's rewards)."""

    acceptance: acceptance.AcceptanceParams
    budget: jax.Array
    histogram: acceptance.RewardHistogram
    mu_target: jax.Array

    @classmethod
    def of_rule(cls, rule: acceptance.Rule, *, rows: int | None = None, histogram_bins: int = 256,
                calibration_rewards=None) -> "Knobs":
        """The traced leaves of a host rule (acceptance.Rule.create; δ per prompt padded to `rows`), with the
        histogram empty or seeded by a calibration run's rewards [n]. The rule's static half (weighting, budget
        mode) goes into the spec (methods.RSD.spec): it picks the code, these values are traced."""
        traced = rule.traced(rows)
        return cls(acceptance=traced.params, budget=traced.budget, mu_target=traced.mu_target,
                   histogram=acceptance.RewardHistogram.create(histogram_bins, calibration_rewards))

    @classmethod
    def create(cls, delta=acceptance.DEFAULT_DELTA, p: float = acceptance.DEFAULT_P,
               alpha: float = acceptance.DEFAULT_ALPHA, budget: float | None = None, histogram_bins: int = 256,
               calibration_rewards=None, *, q: float = 1.0, mu_target: float | None = None) -> "Knobs":
        """of_rule of the binary rule with these values (a per-row δ [B] kept as given)."""
        return cls.of_rule(acceptance.Rule.create(delta=delta, p=p, alpha=alpha, q=q, budget=budget,
                                                  mu_target=mu_target),
                           histogram_bins=histogram_bins, calibration_rewards=calibration_rewards)

    def rule(self, spec: DecodeSpec) -> acceptance.Rule:
        """The acceptance rule these knobs set for the spec's weighting and budget mode."""
        return acceptance.Rule(weighting=spec.weighting, mode=spec.budget_mode, params=self.acceptance,
                               budget=self.budget, mu_target=self.mu_target)

    @classmethod
    def accept_all(cls, spec: DecodeSpec) -> "Knobs":
        """Binary δ = 0: every step the draft writes is kept (sampling with scores: Best-of-N, beam search)."""
        return cls.create(delta=0.0, histogram_bins=spec.histogram_bins)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Trace:
    """Per-step record of each row: which model wrote it, the draft's reward, the threshold, its span; with
    spec.record_target_reward, the PRM's reward of the target's step where the target wrote it (else None: the
    default loop carries nothing more)."""

    source: jax.Array  # [B, S] int8: DRAFT, TARGET or NO_STEP
    reward: jax.Array  # [B, S] float32 PRM reward of the draft's proposal for the step
    delta: jax.Array  # [B, S] float32 threshold in force when the step was decided
    end: jax.Array  # [B, S] int32 committed length after the step (the step spans [previous end, end))
    target_reward: jax.Array | None = None  # [B, S] float32 reward of the target's step, NaN where it did not write

    @classmethod
    def empty(cls, batch: int, steps: int, *, target_reward: bool = False) -> "Trace":
        nan = lambda: jnp.full((batch, steps), jnp.nan, jnp.float32)  # noqa: E731
        return cls(source=jnp.full((batch, steps), NO_STEP, jnp.int8), reward=nan(), delta=nan(),
                   end=jnp.zeros((batch, steps), jnp.int32), target_reward=nan() if target_reward else None)

    def record(self, index: jax.Array, live: jax.Array, source, reward, delta, end, *,
               target_reward: jax.Array | None = None) -> "Trace":
        """Writes step `index` [B] of the live rows [B]; target_reward [B] only when the trace holds it."""
        rows = jnp.arange(index.shape[0])
        slot = jnp.where(live, index, self.source.shape[1])

        def put(buf, value):
            return buf.at[rows, slot].set(jnp.broadcast_to(value, index.shape).astype(buf.dtype), mode="drop")

        scored = None if self.target_reward is None else put(self.target_reward, target_reward)
        return Trace(put(self.source, source), put(self.reward, reward), put(self.delta, delta),
                     put(self.end, end), scored)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RSDStats:
    """Accounting, per row [B] unless marked []."""

    draft_accepted_tokens: jax.Array
    draft_discarded_tokens: jax.Array
    target_tokens: jax.Array
    draft_steps: jax.Array  # steps accepted from the draft
    target_steps: jax.Array  # steps written by the target
    target_invocations: jax.Array  # [] loop iterations in which the target ran
    iterations: jax.Array  # [] loop iterations
    nonfinite: jax.Array  # [B] int32 bit flags: 1 draft logits, 2 target logits, 4 PRM reward not finite,
    #                       8 a step did not fit the PRM's view (its re-encoding or the PRM's buffer)
    draft: Usage
    target: Usage
    prm: Usage
    cut_off: jax.Array  # [B] bool: ended by the batch-wide patience cut-off (spec.patience), not by its own limits

    @classmethod
    def zeros(cls, batch: int) -> "RSDStats":
        z = jnp.zeros((batch,), jnp.int32)
        s = jnp.zeros((), jnp.int32)
        return cls(z, z, z, z, z, s, s, z, Usage.zeros(batch), Usage.zeros(batch), Usage.zeros(batch),
                   jnp.zeros((batch,), bool))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RSDCaches:
    """The three models' KV caches: draft and target over the committed tokens [.., T, ..], the PRM over its view
    [.., Tp, ..]. Passed to the loop (and donated) so that they are allocated once, outside it."""

    draft: KVCache
    target: KVCache
    prm: KVCache

    @classmethod
    def zeros(cls, engine: "Engine", prompts: Prompts) -> "RSDCaches":
        batch, t_cap = prompts.tokens.shape
        return cls(draft=engine.draft.init_cache(batch, t_cap), target=engine.target.init_cache(batch, t_cap),
                   prm=engine.prm.init_cache(batch, prompts.prm_tokens.shape[1]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepInProgress:
    """A step one model is writing, per row: its tokens so far and how it ended."""

    out: jax.Array  # [B, M] int32
    written: jax.Array  # [B] int32 tokens written (0: the step has not started)
    current: jax.Array  # [B] int32 the token fed next (after the step ended: its last token, not yet fed)
    eos: jax.Array  # [B] bool ended at EOS
    nonfinite: jax.Array  # [B] bool some logits were NaN or inf

    @classmethod
    def empty(cls, batch: int, width: int) -> "StepInProgress":
        no = jnp.zeros((batch,), bool)
        return cls(out=jnp.zeros((batch, width), jnp.int32), written=jnp.zeros((batch,), jnp.int32),
                   current=jnp.zeros((batch,), jnp.int32), eos=no, nonfinite=no)

    def restart(self, rows: jax.Array) -> "StepInProgress":
        """The rows [B] bool start a new step."""
        return dataclasses.replace(self, written=jnp.where(rows, 0, self.written), eos=self.eos & ~rows,
                                   nonfinite=self.nonfinite & ~rows)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rounds:
    """The lock-step setting's batch-wide counters [] (spec.rounds; unused otherwise): a round ends when every
    running row is HELD at a step boundary. unchanged: consecutive rounds, up to the last, in which no row
    finished; finished: some row finished in this round; last: this round is the patience cut-off's last."""

    unchanged: jax.Array  # [] int32
    finished: jax.Array  # [] bool
    last: jax.Array  # [] bool

    @classmethod
    def start(cls, patience: int) -> "Rounds":
        return cls(unchanged=jnp.zeros((), jnp.int32), finished=jnp.bool_(False),
                   last=jnp.bool_(patience > 0 and patience - 1 <= 0))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoopState:
    """The RSD loop's state between ticks (rsd_jax.decoding.rsd)."""

    phase: jax.Array  # [B] int32: DRAFTING, SCORING, WAITING, REWRITING, HELD or DONE
    tokens: jax.Array  # [B, T] committed tokens
    length: jax.Array  # [B]
    prompt_length: jax.Array  # [B]
    n_steps: jax.Array  # [B] committed steps
    prm_tokens: jax.Array  # [B, Tp]
    prm_length: jax.Array  # [B]
    drafted: StepInProgress
    rewritten: StepInProgress
    reward: jax.Array  # [B] float32 the PRM's reward of the draft's step now decided or waiting for the target
    delta: jax.Array  # [B] float32 the threshold it was decided with
    scored: jax.Array  # [B] float32 the PRM's reward of the target's step just written (record_target_reward)
    overflow: jax.Array  # [B] bool the draft's step did not fit the PRM's view (the row ends after this step)
    caches: "RSDCaches"
    histogram: acceptance.RewardHistogram
    trace: Trace
    stats: RSDStats
    rounds: Rounds
    row_keys: jax.Array  # [B] a PRNG key per row


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RSDOutput:
    """What `rsd_decode` returns (the caches stay on the device and are dropped)."""

    tokens: jax.Array
    length: jax.Array
    prompt_length: jax.Array
    n_steps: jax.Array
    prm_tokens: jax.Array
    prm_length: jax.Array
    trace: Trace
    stats: RSDStats
    histogram: acceptance.RewardHistogram


def new_caches(engine: "Engine", prompts: Prompts) -> RSDCaches:
    """The three caches, zeros (each built straight into its sharding when the engine has a mesh)."""
    shape = jax.eval_shape(RSDCaches.zeros, engine, prompts)
    if engine.mesh is None:
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
    return jax.tree.map(lambda s, where: _zeros(s.shape, s.dtype, where), shape, cache_shardings(engine, shape))


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "where"))
def _zeros(shape: tuple[int, ...], dtype, where: jax.sharding.NamedSharding) -> jax.Array:
    """Zeros built in their sharding, each device writing its own shard (no copy from a first device)."""
    return jax.lax.with_sharding_constraint(jnp.zeros(shape, dtype), where)


def cache_shardings(engine: "Engine", caches: RSDCaches) -> RSDCaches:
    """Where the three caches live on the engine's mesh: batch over "data", KV heads over the tensor-parallel axes
    when whole heads divide them."""
    def of(model: Model) -> KVCache:
        specs = KVCache.specs(model.config.num_kv_heads, engine.mesh)
        return jax.tree.map(lambda s: jax.sharding.NamedSharding(engine.mesh, s), specs,
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))

    return RSDCaches(draft=of(engine.draft), target=of(engine.target), prm=of(engine.prm))
