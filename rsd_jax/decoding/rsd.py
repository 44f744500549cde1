"""The RSD loop: one jitted `lax.while_loop` over reasoning steps for a batch of prompts.

One iteration = one reasoning step for every live row (DESIGN §3):
  1. the draft catches up on what was committed since it last saw the sequence, and writes a step;
  2. the PRM catches up on its own view of the sequence and scores the new step at its delimiter;
  3. the mixture accepts or rejects each row's step (A_ω: accept iff u <= ω(r); binary: r >= δ);
  4. only if some row rejected (`lax.cond`), the target catches up lazily and writes the step for those rows;
  5. the chosen step is committed; a rejected draft step is rolled back by lowering the draft's length,
     and the PRM's view gets the target's step instead of the draft's.

Shapes: B rows, T committed-token buffer (prompt bucket + max_new_tokens), Tp the PRM's view buffer,
S = max_steps, M = max_step_tokens.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.generator import Step, TokenTables, catch_up, commit, write_step
from rsd_jax.decoding.prm_view import PRMView
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.speculative import speculative_write
from rsd_jax.decoding.subbatch import write_step_in_groups
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.decoding.work import Work
from rsd_jax.models.model import Model

DRAFT, TARGET, NO_STEP = 0, 1, -1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Trace:
    """Per-step record of each row: which model wrote it, the draft's reward, the threshold, its span."""

    source: jax.Array  # [B, S] int8: DRAFT, TARGET or NO_STEP
    reward: jax.Array  # [B, S] float32 PRM reward of the draft's proposal for the step
    delta: jax.Array  # [B, S] float32 threshold in force when the step was decided
    end: jax.Array  # [B, S] int32 committed length after the step (the step spans [previous end, end))

    @classmethod
    def empty(cls, batch: int, steps: int) -> "Trace":
        return cls(source=jnp.full((batch, steps), NO_STEP, jnp.int8),
                   reward=jnp.full((batch, steps), jnp.nan, jnp.float32),
                   delta=jnp.full((batch, steps), jnp.nan, jnp.float32),
                   end=jnp.zeros((batch, steps), jnp.int32))

    def record(self, index: jax.Array, live: jax.Array, source, reward, delta, end) -> "Trace":
        rows = jnp.arange(index.shape[0])
        slot = jnp.where(live, index, self.source.shape[1])

        def put(buf, value):
            return buf.at[rows, slot].set(jnp.broadcast_to(value, index.shape).astype(buf.dtype), mode="drop")

        return Trace(put(self.source, source), put(self.reward, reward), put(self.delta, delta),
                     put(self.end, end))


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
    draft: Work
    target: Work
    prm: Work

    @classmethod
    def zeros(cls, batch: int) -> "RSDStats":
        z = jnp.zeros((batch,), jnp.int32)
        s = jnp.zeros((), jnp.int32)
        return cls(z, z, z, z, z, s, s, z, Work.zeros(batch), Work.zeros(batch), Work.zeros(batch))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RSDCaches:
    """The three models' KV caches: draft and target over the committed tokens [.., T, ..], the PRM over its view
    [.., Tp, ..]. Passed to the loop (and donated) so that they are allocated once, outside it."""

    draft: KVCache
    target: KVCache
    prm: KVCache

    @classmethod
    def zeros(cls, draft: Model, target: Model, prm: Model, prompts: Prompts) -> "RSDCaches":
        batch, t_cap = prompts.tokens.shape
        return cls(draft=draft.init_cache(batch, t_cap), target=target.init_cache(batch, t_cap),
                   prm=prm.init_cache(batch, prompts.prm_tokens.shape[1]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RSDState:
    tokens: jax.Array  # [B, T]
    length: jax.Array  # [B]
    prompt_length: jax.Array  # [B]
    done: jax.Array  # [B] bool
    n_steps: jax.Array  # [B]
    prm_tokens: jax.Array  # [B, Tp]
    prm_length: jax.Array  # [B]
    draft_cache: KVCache
    target_cache: KVCache
    prm_cache: KVCache
    histogram: acceptance.RewardHistogram
    trace: Trace
    stats: RSDStats
    key: jax.Array


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


def _skipped_step(cache: KVCache, work: Work, batch: int, width: int) -> Step:
    false = jnp.zeros((batch,), bool)
    return Step(tokens=jnp.zeros((batch, width), jnp.int32), length=jnp.zeros((batch,), jnp.int32),
                ended_eos=false, ended_stop=false, nonfinite=false, cache=cache, work=work)


def _target_step(draft: Model, target: Model, draft_cache: KVCache, s: "RSDState", reject: jax.Array,
                 cap: jax.Array, key: jax.Array, tables: TokenTables, spec: DecodeSpec,
                 draft_work: Work) -> tuple[Step, KVCache, Work]:
    """The target writes the step of the rejected rows: alone, or by speculative decoding with the draft."""
    if spec.speculative_gamma:
        step, draft_cache, draft_work, _ = speculative_write(
            draft, target, draft_cache, s.target_cache, s.tokens, s.length, reject, cap, key, tables,
            sampling=spec.sampling, gamma=spec.speculative_gamma, max_step_tokens=spec.step_tokens,
            chunk=spec.chunk, draft_work=draft_work, target_work=s.stats.target)
        return step, draft_cache, draft_work
    step = write_step_in_groups(target, s.target_cache, s.tokens, s.length, reject, cap, key, tables,
                                sampling=spec.sampling, max_step_tokens=spec.step_tokens, chunk=spec.chunk,
                                work=s.stats.target, rows=spec.target_rows)
    return step, draft_cache, draft_work


def _fit_view(prm_view: PRMView, step_tokens: jax.Array, step_len: jax.Array, prm_length: jax.Array,
              capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The PRM's view of steps (ids [B, W], width [B]) cut to what fits the PRM's buffer after prm_length [B];
    overflow [B] marks rows whose view did not fit (they end with an error instead of a wrong reward)."""
    view, width, overflow = prm_view(step_tokens, step_len)
    room = capacity - prm_length
    return view, jnp.minimum(width, jnp.maximum(room, 0)), overflow | (width > room)


def rsd_iteration(draft: Model, target: Model, prm: Model, tables: TokenTables, prm_view: PRMView,
                  params: acceptance.AcceptanceParams, budget: jax.Array, spec: DecodeSpec,
                  s: RSDState) -> RSDState:
    """One reasoning step for every live row."""
    live = ~s.done
    key, k_draft, k_accept, k_target = jax.random.split(s.key, 4)
    cap = spec.end_of(s.prompt_length) - s.length
    write = functools.partial(write_step, tables=tables, sampling=spec.sampling,
                              max_step_tokens=spec.step_tokens, chunk=spec.chunk)

    # 1-2. the draft writes a step
    d = write(draft, s.draft_cache, s.tokens, s.length, live, cap, k_draft, work=s.stats.draft)

    # 3. the PRM scores it in its own view, from its own cache
    capacity = s.prm_tokens.shape[1]
    view, width, overflow = _fit_view(prm_view, d.tokens, d.length, s.prm_length, capacity)
    prm_tokens = commit(s.prm_tokens, s.prm_length, view, width)
    prm_cache, hidden, prm_work = catch_up(prm, s.prm_cache, prm_tokens, s.prm_length + width, live,
                                           spec.chunk, s.stats.prm)
    reward = prm.rewards(hidden)
    prm_work = prm_work.add_head(prm.config, live)

    # 4. the mixture
    histogram = s.histogram
    delta = params.delta
    if spec.online_budget:
        histogram = acceptance.update(histogram, reward, live)
        delta = acceptance.threshold(histogram, budget, params.delta)
    decision_params = dataclasses.replace(params, delta=delta)
    accepted = live & acceptance.accept(spec.weighting, decision_params, reward, k_accept)
    reject = live & ~accepted

    # 5. the target, only when some row rejected; the rejected draft step is rolled back first
    draft_cache = d.cache.with_lengths(jnp.where(reject, s.length, d.cache.lengths))
    t, draft_cache, draft_work = jax.lax.cond(
        jnp.any(reject),
        lambda: _target_step(draft, target, draft_cache, s, reject, cap, k_target, tables, spec, d.work),
        lambda: (_skipped_step(s.target_cache, s.stats.target, live.shape[0], spec.step_tokens), draft_cache,
                 d.work))

    # 6. commit the chosen step; the PRM's view gets the target's step where it wrote one
    step_tokens = jnp.where(reject[:, None], t.tokens, d.tokens)
    step_len = jnp.where(reject, t.length, jnp.where(live, d.length, 0))
    ended_eos = jnp.where(reject, t.ended_eos, d.ended_eos)
    tokens = commit(s.tokens, s.length, step_tokens, step_len)
    length = s.length + step_len
    t_view, t_width, t_overflow = _fit_view(prm_view, t.tokens, t.length, s.prm_length, capacity)
    prm_tokens = commit(prm_tokens, s.prm_length, t_view, jnp.where(reject, t_width, 0))
    overflow = live & (overflow | (reject & t_overflow))
    prm_length = s.prm_length + jnp.where(reject, t_width, jnp.where(accepted, width, 0))
    prm_cache = prm_cache.with_lengths(jnp.where(reject, s.prm_length, prm_cache.lengths))

    n_steps = s.n_steps + live
    done = s.done | (live & (ended_eos | (length >= spec.end_of(s.prompt_length)) | (n_steps >= spec.max_steps)
                             | overflow))
    trace = s.trace.record(s.n_steps, live, jnp.where(reject, TARGET, DRAFT), reward, delta, length)
    st = s.stats
    nonfinite = (st.nonfinite | jnp.where(d.nonfinite, 1, 0) | jnp.where(t.nonfinite, 2, 0)
                 | jnp.where(live & ~jnp.isfinite(reward), 4, 0) | jnp.where(overflow, 8, 0))
    stats = RSDStats(
        draft_accepted_tokens=st.draft_accepted_tokens + jnp.where(accepted, d.length, 0),
        draft_discarded_tokens=st.draft_discarded_tokens + jnp.where(reject, d.length, 0),
        target_tokens=st.target_tokens + jnp.where(reject, t.length, 0),
        draft_steps=st.draft_steps + accepted, target_steps=st.target_steps + reject,
        target_invocations=st.target_invocations + jnp.any(reject), iterations=st.iterations + 1,
        nonfinite=nonfinite, draft=draft_work, target=t.work, prm=prm_work)
    return RSDState(tokens=tokens, length=length, prompt_length=s.prompt_length, done=done, n_steps=n_steps,
                    prm_tokens=prm_tokens, prm_length=prm_length, draft_cache=draft_cache,
                    target_cache=t.cache, prm_cache=prm_cache, histogram=histogram, trace=trace,
                    stats=stats, key=key)


def initial_state(draft: Model, target: Model, prm: Model, prompts: Prompts,
                  histogram: acceptance.RewardHistogram, key: jax.Array, spec: DecodeSpec,
                  caches: RSDCaches | None = None) -> RSDState:
    """The loop state before the first step: no steps, rows of length 0 already done, and the caches (new ones,
    or those given: their contents are ignored, every row starts at length 0)."""
    batch = prompts.tokens.shape[0]
    caches = caches or RSDCaches.zeros(draft, target, prm, prompts)
    empty = jnp.zeros((batch,), jnp.int32)
    return RSDState(
        tokens=prompts.tokens, length=prompts.length, prompt_length=prompts.length,
        done=prompts.length == 0, n_steps=jnp.zeros((batch,), jnp.int32),
        prm_tokens=prompts.prm_tokens, prm_length=prompts.prm_length,
        draft_cache=caches.draft.with_lengths(empty), target_cache=caches.target.with_lengths(empty),
        prm_cache=caches.prm.with_lengths(empty), histogram=histogram,
        trace=Trace.empty(batch, spec.max_steps), stats=RSDStats.zeros(batch), key=key)


def output(final: RSDState) -> RSDOutput:
    return RSDOutput(tokens=final.tokens, length=final.length, prompt_length=final.prompt_length,
                     n_steps=final.n_steps, prm_tokens=final.prm_tokens, prm_length=final.prm_length,
                     trace=final.trace, stats=final.stats, histogram=final.histogram)


def rsd_decode_impl(draft: Model, target: Model, prm: Model, prompts: Prompts, tables: TokenTables,
                    prm_view: PRMView, params: acceptance.AcceptanceParams, budget: jax.Array,
                    histogram: acceptance.RewardHistogram, key: jax.Array, spec: DecodeSpec,
                    caches: RSDCaches | None = None) -> RSDOutput:
    """Reward-guided speculative decoding of a batch of prompts, in one jitted loop.

    params (δ, p, α) and budget are traced: a threshold sweep compiles once. histogram seeds the online
    quantile estimate (e.g. with a calibration run's rewards) when spec.online_budget is set. caches: the three
    KV caches to work in (RSDCaches.zeros's shapes; donated by the sharded entry point); None: new ones.
    """
    return output(run_loop(draft, target, prm, prompts, tables, prm_view, params, budget, histogram, key, spec, caches))


def run_loop(draft: Model, target: Model, prm: Model, prompts: Prompts, tables: TokenTables, prm_view: PRMView,
             params: acceptance.AcceptanceParams, budget: jax.Array, histogram: acceptance.RewardHistogram,
             key: jax.Array, spec: DecodeSpec, caches: RSDCaches | None = None) -> RSDState:
    """The while_loop itself: the final state, caches included (`rsd_decode_impl`'s arguments)."""
    state = initial_state(draft, target, prm, prompts, histogram, key, spec, caches)
    body = functools.partial(rsd_iteration, draft, target, prm, tables, prm_view, params, budget, spec)
    return jax.lax.while_loop(lambda s: jnp.any(~s.done), body, state)


def final_caches(final: RSDState) -> RSDCaches:
    return RSDCaches(draft=final.draft_cache, target=final.target_cache, prm=final.prm_cache)


rsd_decode = jax.jit(rsd_decode_impl, static_argnames=("spec",))
