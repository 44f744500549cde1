"""Forward passes over some rows of a batch: the asynchronous loop's building blocks.

A pass runs a model for the rows selected by a mask [B]. With `group` = G > 0 it gathers at most G of them
(`pick_rows`) and computes only those (`Model.backbone(rows=)`: the other rows' cache is neither read nor written);
the pass takes the smallest of a few sizes that holds the selected rows (`pass_sizes`, e.g. G/4, G/2, G; one
compiled copy each, chosen by `in_place.switch`, which updates the cache in place), so a pass costs about the rows
it carries, not B. A size >= B runs the whole batch, the other rows masked (no gather). group 0: always the whole batch, masked (the right choice where a pass is
memory-bound, or on a mesh whose batch is split over devices).

Shapes: B rows, G rows in a pass, T a token buffer, E hidden size, V vocabulary.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding import in_place
from rsd_jax.decoding.usage import Usage
from rsd_jax.models.model import Model


EIGHTHS = {1: (8,), 2: (4, 8), 3: (2, 4, 8), 4: (1, 2, 4, 8), 6: (1, 2, 3, 4, 6, 8)}  # sizes, in eighths of G


def pass_sizes(group: int, batch: int, count: int = 3) -> tuple[int, ...]:
    """The row counts a pass may take, ascending: `count` sizes (1, 2, 3, 4 or 6) of G (capped at B): G; G/2, G;
    G/4, G/2, G; G/8, G/4, G/2, G; G/8, G/4, 3G/8, G/2, 3G/4, G (rounded down, at least 1). (B,) for group 0. Each
    size is one compiled copy of the model: more sizes, less padding, longer compiles. count 0: chosen from the
    batch, 6 where it holds at least four full passes (B >= 4G: there each pass's padding adds up over many passes;
    at batch 64 with G = 16 it brings the executed FLOPs to 1.46x the useful, docs/rsd-loop.md), else 3."""
    if group <= 0:
        return (batch,)
    if count == 0:
        count = 6 if batch >= 4 * group else 3
    group = min(group, batch)
    return tuple(sorted({max(1, group * e // 8) for e in EIGHTHS[count]}))


def by_size(count: jax.Array, sizes: tuple[int, ...], run, operand):
    """run(size, operand) for the smallest size >= count (the largest when none is): one branch per size, each
    updating the operand (which holds the cache) in place."""
    if len(sizes) == 1:
        return run(sizes[0], operand)
    index = jnp.sum(count > jnp.asarray(sizes[:-1], jnp.int32))
    return in_place.switch(index, [lambda x, size=size: run(size, x) for size in sizes], operand)


def pick_rows(select: jax.Array, group: int) -> tuple[jax.Array, jax.Array]:
    """The first `group` selected rows, in batch order: rows [G] int32 (distinct, padded with unselected rows) and
    mine [G] bool (which of them are selected)."""
    order = jnp.argsort(~select, stable=True)[:group].astype(jnp.int32)
    return order, select[order]


def scatter(full: jax.Array, rows: jax.Array, part: jax.Array, mine: jax.Array) -> jax.Array:
    """full [B, ...] with part [G, ...] written at rows [G] where mine [G] (elsewhere unchanged)."""
    keep = mine.reshape(mine.shape + (1,) * (part.ndim - 1))
    return full.at[rows].set(jnp.where(keep, part, full[rows]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CatchingUp:
    """`feed`'s loop state: the cache as fed so far, each row's last hidden state [B, E], the usage."""

    cache: KVCache
    last: jax.Array
    usage: Usage


def feed(model: Model, cache: KVCache, *, view: jax.Array, upto: jax.Array, select: jax.Array, chunk: int,
         sizes: tuple[int, ...] | None = None, usage: Usage) -> tuple[KVCache, jax.Array, Usage]:
    """Feeds view[b, cache.lengths[b] : upto[b]] into the cache for the selected rows, `chunk` tokens per pass and
    in passes of `sizes` rows (`pass_sizes`; None: all rows, masked). Every row's chunks start where its cache ends,
    so a row's computation does not depend on the others.

    view [B, T]; upto [B]; select [B] bool. Returns the cache (lengths = upto on selected rows), each row's last
    fed hidden state [B, E] (zeros where none), the usage.
    """
    batch, t_view = view.shape
    goal = jnp.where(select, upto, cache.lengths)
    offsets = jnp.arange(chunk, dtype=jnp.int32)[None, :]

    def body(c: CatchingUp) -> CatchingUp:
        behind = c.cache.lengths < goal

        def run(size: int, c: CatchingUp) -> CatchingUp:
            gather = size < batch
            rows, mine = pick_rows(behind, size) if gather else (None, behind)
            take = (lambda x: x[rows]) if gather else (lambda x: x)
            start = take(c.cache.lengths)
            n = jnp.where(mine, jnp.clip(take(goal) - start, 0, chunk), 0)
            tokens = jnp.take_along_axis(take(view), jnp.clip(start[:, None] + offsets, 0, t_view - 1), axis=1)
            out = model.backbone(tokens, start, c.cache, n, rows=rows)
            final = jnp.take_along_axis(out.hidden, jnp.maximum(n - 1, 0)[:, None, None], axis=1)[:, 0]
            fed = n > 0
            last = scatter(c.last, rows, final, fed) if gather else jnp.where(fed[:, None], final, c.last)
            usage = c.usage.add_forward(model.config, start, n, chunk, c.cache.capacity, head_tokens=0, rows=rows)
            return CatchingUp(cache=out.cache, last=last, usage=usage)

        return by_size(jnp.sum(behind), sizes or (batch,), run, c)

    last = jnp.zeros((batch, model.config.hidden_size), model.config.jnp_dtype)
    final = jax.lax.while_loop(lambda c: jnp.any(c.cache.lengths < goal), body,
                               CatchingUp(cache=cache, last=last, usage=usage))
    return final.cache, final.last, final.usage


def decode(model: Model, cache: KVCache, *, current: jax.Array, select: jax.Array, sizes: tuple[int, ...],
           usage: Usage) -> tuple[jax.Array, jax.Array, KVCache, Usage]:
    """One token for the selected rows, in a pass of the smallest of `sizes` rows that holds them (`pass_sizes`;
    (B,): all, masked): feeds current [B] at each row's cache length. Returns the rows advanced [B] bool, their last hidden state [B, E] (zeros elsewhere), the cache and
    the usage (the LM head counted for the advanced rows)."""
    batch = current.shape[0]

    def run(size: int, operand):
        _, _, cache, usage = operand
        if size >= batch:
            start = cache.lengths
            out = model.backbone(current[:, None], start, cache, select.astype(jnp.int32))
            usage_ = usage.add_forward(model.config, start, select.astype(jnp.int32), 1, cache.capacity, 1)
            return select, out.hidden[:, 0], out.cache, usage_
        rows, mine = pick_rows(select, size)
        start = cache.lengths[rows]
        out = model.backbone(current[rows][:, None], start, cache, mine.astype(jnp.int32), rows=rows)
        hidden = scatter(jnp.zeros((batch, model.config.hidden_size), out.hidden.dtype), rows, out.hidden[:, 0], mine)
        advanced = jnp.zeros((batch,), bool).at[rows].set(mine)
        usage_ = usage.add_forward(model.config, start, mine.astype(jnp.int32), 1, cache.capacity, 1, rows=rows)
        return advanced, hidden, out.cache, usage_

    nothing = (jnp.zeros((batch,), bool), jnp.zeros((batch, model.config.hidden_size), model.config.jnp_dtype))
    return by_size(jnp.sum(select), sizes, run, nothing + (cache, usage))
