"""What each model used, kept as arrays inside the loops (`Usage`): tokens, forward passes and FLOPs, useful and
executed.

useful: the tokens that had to be computed (valid rows and tokens only), with attention over the real context.
executed: what the hardware ran — every row of the batch, padded chunk tokens, attention over the whole
cache capacity. Both in FLOPs from `rsd_jax.flops`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax import flops
from rsd_jax.models.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Usage:
    tokens: jax.Array  # [B] int32 valid tokens processed
    useful_flops: jax.Array  # [B] float32
    executed_flops: jax.Array  # [] float32, whole batch
    forwards: jax.Array  # [] int32 forward calls: the model's sequential passes over the batch
    rows: jax.Array  # [] int32 rows that had tokens in those passes, summed (rows / forwards: rows per pass)

    @classmethod
    def zeros(cls, batch: int) -> "Usage":
        return cls(tokens=jnp.zeros((batch,), jnp.int32), useful_flops=jnp.zeros((batch,), jnp.float32),
                   executed_flops=jnp.zeros((), jnp.float32), forwards=jnp.zeros((), jnp.int32),
                   rows=jnp.zeros((), jnp.int32))

    def add_forward(self, cfg: ModelConfig, starts: jax.Array, n_valid: jax.Array, chunk: int,
                    capacity: int, head_tokens: int, *, rows: jax.Array | None = None) -> "Usage":
        """Counts one forward of a [B, chunk] block; `head_tokens` per row also went through the head. With rows
        [G] (distinct), the block held those G rows of the batch (starts, n_valid [G])."""
        batch = starts.shape[0]
        head = flops.head_flops_per_token(cfg)
        useful = flops.span_flops(cfg, starts.astype(jnp.float32), n_valid.astype(jnp.float32),
                                  with_head=False) + jnp.where(n_valid > 0, head * head_tokens, 0)
        executed = float(flops.executed_flops(cfg, batch, chunk, capacity, with_head=False)
                         + batch * head * head_tokens)
        if rows is not None:
            n_valid, useful = (jnp.zeros_like(self.tokens).at[rows].set(n_valid),
                               jnp.zeros_like(self.useful_flops).at[rows].set(useful))
        return Usage(tokens=self.tokens + n_valid, useful_flops=self.useful_flops + useful,
                     executed_flops=self.executed_flops + executed, forwards=self.forwards + 1,
                     rows=self.rows + jnp.sum(n_valid > 0, dtype=jnp.int32))

    def add_head(self, cfg: ModelConfig, mask: jax.Array) -> "Usage":
        """Counts the head applied to one token of each row in mask [B] (e.g. a PRM reading a reward)."""
        head = flops.head_flops_per_token(cfg)
        return dataclasses.replace(self, useful_flops=self.useful_flops + jnp.where(mask, head, 0),
                                   executed_flops=self.executed_flops + float(mask.shape[0] * head))

    def __add__(self, other: "Usage") -> "Usage":
        return jax.tree.map(jnp.add, self, other)
