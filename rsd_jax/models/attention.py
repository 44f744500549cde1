"""Attention of a chunk of queries over the KV cache, in key blocks with an online softmax.

The scores of a chunk never exist for the whole cache at once: keys are read in blocks of `KEY_BLOCK` slots,
and a running maximum, normaliser and weighted sum (float32) are updated block by block (the "flash" form of
softmax). Only the blocks up to the longest visible context of the batch are visited, so a short context reads
a short part of the cache, and the temporaries scale with the chunk and the block, not with the cache capacity.

Shapes: B batch, T queries in the chunk, H query heads, K kv heads, D head dim, L layers,
S cache capacity (slots), N key-block width.

Exactness: a key block that holds no visible key of a row changes nothing in that row's result (its scores are
the finite mask value, whose weight is exactly 0 once the row has seen a visible key, and slot 0 is visible to
every real query), so a row's output does not depend on how many blocks the batch visits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

KEY_BLOCK = 512  # cache slots per key block
MASKED = -1e30  # finite: a fully masked row gives a uniform softmax, never NaN


@dataclasses.dataclass(frozen=True)
class Visibility:
    """Which cache slots each query of a chunk sees: slot s is visible to query (b, t) iff
    s <= query_slot[b, t] and s < key_end[b]. Built and used inside one trace (not a pytree)."""

    query_slot: jax.Array  # [B, T] int32 slot (= position) of each query
    key_end: jax.Array  # [B] int32 slots at and beyond it are stale or padding
    n_blocks: jax.Array | int  # key blocks the batch visits: traced, or a Python int (static)

    @classmethod
    def of_chunk(cls, starts: jax.Array, n_valid: jax.Array, chunk: int, capacity: int,
                 all_blocks: bool = False) -> "Visibility":
        """A chunk of `chunk` tokens written at slots starts[b] .. starts[b] + n_valid[b] - 1.

        The blocks up to the longest row's end are visited (a traced count); with `all_blocks`, or when one block
        holds the whole cache, every block (a static count: the loop is then differentiable, as training needs).
        """
        query_slot = starts[:, None] + jnp.arange(chunk, dtype=jnp.int32)[None, :]
        key_end = starts + n_valid
        block = min(KEY_BLOCK, capacity)
        if all_blocks or block == capacity:
            return cls(query_slot=query_slot, key_end=key_end, n_blocks=-(-capacity // block))
        n_blocks = ((jnp.max(key_end) + block - 1) // block).astype(jnp.int32)
        return cls(query_slot=query_slot, key_end=key_end, n_blocks=n_blocks)


def attend(q: jax.Array, keys: jax.Array, values: jax.Array, layer: jax.Array, visible: Visibility,
           rows: jax.Array | None = None) -> jax.Array:
    """Softmax attention of queries q [B, T, H, D] (already rotated) over layer `layer` of the cache
    keys / values [L, B, K, S, D]; returns [B, T, H, D] in q's dtype. With rows [G], q holds G rows that read
    those rows of the cache (each key block gathered: the other rows are not read).

    Grouped-query attention reads each block of K heads and repeats it to the H query heads: the queries stay
    split by head (over a mesh's "model" axis) and the cache keeps its own layout (whole KV heads, or replicated),
    so the partitioner never re-lays out the cache to match a split of the query groups.
    """
    b, t, h, d = q.shape
    k_heads, capacity, cache_rows = keys.shape[2], keys.shape[3], keys.shape[1]
    block = min(KEY_BLOCK, capacity)
    kv_of_head = jnp.arange(h) // (h // k_heads)  # [H] the KV head each query head reads
    q = q.transpose(0, 2, 1, 3)  # [B, H, T, D]
    scale = d ** -0.5
    offsets = jnp.arange(block, dtype=jnp.int32)

    def read(cache: jax.Array, start: jax.Array) -> jax.Array:  # [B, H, N, D]
        piece = jax.lax.dynamic_slice(cache, (layer, 0, 0, start, 0), (1, cache_rows, k_heads, block, d))[0]
        if rows is not None:
            piece = jnp.take(piece, rows, axis=0)
        if k_heads != h:  # grouped-query: each KV head repeated to its query heads (a copy; none when K = H)
            piece = jnp.take(piece, kv_of_head, axis=1)
        return piece.astype(q.dtype)

    def visit(j, carry: OnlineSoftmax) -> OnlineSoftmax:
        top, norm, acc = carry.top, carry.norm, carry.acc
        first = j * block
        start = jnp.minimum(first, capacity - block)  # the last block is shifted back to fit; seen slots masked
        slot = start + offsets  # [N]
        seen = (slot[None, None, :] >= first) & (slot[None, None, :] <= visible.query_slot[:, :, None]) & (
            slot[None, None, :] < visible.key_end[:, None, None])  # [B, T, N]
        scores = jnp.einsum("bhtd,bhnd->bhtn", q, read(keys, start), preferred_element_type=jnp.float32) * scale
        scores = jnp.where(seen[:, None], scores, MASKED)
        new_top = jnp.maximum(top, jnp.max(scores, axis=-1))
        weights = jnp.exp(scores - new_top[..., None])
        decay = jnp.exp(top - new_top)
        norm = norm * decay + jnp.sum(weights, axis=-1)
        acc = acc * decay[..., None] + jnp.einsum("bhtn,bhnd->bhtd", weights.astype(q.dtype), read(values, start),
                                                  preferred_element_type=jnp.float32)
        return OnlineSoftmax(top=new_top, norm=norm, acc=acc)

    init = OnlineSoftmax(top=jnp.full((b, h, t), MASKED, jnp.float32), norm=jnp.zeros((b, h, t), jnp.float32),
                         acc=jnp.zeros((b, h, t, d), jnp.float32))
    final = jax.lax.fori_loop(0, visible.n_blocks, visit, init)
    return (final.acc / final.norm[..., None]).astype(q.dtype).transpose(0, 2, 1, 3)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OnlineSoftmax:
    """The attention's loop state over key blocks: the running maximum score, the softmax's normaliser and the
    weighted sum of values, per query."""

    top: jax.Array  # [B, H, T] float32
    norm: jax.Array  # [B, H, T] float32
    acc: jax.Array  # [B, H, T, D] float32
