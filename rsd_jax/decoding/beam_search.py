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

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.best_of_n import tile_prompts
from rsd_jax.decoding.generator import TokenTables
from rsd_jax.decoding.prm_view import PRMView
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd import RSDOutput, RSDState, initial_state, output, rsd_iteration
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.models.model import Model


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


def beam_search_impl(draft: Model, prm: Model, prompts: Prompts, tables: TokenTables, prm_view: PRMView,
                     key: jax.Array, spec: DecodeSpec, width: int, expansions: int) -> BeamOutput:
    k = width * expansions
    spec = spec.replace(weighting="binary", online_budget=False)
    accept_all = acceptance.AcceptanceParams.create(delta=0.0)
    state = initial_state(draft, draft, prm, tile_prompts(prompts, k),
                          acceptance.RewardHistogram.create(spec.histogram_bins), key, spec)
    step = functools.partial(rsd_iteration, draft, draft, prm, tables, prm_view, accept_all, jnp.float32(0), spec)

    def useful(s: RSDState) -> jax.Array:
        return jnp.sum(s.stats.draft.useful_flops) + jnp.sum(s.stats.prm.useful_flops)

    def body(carry):
        s, total = carry
        before = useful(s)
        s = step(s)
        total = total + useful(s) - before
        return gather_rows(s, select_beams(newest_reward(s), s.done, width, expansions)), total

    final, total = jax.lax.while_loop(lambda c: jnp.any(~c[0].done), body, (state, jnp.float32(0)))
    return BeamOutput(beams=output(final), useful_flops=total, scores=newest_reward(final))


beam_search = jax.jit(beam_search_impl, static_argnames=("spec", "width", "expansions"))
