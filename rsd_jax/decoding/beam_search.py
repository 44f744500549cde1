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
from rsd_jax.decoding.rsd import initial_state, rsd_iteration
from rsd_jax.decoding.rsd_state import Knobs, RSDOutput, RSDState, output
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


def gather_rows(state: RSDState, rows: jax.Array) -> RSDState:
    """State with its batch rows replaced by state rows `rows` [B] (scalars and the histogram untouched)."""
    batch = state.length.shape[0]

    def take(x):
        if isinstance(x, KVCache):
            return KVCache(k=x.k[:, rows], v=x.v[:, rows], lengths=x.lengths[rows])
        if hasattr(x, "ndim") and x.ndim >= 1 and x.shape[0] == batch:
            return x[rows]
        return x

    gathered = jax.tree.map(take, state, is_leaf=lambda x: isinstance(x, KVCache))
    return dataclasses.replace(gathered, histogram=state.histogram, key=state.key)


def newest_reward(state: RSDState) -> jax.Array:
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
    spec = spec.replace(weighting="binary", budget=False, online_budget=False, patience=0)  # the official cut-off is RSD's alone
    knobs = Knobs.accept_all(spec)
    state = initial_state(engine, prompts=tile_prompts(prompts, k), histogram=knobs.histogram, key=key, spec=spec)
    step = functools.partial(rsd_iteration, engine, knobs, spec)

    def useful(s: RSDState) -> jax.Array:
        return jnp.sum(s.stats.draft.useful_flops) + jnp.sum(s.stats.prm.useful_flops)

    def body(carry: Beams) -> Beams:
        before = useful(carry.state)
        s = step(carry.state)
        return Beams(state=gather_rows(s, select_beams(newest_reward(s), s.done, width, expansions)),
                     useful_flops=carry.useful_flops + useful(s) - before)

    final = jax.lax.while_loop(lambda c: jnp.any(~c.state.done), body, Beams(state, jnp.float32(0)))
    return BeamOutput(beams=output(final.state), useful_flops=final.useful_flops, scores=newest_reward(final.state))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Beams:
    """The beam search's loop state: the candidates' RSD state and the useful FLOPs of all candidates so far."""

    state: RSDState
    useful_flops: jax.Array  # []


_beam_search = jax.jit(beam_search_impl, static_argnames=("spec", "width", "expansions"))


def beam_search(engine: "Engine", *, prompts: Prompts, key: jax.Array, spec: DecodeSpec, width: int,
                expansions: int) -> BeamOutput:
    """Process beam search with the PRM (one device; on an engine with a mesh, the batch is split over "data")."""
    with on_mesh(engine.mesh, prompts=prompts, replicated=key) as (prompts, key):
        return _beam_search(engine, prompts=prompts, key=key, spec=spec, width=width, expansions=expansions)
