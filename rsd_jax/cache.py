"""Explicit KV cache: one pytree stacked over layers, with a valid length per row.

Layout (right-padded, each row starts at slot 0):
    k, v:     [L, B, KVH, S, D]   S = capacity in tokens; each (row, head) reads its keys as one contiguous
                                  [S, D] block, so attention is a plain batched matmul (no transposed copy
                                  of the cache per layer, which on CPU cost far more than the attention itself)
    lengths:  [B] int32          slots [0, lengths[b]) of row b are valid; the rest is stale and masked

Writes go in place at per-row offsets (a scatter with out-of-range slots dropped), what a query sees comes
from `lengths` (rsd_jax.models.attention.Visibility), and rolling a row back is lowering its length: stale slots are masked, then overwritten.
Always built with zeros (`jnp.empty` is uninitialised memory in recent JAX).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.mesh_axes import DATA as DATA_AXIS, has_data_axis, split, widths


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    k: jax.Array  # [L, B, KVH, S, D]
    v: jax.Array  # [L, B, KVH, S, D]
    lengths: jax.Array  # [B] int32

    @classmethod
    def zeros(cls, layout: tuple[int, int, int], batch: int, capacity: int, dtype) -> "KVCache":
        """Zeros for `batch` rows of `capacity` slots; layout (L, KVH, D): a model's
        `Architecture.cache_layout` (rsd_jax.models.architectures)."""
        layers, kv_heads, head_dim = layout
        shape = (layers, batch, kv_heads, capacity, head_dim)
        cache = cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), lengths=jnp.zeros((batch,), jnp.int32))
        return cache.on_current_mesh()

    @staticmethod
    def specs(num_kv_heads: int, mesh) -> "KVCache":
        """The layout on a ("data", "model"[, "tensor"]) mesh, as a KVCache of PartitionSpecs: batch over data,
        whole KV heads over the tensor-parallel axes they divide (rsd_jax.mesh_axes.split), else replicated."""
        P = jax.sharding.PartitionSpec
        kv = split(num_kv_heads, *widths(mesh))
        return KVCache(k=P(None, DATA_AXIS, kv, None, None), v=P(None, DATA_AXIS, kv, None, None),
                       lengths=P(DATA_AXIS))

    def on_current_mesh(self) -> "KVCache":
        """Under `jax.set_mesh` with a "data" axis: constrained to `specs`. Without a mesh: unchanged."""
        mesh = jax.sharding.get_abstract_mesh()
        if not has_data_axis(mesh):
            return self
        return jax.tree.map(jax.lax.with_sharding_constraint, self, KVCache.specs(self.num_kv_heads, mesh))

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def num_kv_heads(self) -> int:
        return self.k.shape[2]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def set_lengths(self, rows: jax.Array | None, lengths: jax.Array) -> "KVCache":
        """New valid lengths [G] of the distinct rows [G] (all rows when None)."""
        if rows is None:
            return self.with_lengths(lengths)
        return self.with_lengths(self.lengths.at[rows].set(jnp.asarray(lengths, jnp.int32)))

    def with_lengths(self, lengths: jax.Array) -> "KVCache":
        """Same buffers, new valid lengths (rollback when lower)."""
        return dataclasses.replace(self, lengths=jnp.asarray(lengths, jnp.int32))

    def write_layer(self, layer: int, slots: jax.Array, k_new: jax.Array, v_new: jax.Array,
                    rows: jax.Array | None = None) -> "KVCache":
        """Writes k_new, v_new [B, T, KVH, D] of layer `layer` at slots [B, T] (slot >= S: not written); with rows
        [G] (distinct), k_new / v_new / slots hold G rows, written to those rows of the cache."""
        rows = (jnp.arange(self.batch) if rows is None else rows)[:, None, None]  # [B or G, 1, 1]
        heads = jnp.arange(self.num_kv_heads)[None, :, None]  # [1, KVH, 1]
        at = (layer, rows, heads, slots[:, None, :])  # index [B, KVH, T]

        def put(buf: jax.Array, new: jax.Array) -> jax.Array:
            return buf.at[at].set(new.transpose(0, 2, 1, 3).astype(buf.dtype), mode="drop")

        k, v = put(self.k, k_new), put(self.v, v_new)
        return dataclasses.replace(self, k=k, v=v)


def chunk_slots(starts: jax.Array, n_valid: jax.Array, chunk: int, capacity: int) -> jax.Array:
    """Cache slots [B, T] of a chunk of T tokens starting at `starts` [B]; invalid tokens map to `capacity`."""
    offsets = jnp.arange(chunk, dtype=jnp.int32)[None, :]
    slots = starts[:, None] + offsets
    return jnp.where(offsets < n_valid[:, None], slots, capacity)

