"""The RSD loop: one jitted `lax.while_loop` over reasoning steps for a batch of prompts.

One iteration = one reasoning step for every live row (DESIGN §3):
  1. the draft catches up on what was committed since it last saw the sequence, and writes a step;
  2. the PRM catches up on its own view of the sequence and scores the new step at its delimiter;
  3. the mixture accepts or rejects each row's step (A_ω: accept iff u <= ω(r); binary: r >= δ; budget mode: the
     randomised threshold (δ, q) of acceptance.decide);
  4. only if some row rejected (`in_place.when`: a branch that updates the caches in place), the target catches up
     lazily and writes the step for those rows;
  5. the chosen step is committed; a rejected draft step is rolled back by lowering the draft's length,
     and the PRM's view gets the target's step instead of the draft's.
A row ends at EOS, at its token or step budget, or (spec.patience, the official code's rule) when the batch has gone
patience - 1 iterations in a row without any row finishing: then every running row ends after this step, cut off.

Shapes: B rows, T committed-token buffer (prompt bucket + max_new_tokens), Tp the PRM's view buffer,
S = max_steps, M = max_step_tokens. The loop's values (knobs, state, trace, caches, output): rsd_jax.decoding.rsd_state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding import acceptance, in_place
from rsd_jax.decoding.generator import Step, TokenTables, catch_up, commit, write_step
from rsd_jax.decoding.prm_view import fit_view
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd_async import async_decode
from rsd_jax.decoding.rsd_state import (DRAFT, TARGET, Knobs, RSDCaches, RSDOutput, RSDState, RSDStats, Trace,
                                        final_caches, new_caches, output)
from rsd_jax.decoding.speculative import speculative_write
from rsd_jax.decoding.subbatch import write_step_in_groups
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.decoding.usage import Usage
from rsd_jax.errors import ConfigError, InputError
from rsd_jax.models.model import Model
from rsd_jax.placement import on_mesh

if TYPE_CHECKING:
    from rsd_jax.engine import Engine


def _skipped_step(cache: KVCache, usage: Usage, batch: int, width: int) -> Step:
    false = jnp.zeros((batch,), bool)
    return Step(tokens=jnp.zeros((batch, width), jnp.int32), length=jnp.zeros((batch,), jnp.int32),
                ended_eos=false, ended_stop=false, nonfinite=false, cache=cache, usage=usage)


def _target_step(engine: "Engine", s: "RSDState", draft: Step, *, reject: jax.Array, room: jax.Array,
                 key: jax.Array, spec: DecodeSpec) -> tuple[Step, KVCache, Usage]:
    """The target writes the step of the rejected rows: alone, or by speculative decoding with the draft (whose
    cache and usage it then also advances: returned with the target's step)."""
    if spec.speculative_gamma:
        step, draft_cache, draft_usage, _ = speculative_write(
            engine.draft, engine.target, draft.cache, s.target_cache, tokens=s.tokens, length=s.length,
            active=reject, room=room, key=key, tables=engine.step_tables(spec), sampling=spec.sampling,
            gamma=spec.speculative_gamma, max_step_tokens=spec.step_tokens, chunk=spec.chunk, draft_usage=draft.usage,
            target_usage=s.stats.target)
        return step, draft_cache, draft_usage
    step = write_step_in_groups(engine.target, s.target_cache, tokens=s.tokens, length=s.length, active=reject,
                                room=room, key=key, tables=engine.step_tables(spec), sampling=spec.sampling,
                                max_step_tokens=spec.step_tokens, chunk=spec.chunk, usage=s.stats.target,
                                rows=spec.target_rows)
    return step, draft.cache, draft.usage


def _self_score(draft: Model, drafted: Step, *, tokens: jax.Array, length: jax.Array,
                active: jax.Array) -> tuple[Step, jax.Array]:
    """A self-scoring draft's reward [B] of the step it just wrote: the step's last token (which `write_step` drew
    but did not feed) fed into the draft's own cache, one 1-token forward counted in the draft's usage with its
    value head, and sigmoid(v_head) read there. The cache then holds the whole step (a rejection rolls it back)."""
    with_step = commit(tokens, length, drafted.tokens, drafted.length)
    cache, hidden, usage = catch_up(draft, drafted.cache, view=with_step, upto=length + drafted.length,
                                    active=active, chunk=1, usage=drafted.usage)
    usage = usage.add_head(draft.config, active)
    return dataclasses.replace(drafted, cache=cache, usage=usage), draft.rewards(hidden)


def _score_target_step(prm: Model, cache: KVCache, view: jax.Array, *, reject: jax.Array, start: jax.Array,
                       width: jax.Array, spec: DecodeSpec) -> tuple[KVCache, jax.Array]:
    """The PRM's reward [B] of the target's step in the rejected rows (NaN elsewhere): the PRM catches up over the
    step's view view[b, start[b] : start[b] + width[b]] from its cache at `start` (the rejected rows' rollback
    point) and reads the reward at its last id. Its usage is dropped (outside the accounting), and the cache's
    lengths go back to `start` on those rows, so the next iteration catches up exactly as without this pass."""
    scored = reject & (width > 0)
    cache, hidden, _ = catch_up(prm, cache, view=view, upto=start + width, active=scored, chunk=spec.chunk,
                                usage=Usage.zeros(reject.shape[0]))
    reward = jnp.where(scored, prm.rewards(hidden), jnp.nan)
    return cache.with_lengths(jnp.where(scored, start, cache.lengths)), reward


def rsd_iteration(engine: "Engine", knobs: Knobs, spec: DecodeSpec, state: RSDState) -> RSDState:
    """One reasoning step for every live row."""
    live = ~state.done
    key, k_draft, k_accept, k_target = jax.random.split(state.key, 4)
    room = spec.end_of(state.prompt_length) - state.length  # [B] tokens each row may still write
    prm, prm_view, capacity = engine.prm, engine.view(spec), state.prm_tokens.shape[1]
    tables = engine.step_tables(spec)

    # 1-2. the draft writes a step
    drafted = write_step(engine.draft, state.draft_cache, tokens=state.tokens, length=state.length, active=live,
                         room=room, key=k_draft, tables=tables, sampling=spec.sampling,
                         max_step_tokens=spec.step_tokens, chunk=spec.chunk, usage=state.stats.draft)

    # 3. the PRM scores it in its own view, from its own cache
    view, width, overflow = fit_view(prm_view, drafted.tokens, drafted.length, prm_length=state.prm_length,
                                      capacity=capacity)
    prm_tokens = commit(state.prm_tokens, state.prm_length, view, width)
    if engine.self_scoring:  # ... or the draft scores it itself: no PRM pass
        drafted, reward = _self_score(engine.draft, drafted, tokens=state.tokens, length=state.length, active=live)
        prm_cache, prm_usage = state.prm_cache, state.stats.prm
    else:
        prm_cache, hidden, prm_usage = catch_up(prm, state.prm_cache, view=prm_tokens, upto=state.prm_length + width,
                                               active=live, chunk=spec.chunk, usage=state.stats.prm)
        reward = prm.rewards(hidden)
        prm_usage = prm_usage.add_head(prm.config, live)

    # 4. the mixture
    accepted, delta, histogram = acceptance.decide(
        spec.weighting, knobs.acceptance, reward, k_accept, mode=spec.budget_mode, budget=knobs.budget,
        mu_target=knobs.mu_target, histogram=state.histogram, live=live)
    accepted = live & accepted
    reject = live & ~accepted

    # 5. the target, only when some row rejected; the rejected draft step is rolled back first
    drafted = dataclasses.replace(drafted, cache=drafted.cache.with_lengths(
        jnp.where(reject, state.length, drafted.cache.lengths)))
    def target_step(operand: tuple[Step, KVCache, Usage]) -> tuple[Step, KVCache, Usage]:
        skipped, draft_cache, draft_usage = operand  # the caches this step updates in place
        s = dataclasses.replace(state, target_cache=skipped.cache,
                                stats=dataclasses.replace(state.stats, target=skipped.usage))
        return _target_step(engine, s, dataclasses.replace(drafted, cache=draft_cache, usage=draft_usage),
                            reject=reject, room=room, key=k_target, spec=spec)

    skipped = _skipped_step(state.target_cache, state.stats.target, live.shape[0], spec.step_tokens)
    rewritten, draft_cache, draft_usage = in_place.when(jnp.any(reject), target_step,
                                                        (skipped, drafted.cache, drafted.usage))

    # 6. commit the chosen step; the PRM's view gets the target's step where it wrote one
    step_tokens = jnp.where(reject[:, None], rewritten.tokens, drafted.tokens)
    step_len = jnp.where(reject, rewritten.length, jnp.where(live, drafted.length, 0))
    ended_eos = jnp.where(reject, rewritten.ended_eos, drafted.ended_eos)
    tokens = commit(state.tokens, state.length, step_tokens, step_len)
    length = state.length + step_len
    t_view, t_width, t_overflow = fit_view(prm_view, rewritten.tokens, rewritten.length,
                                            prm_length=state.prm_length, capacity=capacity)
    prm_tokens = commit(prm_tokens, state.prm_length, t_view, jnp.where(reject, t_width, 0))
    overflow = live & (overflow | (reject & t_overflow))
    prm_length = state.prm_length + jnp.where(reject, t_width, jnp.where(accepted, width, 0))
    prm_cache = prm_cache.with_lengths(jnp.where(reject, state.prm_length, prm_cache.lengths))
    target_reward = None
    if spec.record_target_reward:
        if engine.self_scoring:
            raise ConfigError("record_target_reward scores with the separate PRM: not with a self-scoring draft")
        prm_cache, target_reward = _score_target_step(prm, prm_cache, prm_tokens, reject=reject & ~t_overflow,
                                                      start=state.prm_length, width=t_width, spec=spec)

    n_steps = state.n_steps + live
    done = state.done | (live & (ended_eos | (length >= spec.end_of(state.prompt_length))
                                 | (n_steps >= spec.max_steps) | overflow))
    # the official code's patience: patience - 1 iterations in a row with no row finishing end every row after this one
    cut_off = live & ~done & (spec.patience > 0) & (state.unchanged >= spec.patience - 1)
    done = done | cut_off
    unchanged = jnp.where(jnp.any(done & ~state.done), 0, state.unchanged + 1)
    trace = state.trace.record(state.n_steps, live, jnp.where(reject, TARGET, DRAFT), reward, delta, length,
                               target_reward=target_reward)
    stats = state.stats
    nonfinite = (stats.nonfinite | jnp.where(drafted.nonfinite, 1, 0) | jnp.where(rewritten.nonfinite, 2, 0)
                 | jnp.where(live & ~jnp.isfinite(reward), 4, 0) | jnp.where(overflow, 8, 0))
    stats = RSDStats(
        draft_accepted_tokens=stats.draft_accepted_tokens + jnp.where(accepted, drafted.length, 0),
        draft_discarded_tokens=stats.draft_discarded_tokens + jnp.where(reject, drafted.length, 0),
        target_tokens=stats.target_tokens + jnp.where(reject, rewritten.length, 0),
        draft_steps=stats.draft_steps + accepted, target_steps=stats.target_steps + reject,
        target_invocations=stats.target_invocations + jnp.any(reject), iterations=stats.iterations + 1,
        nonfinite=nonfinite, draft=draft_usage, target=rewritten.usage, prm=prm_usage,
        cut_off=stats.cut_off | cut_off)
    return RSDState(tokens=tokens, length=length, prompt_length=state.prompt_length, done=done, n_steps=n_steps,
                    prm_tokens=prm_tokens, prm_length=prm_length, draft_cache=draft_cache,
                    target_cache=rewritten.cache, prm_cache=prm_cache, histogram=histogram, trace=trace,
                    stats=stats, key=key, unchanged=unchanged)


def initial_state(engine: "Engine", *, prompts: Prompts, histogram: acceptance.RewardHistogram, key: jax.Array,
                  spec: DecodeSpec, caches: RSDCaches | None = None) -> RSDState:
    """The loop state before the first step: no steps, rows of length 0 already done, and the caches (new ones,
    or those given: their contents are ignored, every row starts at length 0)."""
    batch = prompts.tokens.shape[0]
    caches = caches or RSDCaches.zeros(engine, prompts)
    empty = jnp.zeros((batch,), jnp.int32)
    return RSDState(
        tokens=prompts.tokens, length=prompts.length, prompt_length=prompts.length,
        done=prompts.length == 0, n_steps=jnp.zeros((batch,), jnp.int32),
        prm_tokens=prompts.prm_tokens, prm_length=prompts.prm_length,
        draft_cache=caches.draft.with_lengths(empty), target_cache=caches.target.with_lengths(empty),
        prm_cache=caches.prm.with_lengths(empty), histogram=histogram,
        trace=Trace.empty(batch, spec.max_steps, target_reward=spec.record_target_reward),
        stats=RSDStats.zeros(batch), key=key, unchanged=jnp.zeros((), jnp.int32))


def run_loop(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array, spec: DecodeSpec,
             caches: RSDCaches | None = None) -> RSDState:
    """The while_loop itself: the final state, caches included."""
    state = initial_state(engine, prompts=prompts, histogram=knobs.histogram, key=key, spec=spec, caches=caches)
    body = functools.partial(rsd_iteration, engine, knobs, spec)
    return jax.lax.while_loop(lambda s: jnp.any(~s.done), body, state)


def rsd_loop(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array, caches: RSDCaches,
             spec: DecodeSpec) -> tuple[RSDOutput, RSDCaches]:
    """The loop working in `caches` (RSDCaches.zeros's shapes; their contents are ignored), which it returns: jitted
    with the caches donated, they are allocated once, outside the loop, and come back in the same buffers."""
    final = run_loop(engine, prompts=prompts, knobs=knobs, key=key, spec=spec, caches=caches)
    return output(final), final_caches(final)


_rsd_loop = jax.jit(rsd_loop, static_argnames=("spec",), donate_argnames=("caches",))


def rsd_decode(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array, spec: DecodeSpec) -> RSDOutput:
    """Reward-guided speculative decoding of a batch of prompts, in one jitted loop (on the engine's mesh when it
    has one: the batch split over "data", the weights as they are sharded).

    knobs (δ, p, α, budget, histogram) are traced: a threshold sweep compiles once; spec is static. With
    spec.schedule "async", rows do not wait for each other (rsd_jax.decoding.rsd_async)."""
    if spec.schedule == "async":
        if engine.self_scoring:
            raise InputError("a self-scoring draft runs with the synchronous schedule only (decoding.schedule: sync): "
                             "the asynchronous loop scores steps with a separate PRM pass")
        return async_decode(engine, prompts=prompts, knobs=knobs, key=key, spec=spec)
    with on_mesh(engine.mesh, prompts=prompts, replicated=(knobs, key)) as (prompts, (knobs, key)):
        caches = new_caches(engine, prompts)
        out, _ = _rsd_loop(engine, prompts=prompts, knobs=knobs, key=key, caches=caches, spec=spec)
    return out
