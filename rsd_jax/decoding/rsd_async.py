"""The asynchronous RSD loop: rows that do not wait for each other, in one jitted `lax.while_loop` of ticks.

The synchronous loop (rsd_jax.decoding.rsd) runs every model until the longest row's step ends, and the target
whenever any row rejected: with many rows, nearly every iteration. Here each row carries its own phase

    DRAFTING -> SCORING -> accepted: DRAFTING (or DONE)
                        -> rejected: WAITING -> REWRITING -> DRAFTING (or DONE)

and one tick runs each model at most once, for the rows in its phase only:
  1. the draft writes one token for every DRAFTING row (a row starting a step first catches up lazily on what was
     committed since it last looked, as in the synchronous loop); a row whose step ended moves to SCORING;
  2. the PRM scores the SCORING rows (its own view of the step, from its own cache) and the mixture decides: an
     accepted step is committed; a rejected row rolls its draft and PRM caches back and WAITS for the target;
  3. the target fires when at least `quorum` rows are WAITING or REWRITING, or when nothing else can advance: rows
     that waited catch up lazily and start REWRITING; every REWRITING row writes one token, and a row whose step
     ended commits it and drafts again.
Rows waiting for the target keep their caches; nothing is recomputed. quorum 1 fires the target as soon as a row
rejects.

Exactness: a row's committed tokens, step sources and rewards depend only on its own sequence (each pass computes
a row from its own cache, with chunk boundaries that start where its cache ends, as in the synchronous loop), so
for greedy decoding they equal the synchronous loop's at any quorum and pass size (up to float rounding of batched
products of different sizes, which moves no greedy token in the tests). Sampling uses a key per row, folded with
the model, the step index and the token's index in the step: a row's draws do not depend on the schedule or on the
other rows (its distribution is that of the row decoded alone).

Passes gather at most `spec.pass_rows` rows (rsd_jax.decoding.passes): the target's and the PRM's passes cost the rows
they carry, not the batch. Shapes: B rows, T committed-token buffer, Tp the PRM's view buffer, M = max_step_tokens.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from rsd_jax.decoding import acceptance, in_place, passes
from rsd_jax.decoding.generator import commit, last_committed, step_ends, token_logits
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.prm_view import fit_view
from rsd_jax.decoding.rsd_state import DRAFT, TARGET, Knobs, RSDCaches, RSDOutput, RSDStats, Trace, new_caches
from rsd_jax.decoding.sampling import sample_rows
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.cache import KVCache
from rsd_jax.errors import ConfigError
from rsd_jax.placement import on_mesh

if TYPE_CHECKING:
    from rsd_jax.engine import Engine

DRAFTING, SCORING, WAITING, REWRITING, DONE = 0, 1, 2, 3, 4
_DRAFT_KEY, _TARGET_KEY, _ACCEPT_KEY = 0, 1, 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepInProgress:
    """A step one model is writing, per row: its tokens so far and how it ended."""

    out: jax.Array  # [B, M] int32
    written: jax.Array  # [B] int32 tokens written (0: the step has not started)
    current: jax.Array  # [B] int32 the token fed next
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
class AsyncState:
    phase: jax.Array  # [B] int32: DRAFTING, SCORING, WAITING, REWRITING or DONE
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
    overflow: jax.Array  # [B] bool the draft's step did not fit the PRM's view (the row ends after this step)
    draft_cache: KVCache
    target_cache: KVCache
    prm_cache: KVCache
    histogram: acceptance.RewardHistogram
    trace: Trace
    stats: RSDStats
    row_keys: jax.Array  # [B] a PRNG key per row


def _row_keys(row_keys: jax.Array, model: int, step: jax.Array, index: jax.Array) -> jax.Array:
    """One key per row [B] for the `index`-th token of step `step` of `model` (arrays [B])."""
    def one(key, s, i):
        return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, model), s), i)
    return jax.vmap(one)(row_keys, step, index)


def _room(spec: DecodeSpec, s: AsyncState) -> jax.Array:
    """[B] tokens the next step of each row may have."""
    return jnp.minimum(spec.end_of(s.prompt_length) - s.length, spec.step_tokens)


def _write_token(engine: "Engine", spec: DecodeSpec, *, model, cache: KVCache, step: StepInProgress,
                 select: jax.Array, room: jax.Array, usage, state: AsyncState, key_tag: int, group: int):
    """One token of the step in progress for the selected rows [B] that start or continue it: a row starting its
    step first catches the cache up on the committed tokens and re-feeds the last one. group: the rows a pass
    carries (rsd_jax.decoding.passes). Returns the step, the rows whose step ended [B], the cache and the usage."""
    starting = select & (step.written == 0)
    cache, _, usage = passes.feed(model, cache, view=state.tokens, upto=state.length - 1, select=starting,
                                  chunk=spec.chunk, group=group, usage=usage, sizes=spec.pass_sizes)
    cache = cache.with_lengths(jnp.where(starting, state.length - 1, cache.lengths))
    current = jnp.where(starting, last_committed(state.tokens, state.length), step.current)
    advanced, hidden, cache, usage = passes.decode(model, cache, current=current, select=select, group=group,
                                                   usage=usage, sizes=spec.pass_sizes)
    tables = engine.step_tables(spec)
    logits = token_logits(model, hidden, tables)
    token = sample_rows(spec.sampling, logits, _row_keys(state.row_keys, key_tag, state.n_steps, step.written))
    rows = jnp.arange(token.shape[0])
    written = step.written + advanced
    is_eos = tables.eos[token] & advanced
    is_stop = step_ends(tables, current, token, first=step.written == 0) & advanced
    ended = advanced & (is_eos | is_stop | (written >= room))
    step = StepInProgress(
        out=step.out.at[rows, jnp.where(advanced, step.written, step.out.shape[1])].set(token, mode="drop"),
        written=written, current=jnp.where(advanced, token, current), eos=step.eos | is_eos,
        nonfinite=step.nonfinite | (advanced & ~jnp.all(jnp.isfinite(logits), axis=-1)))
    return step, ended, cache, usage


def _finish(spec: DecodeSpec, s: AsyncState, rows: jax.Array, *, step: StepInProgress, source: int,
            prm_width: jax.Array, overflow: jax.Array) -> AsyncState:
    """Commits the step of the rows [B] bool (from the draft or the target), records it, and moves each row on to
    DRAFTING or DONE."""
    step_len = jnp.where(rows, step.written, 0)
    tokens = commit(s.tokens, s.length, step.out, step_len)
    length = s.length + step_len
    n_steps = s.n_steps + rows
    overflow = rows & (s.overflow | overflow)
    done = rows & (step.eos | (length >= spec.end_of(s.prompt_length)) | (n_steps >= spec.max_steps) | overflow)
    trace = s.trace.record(s.n_steps, rows, source, s.reward, s.delta, length)
    phase = jnp.where(done, DONE, jnp.where(rows, DRAFTING, s.phase))
    nonfinite = s.stats.nonfinite | jnp.where(overflow, 8, 0)
    return dataclasses.replace(s, tokens=tokens, length=length, n_steps=n_steps, phase=phase,
                               prm_length=s.prm_length + jnp.where(rows, prm_width, 0),
                               overflow=s.overflow & ~rows, drafted=s.drafted.restart(rows),
                               rewritten=s.rewritten.restart(rows), trace=trace,
                               stats=dataclasses.replace(s.stats, nonfinite=nonfinite))


def draft_pass(engine: "Engine", spec: DecodeSpec, s: AsyncState) -> AsyncState:
    """1. The draft writes one token for every DRAFTING row; rows whose step ended go to SCORING."""
    drafting = s.phase == DRAFTING
    drafted, ended, cache, usage = _write_token(
        engine, spec, model=engine.draft, cache=s.draft_cache, step=s.drafted, select=drafting, room=_room(spec, s),
        usage=s.stats.draft, state=s, key_tag=_DRAFT_KEY, group=spec.pass_rows and s.phase.shape[0])  # every row
    return dataclasses.replace(s, drafted=drafted, draft_cache=cache, phase=jnp.where(ended, SCORING, s.phase),
                               stats=dataclasses.replace(s.stats, draft=usage))


def prm_pass(engine: "Engine", knobs: Knobs, spec: DecodeSpec, s: AsyncState) -> AsyncState:
    """2. The PRM scores the SCORING rows' steps and the mixture decides each: accepted steps are committed,
    rejected rows roll their draft and PRM caches back and wait for the target."""
    scoring = s.phase == SCORING
    drafted = s.drafted
    view, width, overflow = fit_view(engine.view(spec), drafted.out, drafted.written,
                                      prm_length=s.prm_length, capacity=s.prm_tokens.shape[1])
    width = jnp.where(scoring, width, 0)
    prm_tokens = commit(s.prm_tokens, s.prm_length, view, width)
    prm_cache, hidden, prm_usage = passes.feed(engine.prm, s.prm_cache, view=prm_tokens, upto=s.prm_length + width,
                                               select=scoring, chunk=spec.chunk, group=spec.pass_rows,
                                               usage=s.stats.prm, sizes=spec.pass_sizes)
    reward = engine.prm.rewards(hidden)
    prm_usage = prm_usage.add_head(engine.prm.config, scoring)

    histogram, delta = s.histogram, jnp.broadcast_to(knobs.acceptance.delta, scoring.shape)
    q, binned = knobs.acceptance.q, jnp.bool_(False)
    if spec.online_budget:  # the budget's rule over the running histogram (acceptance.histogram_rule)
        histogram = acceptance.update(histogram, reward, scoring)
        rule, q, binned = acceptance.histogram_rule(histogram, knobs.budget, mu_target=knobs.mu_target,
                                                    default_delta=knobs.acceptance.delta)
        delta = jnp.broadcast_to(rule, scoring.shape)
    accepted = scoring & _accept(spec, knobs, s, reward=reward, delta=delta, q=q, binned=binned)
    reject = scoring & ~accepted

    stats = s.stats
    nonfinite = (stats.nonfinite | jnp.where(scoring & drafted.nonfinite, 1, 0)
                 | jnp.where(scoring & ~jnp.isfinite(reward), 4, 0))
    stats = dataclasses.replace(
        stats, prm=prm_usage, nonfinite=nonfinite,
        draft_accepted_tokens=stats.draft_accepted_tokens + jnp.where(accepted, drafted.written, 0),
        draft_discarded_tokens=stats.draft_discarded_tokens + jnp.where(reject, drafted.written, 0),
        draft_steps=stats.draft_steps + accepted)
    s = dataclasses.replace(
        s, prm_tokens=prm_tokens, histogram=histogram, stats=stats,
        reward=jnp.where(scoring, reward, s.reward), delta=jnp.where(scoring, delta, s.delta),
        overflow=s.overflow | (scoring & overflow),
        draft_cache=s.draft_cache.with_lengths(jnp.where(reject, s.length, s.draft_cache.lengths)),
        prm_cache=prm_cache.with_lengths(jnp.where(reject, s.prm_length, prm_cache.lengths)),
        phase=jnp.where(reject, WAITING, s.phase))
    return _finish(spec, s, accepted, step=drafted, source=DRAFT, prm_width=width, overflow=jnp.zeros_like(reject))


def _accept(spec: DecodeSpec, knobs: Knobs, s: AsyncState, *, reward: jax.Array, delta: jax.Array, q: jax.Array,
            binned: jax.Array) -> jax.Array:
    """A_ω for each row [B], with a uniform per row and step (binary: deterministic); in the budget mode the
    randomised threshold (δ, q) (acceptance.budget_accept; binned: online, δ's histogram bin is the atom)."""
    params = dataclasses.replace(knobs.acceptance, delta=delta)
    if spec.weighting == "binary" and spec.budget_mode == "none":
        return acceptance.accept("binary", params, reward, s.row_keys[0])
    keys = _row_keys(s.row_keys, _ACCEPT_KEY, s.n_steps, jnp.zeros_like(s.n_steps))
    if spec.budget_mode != "none":
        u = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)  # in [0, 1)
        return acceptance.budget_accept(reward, delta, q, None, num_bins=s.histogram.num_bins, binned=binned, u=u)
    u = 1.0 - jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)  # in (0, 1]
    return u <= acceptance.weight(spec.weighting, params, reward)


def target_fires(quorum: int, phase: jax.Array) -> jax.Array:
    """[] bool: the target runs this tick: while some row is REWRITING (a wave of steps in flight finishes), or to
    start a wave when `quorum` rows wait for it or nothing else can advance."""
    waiting, rewriting = phase == WAITING, phase == REWRITING
    others = jnp.any((phase == DRAFTING) | (phase == SCORING))
    return jnp.any(rewriting) | (jnp.any(waiting) & ((jnp.sum(waiting) >= quorum) | ~others))


def target_pass(engine: "Engine", spec: DecodeSpec, s: AsyncState) -> AsyncState:
    """3. The target writes one token for the rows that wait for it (they first catch up) and commits the steps
    that ended."""
    waiting = s.phase == WAITING
    rewriting = waiting | (s.phase == REWRITING)
    rewritten, ended, cache, usage = _write_token(
        engine, spec, model=engine.target, cache=s.target_cache, step=s.rewritten.restart(waiting), select=rewriting,
        room=_room(spec, s), usage=s.stats.target, state=s, key_tag=_TARGET_KEY, group=spec.pass_rows)
    t_view, t_width, t_overflow = _view_of_ended(engine, spec, s, rewritten, ended)
    t_width = jnp.where(ended, t_width, 0)
    stats = s.stats
    stats = dataclasses.replace(
        stats, target=usage, target_tokens=stats.target_tokens + jnp.where(ended, rewritten.written, 0),
        target_steps=stats.target_steps + ended, target_invocations=stats.target_invocations + 1,
        nonfinite=stats.nonfinite | jnp.where(ended & rewritten.nonfinite, 2, 0))
    s = dataclasses.replace(s, rewritten=rewritten, target_cache=cache, stats=stats,
                            prm_tokens=commit(s.prm_tokens, s.prm_length, t_view, t_width),
                            phase=jnp.where(rewriting, REWRITING, s.phase))
    return _finish(spec, s, ended, step=rewritten, source=TARGET, prm_width=t_width, overflow=ended & t_overflow)


def _view_of_ended(engine: "Engine", spec: DecodeSpec, s: AsyncState, step: StepInProgress, ended: jax.Array):
    """The PRM's view of the steps the target ended this tick (fit_view's outputs), computed only when some step
    ended (the text view is a host round trip)."""
    def view():
        return fit_view(engine.view(spec), step.out, step.written, prm_length=s.prm_length,
                        capacity=s.prm_tokens.shape[1])

    shapes = jax.eval_shape(view)
    return jax.lax.cond(jnp.any(ended), view, lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes))


def tick(engine: "Engine", knobs: Knobs, spec: DecodeSpec, quorum: int, s: AsyncState) -> AsyncState:
    """One tick: the draft, the PRM and the target, each only when some row is in its phase (the target also only
    when `target_fires`), each updating the state's caches in place (`in_place.when`)."""
    s = in_place.when(jnp.any(s.phase == DRAFTING), functools.partial(draft_pass, engine, spec), s)
    s = in_place.when(jnp.any(s.phase == SCORING), functools.partial(prm_pass, engine, knobs, spec), s)
    s = in_place.when(target_fires(quorum, s.phase), functools.partial(target_pass, engine, spec), s)
    return dataclasses.replace(s, stats=dataclasses.replace(s.stats, iterations=s.stats.iterations + 1))  # ticks


def initial_state(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array, spec: DecodeSpec,
                  caches: RSDCaches) -> AsyncState:
    batch = prompts.tokens.shape[0]
    empty = jnp.zeros((batch,), jnp.int32)
    nan = jnp.full((batch,), jnp.nan, jnp.float32)
    return AsyncState(
        phase=jnp.where(prompts.length == 0, DONE, DRAFTING).astype(jnp.int32), tokens=prompts.tokens,
        length=prompts.length, prompt_length=prompts.length, n_steps=empty, prm_tokens=prompts.prm_tokens,
        prm_length=prompts.prm_length, drafted=StepInProgress.empty(batch, spec.step_tokens),
        rewritten=StepInProgress.empty(batch, spec.step_tokens), reward=nan, delta=nan,
        overflow=jnp.zeros((batch,), bool), draft_cache=caches.draft.with_lengths(empty),
        target_cache=caches.target.with_lengths(empty), prm_cache=caches.prm.with_lengths(empty),
        histogram=knobs.histogram, trace=Trace.empty(batch, spec.max_steps), stats=RSDStats.zeros(batch),
        row_keys=jax.random.split(key, batch))


def quorum_for(spec: DecodeSpec, batch: int) -> int:
    """The target's quorum: spec.quorum, or (0) a quarter of the batch."""
    return spec.quorum if spec.quorum > 0 else max(1, batch // 4)


def async_loop(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array, caches: RSDCaches,
               spec: DecodeSpec) -> tuple[RSDOutput, RSDCaches]:
    """The loop of ticks working in `caches` (donated when jitted; returned in the same buffers)."""
    s = initial_state(engine, prompts=prompts, knobs=knobs, key=key, spec=spec, caches=caches)
    body = functools.partial(tick, engine, knobs, spec, quorum_for(spec, prompts.tokens.shape[0]))
    final = jax.lax.while_loop(lambda s: jnp.any(s.phase != DONE), body, s)
    out = RSDOutput(tokens=final.tokens, length=final.length, prompt_length=final.prompt_length,
                    n_steps=final.n_steps, prm_tokens=final.prm_tokens, prm_length=final.prm_length,
                    trace=final.trace, stats=final.stats, histogram=final.histogram)
    return out, RSDCaches(draft=final.draft_cache, target=final.target_cache, prm=final.prm_cache)


_async_loop = jax.jit(async_loop, static_argnames=("spec",), donate_argnames=("caches",))


def check_async(spec: DecodeSpec) -> None:
    """The options the asynchronous loop does not have (a clear error instead of a silent difference)."""
    if spec.speculative_gamma:
        raise ConfigError("decoding.schedule 'async' does not combine with rsd.speculative_gamma (the target writes "
                          "its steps token by token in the loop's ticks); use decoding.schedule: sync")
    if spec.patience:
        raise ConfigError("decoding.patience (the official code's cut-off after rounds in which no row finished) "
                          "counts the synchronous loop's rounds, which the async schedule does not have: set "
                          "decoding.patience: 0 or decoding.schedule: sync")


def async_decode(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array,
                 spec: DecodeSpec) -> RSDOutput:
    """RSD with the asynchronous schedule (same arguments and output as `rsd_decode`)."""
    check_async(spec)
    with on_mesh(engine.mesh, prompts=prompts, replicated=(knobs, key)) as (prompts, (knobs, key)):
        caches = new_caches(engine, prompts)
        out, _ = _async_loop(engine, prompts=prompts, knobs=knobs, key=key, caches=caches, spec=spec)
    return out
