"""Run the target only on the rows that rejected: gather them into groups of a fixed number of rows.

At large batch sizes on a compute-bound device a target step over all B rows costs B rows of usage even if only a
few rejected. With `rows` = G < B, the rejected rows are taken G at a time (a `lax.while_loop` over the groups
that hold any; one compiled copy of the target whatever the count): each group's rows and cache rows are
gathered, the target writes their step, and results and caches are scattered back. G = B (or 0) runs the target
over the whole batch with the other rows masked, which costs no gathered copy of the cache: the right choice
where decoding is memory-bound (one pass costs about the same for 3 rows as for 64).

Greedy results equal those of the whole batch; sampled ones are equally valid draws (each group draws its own
random numbers).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding.generator import Step, TokenTables, write_step
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.usage import Usage
from rsd_jax.models.model import Model


def _take(x: jax.Array, rows: jax.Array, axis: int = 0) -> jax.Array:
    return jnp.take(x, rows, axis=axis)


def _put(full: jax.Array, rows: jax.Array, part: jax.Array, keep: jax.Array, axis: int = 0) -> jax.Array:
    """full with part written at `rows` along `axis`, for the rows where keep [G] is True (the others unchanged)."""
    shape = [1] * part.ndim
    shape[axis] = keep.shape[0]
    current = _take(full, rows, axis)
    merged = jnp.where(keep.reshape(shape), part, current)
    index = (slice(None),) * axis + (rows,)
    return full.at[index].set(merged)


def write_step_in_groups(model: Model, cache: KVCache, *, tokens: jax.Array, length: jax.Array, active: jax.Array,
                         room: jax.Array, key: jax.Array, tables: TokenTables, sampling: Sampling,
                         max_step_tokens: int, chunk: int, usage: Usage, rows: int) -> Step:
    """`write_step` for the active rows, `rows` of them at a time (0 or >= B: the whole batch, masked)."""
    batch = tokens.shape[0]
    kw = dict(tables=tables, sampling=sampling, max_step_tokens=max_step_tokens, chunk=chunk)
    if rows <= 0 or rows >= batch:
        return write_step(model, cache, tokens=tokens, length=length, active=active, room=room, key=key, usage=usage,
                          **kw)
    order = jnp.argsort(~active, stable=True)  # active rows first
    n_groups = (jnp.sum(active) + rows - 1) // rows
    position = jnp.arange(rows)
    empty = Step(tokens=jnp.zeros((batch, max_step_tokens), jnp.int32), length=jnp.zeros((batch,), jnp.int32),
                 ended_eos=jnp.zeros((batch,), bool), ended_stop=jnp.zeros((batch,), bool),
                 nonfinite=jnp.zeros((batch,), bool), cache=cache, usage=usage)

    def group(g, out: Step) -> Step:
        first = g * rows
        start = jnp.minimum(first, batch - rows)  # the last group is shifted back to fit; rows seen are masked
        picked = jax.lax.dynamic_slice_in_dim(order, start, rows)
        mine = _take(active, picked) & (start + position >= first)  # [G]: this group's rows to write
        c = out.cache
        sub_cache = KVCache(k=_take(c.k, picked, 1), v=_take(c.v, picked, 1), lengths=_take(c.lengths, picked))
        sub_usage = dataclasses.replace(out.usage, tokens=_take(out.usage.tokens, picked),
                                       useful_flops=_take(out.usage.useful_flops, picked))
        sub = write_step(model, sub_cache, tokens=_take(tokens, picked), length=_take(length, picked), active=mine,
                         room=_take(room, picked), key=jax.random.fold_in(key, g), usage=sub_usage, **kw)
        put = lambda full, part, axis=0: _put(full, picked, part, mine, axis)  # noqa: E731
        cache = KVCache(k=put(c.k, sub.cache.k, 1), v=put(c.v, sub.cache.v, 1),
                        lengths=put(c.lengths, sub.cache.lengths))
        return Step(tokens=put(out.tokens, sub.tokens), length=put(out.length, sub.length),
                    ended_eos=put(out.ended_eos, sub.ended_eos), ended_stop=put(out.ended_stop, sub.ended_stop),
                    nonfinite=put(out.nonfinite, sub.nonfinite), cache=cache,
                    usage=Usage(tokens=put(out.usage.tokens, sub.usage.tokens),
                              useful_flops=put(out.usage.useful_flops, sub.usage.useful_flops),
                              executed_flops=sub.usage.executed_flops, forwards=sub.usage.forwards,
                              rows=sub.usage.rows))

    return jax.lax.fori_loop(0, n_groups, group, empty)
