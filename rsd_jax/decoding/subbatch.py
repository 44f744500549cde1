"""Run the target only on the rows that rejected: gather them into a smaller, bucketed sub-batch.

At large batch sizes decode is compute-bound, so a target step over all B rows costs B rows of work even if
only a few rejected. With buckets (e.g. B/8, B/4, B/2), the rejected rows are gathered (caches included)
into the smallest bucket that holds them, the target writes their step there, and the results and caches
are scattered back; more rejections than the largest bucket run on the full batch. Greedy results are the
same as without buckets; sampled ones are equally valid draws (the random numbers are drawn per sub-batch).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding.generator import Step, TokenTables, write_step
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.work import Work
from rsd_jax.models.model import Model


def _gather(cache: KVCache, work: Work, rows: jax.Array) -> tuple[KVCache, Work]:
    return (KVCache(k=cache.k[:, rows], v=cache.v[:, rows], lengths=cache.lengths[rows]),
            dataclasses.replace(work, tokens=work.tokens[rows], useful_flops=work.useful_flops[rows]))


def _scatter(full: Step, sub: Step, rows: jax.Array, work: Work) -> Step:
    cache = full.cache
    return Step(tokens=full.tokens.at[rows].set(sub.tokens), length=full.length.at[rows].set(sub.length),
                ended_eos=full.ended_eos.at[rows].set(sub.ended_eos),
                ended_stop=full.ended_stop.at[rows].set(sub.ended_stop),
                nonfinite=full.nonfinite.at[rows].set(sub.nonfinite),
                cache=KVCache(k=cache.k.at[:, rows].set(sub.cache.k), v=cache.v.at[:, rows].set(sub.cache.v),
                              lengths=cache.lengths.at[rows].set(sub.cache.lengths)),
                work=Work(tokens=work.tokens.at[rows].set(sub.work.tokens),
                          useful_flops=work.useful_flops.at[rows].set(sub.work.useful_flops),
                          executed_flops=sub.work.executed_flops, forwards=sub.work.forwards))


def write_step_on_active_rows(model: Model, cache: KVCache, tokens: jax.Array, length: jax.Array,
                              active: jax.Array, cap: jax.Array, key: jax.Array, tables: TokenTables, *,
                              sampling: Sampling, max_step_tokens: int, chunk: int, work: Work,
                              buckets: tuple[int, ...]) -> Step:
    """`write_step` for the active rows, run on the smallest bucket of rows that holds them."""
    batch = tokens.shape[0]
    order = jnp.argsort(~active, stable=True)  # active rows first
    kw = dict(sampling=sampling, max_step_tokens=max_step_tokens, chunk=chunk)

    def full():
        return write_step(model, cache, tokens, length, active, cap, key, tables, work=work, **kw)

    def bucket(size: int):
        def run():
            rows = order[:size]
            sub_cache, sub_work = _gather(cache, work, rows)
            sub = write_step(model, sub_cache, tokens[rows], length[rows], active[rows], cap[rows], key, tables,
                             work=sub_work, **kw)
            empty = Step(tokens=jnp.zeros((batch, max_step_tokens), jnp.int32), length=jnp.zeros((batch,), jnp.int32),
                         ended_eos=jnp.zeros((batch,), bool), ended_stop=jnp.zeros((batch,), bool),
                         nonfinite=jnp.zeros((batch,), bool), cache=cache, work=work)
            return _scatter(empty, sub, rows, work)
        return run

    sizes = sorted(s for s in set(buckets) if 0 < s < batch)
    if not sizes:
        return full()
    which = jnp.sum(jnp.sum(active) > jnp.asarray(sizes))  # index of the smallest bucket that fits
    return jax.lax.switch(which, [bucket(s) for s in sizes] + [full])
