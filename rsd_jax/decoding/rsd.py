"""The RSD loop: rows with their own phase, in one jitted `lax.while_loop` of ticks (the one RSD engine).

Each row carries its phase (rsd_jax.decoding.phases)

    DRAFTING -> SCORING -> accepted: DRAFTING (or DONE)
                        -> rejected: WAITING -> REWRITING -> DRAFTING (or DONE)

and one tick runs each model at most once, for the rows in its phase only (each pass updating the state's caches
in place, `in_place.when`): the draft writes a token, the PRM scores the steps that ended and the acceptance rule
decides, the target writes a token for the rejected rows when `quorum` of them wait or nothing else can advance.
Rows waiting for the target keep their caches; nothing is recomputed.

The lock-step setting (spec.rounds: decoding.schedule "sync", or the official patience cut-off) is the same loop
with the rows held at step boundaries: a row that committed a step is HELD until every running row has, the PRM
scores only when no row is still drafting and the target fires for the whole batch: every row writes its k-th step
in round k, as the official code's batch-wide loop does. decoding.patience counts those rounds: once patience - 1
rounds in a row have passed with no row finishing, every running row ends after the next round, cut off.

Exactness: a row's committed tokens, step sources and rewards depend only on its own sequence (each pass computes
a row from its own cache, with chunk boundaries that start where its cache ends), so greedy records are the same
at any quorum, pass size and in either setting (up to float rounding of batched products of different sizes, which
moves no greedy token in the tests), and equal the slow host reference's (tests/reference.py). Sampling draws with a
key per row folded with the model, the step and the token's index: a row's draws do not depend on the schedule or on
the other rows. Shapes: B rows, T committed-token buffer, Tp the PRM's view buffer, M = max_step_tokens.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from rsd_jax.decoding import in_place
from rsd_jax.decoding.phases import draft_pass, prm_pass, target_fires, target_pass
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd_state import (DONE, DRAFTING, HELD, SCORING, Knobs, LoopState, Rounds, RSDCaches,
                                        RSDOutput, RSDStats, StepInProgress, Trace, new_caches)
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.errors import InputError
from rsd_jax.placement import on_mesh

if TYPE_CHECKING:
    from rsd_jax.engine import Engine


def running(phase: jax.Array) -> jax.Array:
    """[B] bool: the rows in a step (neither HELD at a step boundary nor DONE)."""
    return (phase != DONE) & (phase != HELD)


def release(spec: DecodeSpec, s: LoopState) -> LoopState:
    """The lock-step setting's round boundary: once no row is in a step, the HELD rows start the next round, and
    the patience counters move on (a round in which no row finished counts; the round after patience - 1 of them
    in a row is the last)."""
    boundary = ~jnp.any(running(s.phase)) & jnp.any(s.phase == HELD)
    unchanged = jnp.where(s.rounds.finished, 0, s.rounds.unchanged + 1)
    last = (spec.patience > 0) & (unchanged >= spec.patience - 1)
    rounds = Rounds(unchanged=jnp.where(boundary, unchanged, s.rounds.unchanged),
                    finished=s.rounds.finished & ~boundary, last=jnp.where(boundary, last, s.rounds.last))
    return dataclasses.replace(s, rounds=rounds, phase=jnp.where(boundary & (s.phase == HELD), DRAFTING, s.phase))


def passes_of_tick(engine: "Engine", knobs: Knobs, spec: DecodeSpec, quorum: int, s: LoopState) -> LoopState:
    """The draft, the PRM and the target, each only when some row is in its phase (in the lock-step setting the PRM
    once no row drafts; the target when `target_fires`)."""
    drafting = jnp.any(s.phase == DRAFTING)
    s = in_place.when(drafting, functools.partial(draft_pass, engine, spec), s)
    scores = jnp.any(s.phase == SCORING) & ~(jnp.any(s.phase == DRAFTING) & spec.rounds)
    s = in_place.when(scores, functools.partial(prm_pass, engine, knobs, spec), s)
    s = in_place.when(target_fires(quorum, s.phase), functools.partial(target_pass, engine, spec), s)
    return dataclasses.replace(s, stats=dataclasses.replace(s.stats, iterations=s.stats.iterations + 1))  # ticks


def tick(engine: "Engine", knobs: Knobs, spec: DecodeSpec, quorum: int, s: LoopState) -> LoopState:
    """One tick of the loop: the round boundary (lock-step setting), then the passes."""
    if spec.rounds:
        s = release(spec, s)
    return passes_of_tick(engine, knobs, spec, quorum, s)


def initial_state(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array, spec: DecodeSpec,
                  caches: RSDCaches) -> LoopState:
    """The state before the first tick: every row with a prompt DRAFTING (rows of length 0 DONE), the caches given
    (their contents ignored: every row starts at length 0), a key per row split from `key`."""
    batch = prompts.tokens.shape[0]
    empty = jnp.zeros((batch,), jnp.int32)
    nan = jnp.full((batch,), jnp.nan, jnp.float32)
    return LoopState(
        phase=jnp.where(prompts.length == 0, DONE, DRAFTING).astype(jnp.int32), tokens=prompts.tokens,
        length=prompts.length, prompt_length=prompts.length, n_steps=empty, prm_tokens=prompts.prm_tokens,
        prm_length=prompts.prm_length, drafted=StepInProgress.empty(batch, spec.step_tokens),
        rewritten=StepInProgress.empty(batch, spec.step_tokens), reward=nan, delta=nan, scored=nan,
        overflow=jnp.zeros((batch,), bool), caches=RSDCaches(
            draft=caches.draft.with_lengths(empty), target=caches.target.with_lengths(empty),
            prm=caches.prm.with_lengths(empty)),
        histogram=knobs.histogram, trace=Trace.empty(batch, spec.max_steps, target_reward=spec.record_target_reward),
        stats=RSDStats.zeros(batch), rounds=Rounds.start(spec.patience), row_keys=jax.random.split(key, batch))


def quorum_for(spec: DecodeSpec, batch: int) -> int:
    """The target's quorum: the whole batch in the lock-step setting, else spec.quorum or (0) a quarter of it."""
    if spec.rounds:
        return batch
    return spec.quorum if spec.quorum > 0 else max(1, batch // 4)


def output(final: LoopState) -> RSDOutput:
    return RSDOutput(tokens=final.tokens, length=final.length, prompt_length=final.prompt_length,
                     n_steps=final.n_steps, prm_tokens=final.prm_tokens, prm_length=final.prm_length,
                     trace=final.trace, stats=final.stats, histogram=final.histogram)


def rsd_loop(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array, caches: RSDCaches,
             spec: DecodeSpec) -> tuple[RSDOutput, RSDCaches]:
    """The loop of ticks working in `caches` (RSDCaches.zeros's shapes; their contents are ignored), which it
    returns: jitted with the caches donated, they are allocated once, outside the loop, and come back in the same
    buffers."""
    s = initial_state(engine, prompts=prompts, knobs=knobs, key=key, spec=spec, caches=caches)
    body = functools.partial(tick, engine, knobs, spec, quorum_for(spec, prompts.tokens.shape[0]))
    final = jax.lax.while_loop(lambda s: jnp.any(s.phase != DONE), body, s)
    return output(final), final.caches


_rsd_loop = jax.jit(rsd_loop, static_argnames=("spec",), donate_argnames=("caches",))


def check_options(engine: "Engine", spec: DecodeSpec) -> None:
    """The combinations the loop refuses, before any work."""
    if spec.record_target_reward and engine.self_scoring:
        raise InputError("decoding: record_target_reward scores the target's steps with a separate PRM, and this "
                         "engine's draft scores itself: turn record_target_reward off or load a PRM")


def rsd_decode(engine: "Engine", *, prompts: Prompts, knobs: Knobs, key: jax.Array, spec: DecodeSpec) -> RSDOutput:
    """Reward-guided speculative decoding of a batch of prompts, in one jitted loop (on the engine's mesh when it
    has one: the batch split over "data", the weights as they are sharded).

    knobs (δ, p, α, q, budget, histogram) are traced: a threshold sweep compiles once; spec is static."""
    check_options(engine, spec)
    engine = engine.stacked()  # the loop scans the stacked layers: faster than the CPU's layer copies (issue 37)
    with on_mesh(engine.mesh, prompts=prompts, replicated=(knobs, key)) as (prompts, (knobs, key)):
        caches = new_caches(engine, prompts)
        out, _ = _rsd_loop(engine, prompts=prompts, knobs=knobs, key=key, caches=caches, spec=spec)
    return out
