"""Process beam search with the PRM: keep the `width` best partial solutions, expand each by `expansions`
sampled steps, score every new step with the PRM, keep the best `width` again.

Rows are the width × expansions candidates of each prompt. One iteration of the RSD loop with every step
accepted writes and scores a step for every live candidate; then the candidates of each prompt are ranked by
their newest step's reward and the `width` best are copied `expansions` times, caches included (a gather
over the batch axis). Width 1 with one expansion is greedy step decoding.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding.best_of_n import tile_prompts
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd import initial_state, output, passes_of_tick, release, running
from rsd_jax.decoding.rsd_state import DONE, Knobs, LoopState, RSDCaches, RSDOutput
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.placement import on_mesh

if TYPE_CHECKING:
    from rsd_jax.engine import Engine


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BeamOutput:
    beams: RSDOutput  # B * width * expansions rows; the best of prompt b is row b * (width * expansions)
    useful_flops: jax.Array  # [] all candidates' useful FLOPs, draft + PRM, pruned ones included
    scores: jax.Array  # [B * K] final score of each row


def gather_rows(state: LoopState, rows: jax.Array) -> LoopState:
    """State with its batch rows replaced by state rows `rows` [B] (scalars, the histogram and each slot's own key
    untouched: copies of a candidate draw their next steps independently)."""
    batch = state.length.shape[0]

    def take(x):
        if isinstance(x, KVCache):
            return KVCache(k=x.k[:, rows], v=x.v[:, rows], lengths=x.lengths[rows])
        if hasattr(x, "ndim") and x.ndim >= 1 and x.shape[0] == batch:
            return x[rows]
        return x

    gathered = jax.tree.map(take, state, is_leaf=lambda x: isinstance(x, KVCache))
    return dataclasses.replace(gathered, histogram=state.histogram, rounds=state.rounds, row_keys=state.row_keys)


def newest_reward(state: LoopState) -> jax.Array:
    """Reward of each row's newest step [B] (-inf before the first step)."""
    last = jnp.take_along_axis(state.trace.reward, jnp.maximum(state.n_steps - 1, 0)[:, None], axis=1)[:, 0]
    return jnp.where(state.n_steps > 0, jnp.nan_to_num(last, nan=-jnp.inf), -jnp.inf)


def select_beams(scores: jax.Array, done: jax.Array, width: int, expansions: int) -> jax.Array:
    """Rows [B*K] to copy into each slot: per prompt the `width` best candidates, each `expansions` times.
    A finished candidate competes once (its copies are identical)."""
    k = width * expansions
    scores = scores.reshape(-1, k)
    duplicate = done.reshape(-1, k) & (jnp.arange(k)[None, :] % expansions != 0)
    _, best = jax.lax.top_k(jnp.where(duplicate, -jnp.inf, scores), width)  # [B, width]
    base = jnp.arange(scores.shape[0])[:, None] * k
    return (base + jnp.repeat(best, expansions, axis=1)).reshape(-1)


def beam_search_impl(engine: "Engine", *, prompts: Prompts, key: jax.Array, spec: DecodeSpec, width: int,
                     expansions: int) -> BeamOutput:
    """Beam search over `width` x `expansions` candidates per prompt (the engine's target is never used)."""
    k = width * expansions
    engine = engine.drafting_only()
    # one step for every candidate per round (the loop's lock-step setting); the official cut-off is RSD's alone
    spec = spec.replace(weighting="binary", budget=False, online_budget=False, patience=0, schedule="sync")
    knobs = Knobs.accept_all(spec)
    tiled = tile_prompts(prompts, k)
    state = initial_state(engine, prompts=tiled, knobs=knobs, key=key, spec=spec, caches=RSDCaches.zeros(engine, tiled))
    batch = tiled.tokens.shape[0]

    def step(s: LoopState) -> LoopState:
        """One round: every running candidate writes and scores one step, then waits at its boundary."""
        tick = functools.partial(passes_of_tick, engine, knobs, spec, batch)
        return jax.lax.while_loop(lambda s: jnp.any(running(s.phase)), tick, release(spec, s))

    def useful(s: LoopState) -> jax.Array:
        return jnp.sum(s.stats.draft.useful_flops) + jnp.sum(s.stats.prm.useful_flops)

    def body(carry: Beams) -> Beams:
        before = useful(carry.state)
        s = step(carry.state)
        return Beams(state=gather_rows(s, select_beams(newest_reward(s), s.phase == DONE, width, expansions)),
                     useful_flops=carry.useful_flops + useful(s) - before)

    final = jax.lax.while_loop(lambda c: jnp.any(c.state.phase != DONE), body, Beams(state, jnp.float32(0)))
    return BeamOutput(beams=output(final.state), useful_flops=final.useful_flops, scores=newest_reward(final.state))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Beams:
    """The beam search's loop state: the candidates' RSD state and the useful FLOPs of all candidates so far."""

    state: LoopState
    useful_flops: jax.Array  # []


_beam_search = jax.jit(beam_search_impl, static_argnames=("spec", "width", "expansions"))


def beam_search(engine: "Engine", *, prompts: Prompts, key: jax.Array, spec: DecodeSpec, width: int,
                expansions: int) -> BeamOutput:
    """Process beam search with the PRM (one device; on an engine with a mesh, the batch is split over "data")."""
    engine = engine.stacked()  # the RSD loop's layout (rsd_decode)
    with on_mesh(engine.mesh, prompts=prompts, replicated=key) as (prompts, key):
        return _beam_search(engine, prompts=prompts, key=key, spec=spec, width=width, expansions=expansions)
