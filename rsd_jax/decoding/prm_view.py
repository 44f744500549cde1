"""The PRM's view of a step, built inside the jitted loop from host-precomputed tables.

Skywork-o1-Open-PRM protocol: the PRM reads BOS + question + "\\n", then every step's text followed by the
"\\n\\n" delimiter token, and a step's reward is read at its delimiter. A generated step of n tokens
y_1 .. y_n becomes, in the PRM's view,
    y_1 .. y_{n-1} + tail(y_n) + [delimiter]
where tail(y_n) is the text part of a merged stop token (".\\n\\n" -> encode(".")), nothing for EOS, and
y_n itself for a step cut at the token cap.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PRMTables:
    row_of_token: jax.Array  # [V] int32: row in text_ids of a stop token, -1 otherwise
    text_ids: jax.Array  # [N, K] int32 text part of each stop token, tokenised on its own (padded)
    text_len: jax.Array  # [N] int32
    delimiter: jax.Array  # [] int32
    eos: jax.Array  # [V] bool

    @property
    def tail_width(self) -> int:
        return max(1, self.text_ids.shape[1])

    @classmethod
    def build(cls, vocab_size: int, stop_ids, text_ids, text_len, delimiter: int, eos_ids) -> "PRMTables":
        row = np.full((vocab_size,), -1, np.int32)
        row[np.asarray(stop_ids, np.int64)] = np.arange(len(stop_ids), dtype=np.int32)
        text_ids = np.asarray(text_ids, np.int32).reshape(len(stop_ids), -1)
        if text_ids.shape[0] == 0:  # no stop tokens at all: keep a [1, 1] placeholder row
            text_ids = np.zeros((1, 1), np.int32)
            text_len = np.zeros((1,), np.int32)
        eos = np.zeros((vocab_size,), bool)
        eos[list(eos_ids)] = True
        return cls(row_of_token=jnp.asarray(row), text_ids=jnp.asarray(text_ids),
                   text_len=jnp.asarray(text_len, jnp.int32), delimiter=jnp.asarray(delimiter, jnp.int32),
                   eos=jnp.asarray(eos))


def step_view(tables: PRMTables, step_tokens: jax.Array, step_len: jax.Array) -> tuple[jax.Array, jax.Array]:
    """PRM-view tokens [B, M + K] and their count [B] of steps step_tokens [B, M] (length step_len)."""
    batch, m = step_tokens.shape
    k = tables.tail_width
    last = jnp.take_along_axis(step_tokens, jnp.maximum(step_len - 1, 0)[:, None], axis=1)[:, 0]
    row = tables.row_of_token[last]
    text = tables.text_ids[jnp.maximum(row, 0)]
    text = jnp.pad(text, ((0, 0), (0, k - text.shape[1])))
    capped_tail = jnp.zeros((batch, k), jnp.int32).at[:, 0].set(last)
    tail = jnp.where((row >= 0)[:, None], text, capped_tail)
    tail_len = jnp.where(row >= 0, tables.text_len[jnp.maximum(row, 0)],
                         jnp.where(tables.eos[last], 0, 1))
    body_len = jnp.maximum(step_len - 1, 0)
    j = jnp.arange(m + k, dtype=jnp.int32)[None, :]
    body = jnp.take_along_axis(step_tokens, jnp.clip(j, 0, m - 1), axis=1)
    tail_at = jnp.take_along_axis(tail, jnp.clip(j - body_len[:, None], 0, k - 1), axis=1)
    end = body_len + tail_len
    view = jnp.where(j < body_len[:, None], body,
                     jnp.where(j < end[:, None], tail_at, tables.delimiter))
    width = jnp.where(step_len > 0, end + 1, 0)
    view = jnp.where(j < width[:, None], view, 0)
    return view, width
