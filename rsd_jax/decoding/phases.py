"""The three phases of the RSD loop (rsd_jax.decoding.rsd), each a pass of one model over the rows in its phase:

  draft_pass:  the draft writes one token for every DRAFTING row; a row whose step ended goes to SCORING;
  prm_pass:    the PRM (or a self-scoring draft) scores the SCORING rows' steps and the acceptance rule decides:
               an accepted step is committed, a rejected row rolls its draft and PRM caches back and WAITS;
  target_pass: the target writes one token for the WAITING / REWRITING rows (with spec.speculative_gamma, the whole
               step by speculative decoding with the draft); a row whose step ended commits it (scored by the PRM
               too with spec.record_target_reward).

A committed step moves its row on to DRAFTING, to HELD (the lock-step setting: spec.rounds) or to DONE.
Shapes: B rows, T committed-token buffer, Tp the PRM's view buffer, M = max_step_tokens.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from rsd_jax.decoding import acceptance, in_place, passes
from rsd_jax.decoding.generator import Rows, Seat, StepRules, commit, last_committed, step_ends, token_logits
from rsd_jax.decoding.prm_view import fit_view
from rsd_jax.decoding.rsd_state import (DONE, DRAFT, DRAFTING, HELD, REWRITING, SCORING, TARGET, WAITING, Knobs,
                                        LoopState, StepInProgress)
from rsd_jax.decoding.sampling import sample_rows
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.decoding.speculative import speculative_write
from rsd_jax.decoding.usage import Usage

if TYPE_CHECKING:
    from rsd_jax.engine import Engine

_DRAFT_KEY, _TARGET_KEY, _ACCEPT_KEY = 0, 1, 2


def row_keys(keys: jax.Array, model: int, step: jax.Array, index: jax.Array) -> jax.Array:
    """One key per row [B] for the `index`-th draw of step `step` of `model` (arrays [B])."""
    def one(key, s, i):
        return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, model), s), i)
    return jax.vmap(one)(keys, step, index)


def _room(spec: DecodeSpec, s: LoopState) -> jax.Array:
    """[B] tokens the next step of each row may have."""
    return jnp.minimum(spec.end_of(s.prompt_length) - s.length, spec.step_tokens)


def _sizes(spec: DecodeSpec, rows: jax.Array) -> tuple[int, ...]:
    """The row counts of the PRM's and the target's passes over a batch like rows [B] (spec.pass_rows)."""
    return passes.pass_sizes(spec.pass_rows, rows.shape[0], spec.pass_sizes)


@dataclasses.dataclass(frozen=True)
class Writer:
    """The model writing a step token by token (static parts): which model, its key tag, its pass's rows."""

    model: object
    key_tag: int
    group: int


def _write_token(engine: "Engine", spec: DecodeSpec, writer: Writer, s: LoopState, *, cache, step: StepInProgress,
                 select: jax.Array, usage: Usage):
    """One token of the step in progress for the selected rows [B] that start or continue it: a row starting its
    step first catches the cache up on the committed tokens and re-feeds the last one. Returns the step, the rows
    whose step ended [B], the cache and the usage."""
    model = writer.model
    starting = select & (step.written == 0)
    sizes = passes.pass_sizes(writer.group, s.phase.shape[0], spec.pass_sizes)
    cache, _, usage = passes.feed(model, cache, view=s.tokens, upto=s.length - 1, select=starting,
                                  chunk=spec.catch_up_chunk, sizes=sizes, usage=usage)
    cache = cache.with_lengths(jnp.where(starting, s.length - 1, cache.lengths))
    current = jnp.where(starting, last_committed(s.tokens, s.length), step.current)
    advanced, hidden, cache, usage = passes.decode(model, cache, current=current, select=select, sizes=sizes,
                                                   usage=usage)
    tables = engine.step_tables(spec)
    logits = token_logits(model, hidden, tables)
    token = sample_rows(spec.sampling, logits, row_keys(s.row_keys, writer.key_tag, s.n_steps, step.written))
    rows = jnp.arange(token.shape[0])
    written = step.written + advanced
    is_eos = tables.eos[token] & advanced
    is_stop = step_ends(tables, current, token, first=step.written == 0) & advanced
    ended = advanced & (is_eos | is_stop | (written >= _room(spec, s)))
    step = StepInProgress(
        out=step.out.at[rows, jnp.where(advanced, step.written, step.out.shape[1])].set(token, mode="drop"),
        written=written, current=jnp.where(advanced, token, current), eos=step.eos | is_eos,
        nonfinite=step.nonfinite | (advanced & ~jnp.all(jnp.isfinite(logits), axis=-1)))
    return step, ended, cache, usage


def _finish(spec: DecodeSpec, s: LoopState, rows: jax.Array, *, step: StepInProgress, source: int,
            prm_width: jax.Array, overflow: jax.Array) -> LoopState:
    """Commits the step of the rows [B] bool (from the draft or the target), records it, and moves each row on to
    DRAFTING (HELD in the lock-step setting) or DONE; in the patience cut-off's last round, DONE and cut off."""
    step_len = jnp.where(rows, step.written, 0)
    tokens = commit(s.tokens, s.length, step.out, step_len)
    length = s.length + step_len
    n_steps = s.n_steps + rows
    overflow = rows & (s.overflow | overflow)
    done = rows & (step.eos | (length >= spec.end_of(s.prompt_length)) | (n_steps >= spec.max_steps) | overflow)
    cut_off = rows & ~done & s.rounds.last if spec.rounds else jnp.zeros_like(rows)
    done = done | cut_off
    scored = s.scored if source == TARGET else jnp.full_like(s.scored, jnp.nan)
    trace = s.trace.record(s.n_steps, rows, source, s.reward, s.delta, length, target_reward=scored)
    phase = jnp.where(done, DONE, jnp.where(rows, HELD if spec.rounds else DRAFTING, s.phase))
    stats = dataclasses.replace(s.stats, nonfinite=s.stats.nonfinite | jnp.where(overflow, 8, 0),
                                cut_off=s.stats.cut_off | cut_off)
    rounds = dataclasses.replace(s.rounds, finished=s.rounds.finished | jnp.any(done))
    return dataclasses.replace(s, tokens=tokens, length=length, n_steps=n_steps, phase=phase,
                               prm_length=s.prm_length + jnp.where(rows, prm_width, 0),
                               overflow=s.overflow & ~rows, drafted=s.drafted.restart(rows),
                               rewritten=s.rewritten.restart(rows), trace=trace, stats=stats, rounds=rounds)


def draft_pass(engine: "Engine", spec: DecodeSpec, s: LoopState) -> LoopState:
    """The draft writes one token for every DRAFTING row; rows whose step ended go to SCORING."""
    drafting = s.phase == DRAFTING
    writer = Writer(engine.draft, _DRAFT_KEY, spec.pass_rows and s.phase.shape[0])  # every row, gathered or not
    drafted, ended, cache, usage = _write_token(engine, spec, writer, s, cache=s.caches.draft, step=s.drafted,
                                                select=drafting, usage=s.stats.draft)
    return dataclasses.replace(s, drafted=drafted, caches=dataclasses.replace(s.caches, draft=cache),
                               phase=jnp.where(ended, SCORING, s.phase),
                               stats=dataclasses.replace(s.stats, draft=usage))


def _score(engine: "Engine", spec: DecodeSpec, s: LoopState, scoring: jax.Array, prm_tokens: jax.Array,
           width: jax.Array) -> tuple[LoopState, jax.Array]:
    """The reward [B] of the SCORING rows' drafted steps: a PRM pass over their view (prm_tokens up to
    prm_length + width), or a self-scoring draft's value head after feeding the step's last token into its own cache
    (one 1-token forward; a rejection rolls the cache back). Returns the state with the pass's cache and usage."""
    if engine.self_scoring:
        with_step = commit(s.tokens, s.length, s.drafted.out, s.drafted.written)
        cache, hidden, usage = passes.feed(engine.draft, s.caches.draft, view=with_step,
                                           upto=s.length + s.drafted.written, select=scoring, chunk=1,
                                           usage=s.stats.draft)
        usage = usage.add_head(engine.draft.config, scoring)
        return dataclasses.replace(s, caches=dataclasses.replace(s.caches, draft=cache),
                                   stats=dataclasses.replace(s.stats, draft=usage)), engine.draft.rewards(hidden)
    cache, hidden, usage = passes.feed(engine.prm, s.caches.prm, view=prm_tokens, upto=s.prm_length + width,
                                       select=scoring, chunk=spec.catch_up_chunk, sizes=_sizes(spec, scoring),
                                       usage=s.stats.prm)
    usage = usage.add_head(engine.prm.config, scoring)
    return dataclasses.replace(s, caches=dataclasses.replace(s.caches, prm=cache),
                               stats=dataclasses.replace(s.stats, prm=usage)), engine.prm.rewards(hidden)


def prm_pass(engine: "Engine", knobs: Knobs, spec: DecodeSpec, s: LoopState) -> LoopState:
    """The SCORING rows' steps are scored and decided: accepted steps are committed, rejected rows roll their
    draft and PRM caches back and wait for the target."""
    scoring = s.phase == SCORING
    drafted = s.drafted
    view, width, overflow = fit_view(engine.view(spec), drafted.out, drafted.written,
                                      prm_length=s.prm_length, capacity=s.prm_tokens.shape[1])
    width = jnp.where(scoring, width, 0)
    prm_tokens = commit(s.prm_tokens, s.prm_length, view, width)
    s, reward = _score(engine, spec, s, scoring, prm_tokens, width)
    uniforms = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(
        row_keys(s.row_keys, _ACCEPT_KEY, s.n_steps, jnp.zeros_like(s.n_steps)))
    accepted, delta, histogram = acceptance.decide(knobs.rule(spec), reward, uniforms, histogram=s.histogram, live=scoring)
    accepted = scoring & accepted
    reject = scoring & ~accepted

    stats = s.stats
    nonfinite = (stats.nonfinite | jnp.where(scoring & drafted.nonfinite, 1, 0)
                 | jnp.where(scoring & ~jnp.isfinite(reward), 4, 0))
    stats = dataclasses.replace(
        stats, nonfinite=nonfinite,
        draft_accepted_tokens=stats.draft_accepted_tokens + jnp.where(accepted, drafted.written, 0),
        draft_discarded_tokens=stats.draft_discarded_tokens + jnp.where(reject, drafted.written, 0),
        draft_steps=stats.draft_steps + accepted)
    caches = dataclasses.replace(
        s.caches, draft=s.caches.draft.with_lengths(jnp.where(reject, s.length, s.caches.draft.lengths)),
        prm=s.caches.prm.with_lengths(jnp.where(reject, s.prm_length, s.caches.prm.lengths)))
    s = dataclasses.replace(
        s, prm_tokens=prm_tokens, histogram=histogram, stats=stats, caches=caches,
        reward=jnp.where(scoring, reward, s.reward), delta=jnp.where(scoring, delta, s.delta),
        overflow=s.overflow | (scoring & overflow), phase=jnp.where(reject, WAITING, s.phase))
    return _finish(spec, s, accepted, step=drafted, source=DRAFT, prm_width=width, overflow=jnp.zeros_like(reject))


def target_fires(quorum: int, phase: jax.Array) -> jax.Array:
    """[] bool: the target runs this tick: while some row is REWRITING (a wave of steps in flight finishes), or to
    start a wave when `quorum` rows wait for it or nothing else can advance."""
    waiting, rewriting = phase == WAITING, phase == REWRITING
    others = jnp.any((phase == DRAFTING) | (phase == SCORING))
    return jnp.any(rewriting) | (jnp.any(waiting) & ((jnp.sum(waiting) >= quorum) | ~others))


def _rewrite(engine: "Engine", spec: DecodeSpec, s: LoopState) -> tuple[LoopState, jax.Array]:
    """The target's writing for the WAITING / REWRITING rows: one token (the rows that waited first catch up), or
    with spec.speculative_gamma the WAITING rows' whole step by speculative decoding with the draft (whose cache and
    usage it also advances). Returns the state (rewritten, caches, usage) and the rows whose step ended [B]."""
    waiting = s.phase == WAITING
    if spec.speculative_gamma:
        key = jax.random.fold_in(s.row_keys[0], s.stats.target_invocations)
        step, draft_cache, draft_usage, _ = speculative_write(
            Seat(engine.draft, s.caches.draft, s.stats.draft), Seat(engine.target, s.caches.target, s.stats.target),
            Rows(s.tokens, s.length, waiting, _room(spec, s)), key=key, gamma=spec.speculative_gamma,
            rules=StepRules(engine.step_tables(spec), spec.sampling, spec.step_tokens, spec.chunk))
        rewritten = StepInProgress(out=step.tokens, written=step.length, current=s.rewritten.current,
                                   eos=step.ended_eos, nonfinite=step.nonfinite)
        caches = dataclasses.replace(s.caches, draft=draft_cache, target=step.cache)
        stats = dataclasses.replace(s.stats, draft=draft_usage, target=step.usage)
        return dataclasses.replace(s, rewritten=rewritten, caches=caches, stats=stats), waiting
    writer = Writer(engine.target, _TARGET_KEY, spec.pass_rows)
    rewritten, ended, cache, usage = _write_token(
        engine, spec, writer, s, cache=s.caches.target, step=s.rewritten.restart(waiting),
        select=waiting | (s.phase == REWRITING), usage=s.stats.target)
    return dataclasses.replace(s, rewritten=rewritten, caches=dataclasses.replace(s.caches, target=cache),
                               stats=dataclasses.replace(s.stats, target=usage),
                               phase=jnp.where(waiting, REWRITING, s.phase)), ended


def _score_target_steps(engine: "Engine", spec: DecodeSpec, s: LoopState, scored: jax.Array,
                        width: jax.Array) -> LoopState:
    """record_target_reward: the PRM's reward of the target's steps of the rows `scored` [B] (their view already in
    prm_tokens at prm_length, `width` [B] wide) into s.scored (NaN elsewhere). Its usage is dropped (outside the
    accounting) and the PRM cache's lengths go back, so the loop goes on exactly as without it."""
    start = s.prm_length
    cache, hidden, _ = passes.feed(engine.prm, s.caches.prm, view=s.prm_tokens, upto=start + width, select=scored,
                                   chunk=spec.catch_up_chunk, sizes=_sizes(spec, scored), usage=Usage.zeros(scored.shape[0]))
    cache = cache.with_lengths(jnp.where(scored, start, cache.lengths))
    return dataclasses.replace(s, caches=dataclasses.replace(s.caches, prm=cache),
                               scored=jnp.where(scored, engine.prm.rewards(hidden), jnp.nan))


def target_pass(engine: "Engine", spec: DecodeSpec, s: LoopState) -> LoopState:
    """The target writes for the rows that wait for it and commits the steps that ended."""
    s, ended = _rewrite(engine, spec, s)
    rewritten = s.rewritten

    def view():
        return fit_view(engine.view(spec), rewritten.out, rewritten.written, prm_length=s.prm_length,
                        capacity=s.prm_tokens.shape[1])

    shapes = jax.eval_shape(view)  # computed only when some step ended (the text view is a host round trip)
    t_view, t_width, t_overflow = jax.lax.cond(
        jnp.any(ended), view, lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes))
    t_width = jnp.where(ended, t_width, 0)
    stats = s.stats
    stats = dataclasses.replace(
        stats, target_tokens=stats.target_tokens + jnp.where(ended, rewritten.written, 0),
        target_steps=stats.target_steps + ended, target_invocations=stats.target_invocations + 1,
        nonfinite=stats.nonfinite | jnp.where(ended & rewritten.nonfinite, 2, 0))
    s = dataclasses.replace(s, stats=stats, prm_tokens=commit(s.prm_tokens, s.prm_length, t_view, t_width))
    if spec.record_target_reward:
        scored = ended & ~t_overflow & (t_width > 0)
        s = dataclasses.replace(s, scored=jnp.full_like(s.scored, jnp.nan))
        s = in_place.when(jnp.any(scored), lambda s: _score_target_steps(engine, spec, s, scored, t_width), s)
    return _finish(spec, s, ended, step=rewritten, source=TARGET, prm_width=t_width, overflow=ended & t_overflow)
