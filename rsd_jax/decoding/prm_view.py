"""The PRM's view of a step: the ids the PRM reads for a step the draft or the target generated.

Skywork-o1-Open-PRM protocol (the official RSD code): the PRM reads BOS + question + "\\n", then every step's text,
cut at the "\\n\\n" delimiter and tokenised on its own with the PRM's tokenizer, followed by the delimiter token;
a step's reward is read at its delimiter. Two views produce that, both called as
`view(step_tokens [B, M], step_len [B]) -> (ids [B, W], width [B], overflow [B])`:

- `PRMTextView` (the protocol itself): the step's ids are decoded to text and re-encoded with the PRM's tokenizer on
  the host, through `jax.pure_callback` (per data shard under a mesh). Exact for every pair of tokenizers, also
  where BPE merges differently without the delimiter ("$" + ".\\n\\n" is generated, "$." alone is one token) and
  for a PRM whose vocabulary is not the draft's.
- `PRMTables` (in the graph, no host round trip): a step of n generated tokens y_1 .. y_n becomes
      y_1 .. y_{n-1} + tail(y_n) + [delimiter]
  where tail(y_n) is the text part of a merged stop token (".\\n\\n" -> encode(".")), nothing for EOS, and y_n itself
  for a step cut at the token cap; with `split_stop` (decoding.stop_on_split_delimiter), a step whose last two
  tokens write the delimiter across their boundary ("\\n" then "\\n") becomes y_1 .. y_{n-2} + head(y_{n-1}) +
  [delimiter], head being y_{n-1}'s text before the delimiter's first characters (nothing of y_n is read). Exact
  when re-encoding a step's text gives back its ids (a character-level tokenizer shared by the draft and the PRM,
  as the embedded models have).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from rsd_jax.errors import ConfigError
from rsd_jax.mesh_axes import DATA as DATA_AXIS, has_data_axis


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PRMTables:
    row_of_token: jax.Array  # [V] int32: row in text_ids of a stop token, -1 otherwise
    text_ids: jax.Array  # [N, K] int32 text part of each stop token, tokenised on its own (padded)
    text_len: jax.Array  # [N] int32
    delimiter: jax.Array  # [] int32
    eos: jax.Array  # [V] bool
    # the delimiter split over a step's last two tokens (rsd_jax.tokenizer.SplitDelimiterTable): [K, V] bool, and
    # split_row [K, V] int32: row in text_ids of the token's head (its text before the split), -1 if none
    split_ends: jax.Array | None = None
    split_starts: jax.Array | None = None
    split_row: jax.Array | None = None
    split_stop: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def tail_width(self) -> int:
        return max(1, self.text_ids.shape[1])

    @property
    def growth_per_step(self) -> int:
        """At most how many more ids than generated tokens one step has in the PRM's view."""
        return self.tail_width

    def __call__(self, step_tokens: jax.Array, step_len: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        view, width = step_view(self, step_tokens, step_len)
        return view, width, jnp.zeros(step_len.shape, bool)

    def with_split_stop(self, on: bool) -> "PRMTables":
        """These tables reading a step that ends on the split delimiter as the protocol does (on), or not."""
        if on and self.split_row is None:
            raise ConfigError("decoding.stop_on_split_delimiter needs the PRM tables' split rows (PRMTables.build "
                              "with split=...; Engine.create builds them)")
        return dataclasses.replace(self, split_stop=on)

    @classmethod
    def build(cls, vocab_size: int, stop_ids, text_ids, text_len, delimiter: int, eos_ids, *,
              split: tuple[np.ndarray, np.ndarray, dict[tuple[int, int], list[int]]] | None = None) -> "PRMTables":
        """split: (ends [K, V], starts [K, V], {(k, token): head ids}) of the delimiter written across two tokens
        (rsd_jax.tokenizer.split_delimiter_table, split_head_ids); None: no split rows."""
        row = np.full((vocab_size,), -1, np.int32)
        row[np.asarray(stop_ids, np.int64)] = np.arange(len(stop_ids), dtype=np.int32)
        parts = [list(p[:n]) for p, n in zip(np.asarray(text_ids).reshape(len(stop_ids), -1), text_len)]
        heads = sorted(split[2].items()) if split is not None else []
        parts += [list(ids) for _, ids in heads]
        width = max([1] + [len(p) for p in parts])
        text_ids = np.zeros((max(1, len(parts)), width), np.int32)  # no rows at all: a [1, 1] placeholder
        for r, p in enumerate(parts):
            text_ids[r, :len(p)] = p
        text_len = np.asarray([len(p) for p in parts] or [0], np.int32)
        eos = np.zeros((vocab_size,), bool)
        eos[list(eos_ids)] = True
        arrays = {}
        if split is not None:
            ends, starts, _ = split
            split_row = np.full(np.shape(ends), -1, np.int32)
            for r, ((k, token), _) in enumerate(heads):
                split_row[k, token] = len(stop_ids) + r
            arrays = dict(split_ends=jnp.asarray(ends, bool), split_starts=jnp.asarray(starts, bool),
                          split_row=jnp.asarray(split_row))
        return cls(row_of_token=jnp.asarray(row), text_ids=jnp.asarray(text_ids), text_len=jnp.asarray(text_len),
                   delimiter=jnp.asarray(delimiter, jnp.int32), eos=jnp.asarray(eos), **arrays)


def step_view(tables: PRMTables, step_tokens: jax.Array, step_len: jax.Array) -> tuple[jax.Array, jax.Array]:
    """PRM-view tokens [B, M + K] and their count [B] of steps step_tokens [B, M] (length step_len)."""
    batch, m = step_tokens.shape
    k = tables.tail_width
    last = jnp.take_along_axis(step_tokens, jnp.maximum(step_len - 1, 0)[:, None], axis=1)[:, 0]
    row = tables.row_of_token[last]
    split = jnp.zeros(step_len.shape, bool)
    if tables.split_stop:  # the last two tokens write the delimiter: the view reads the head of the first of them
        previous = jnp.take_along_axis(step_tokens, jnp.maximum(step_len - 2, 0)[:, None], axis=1)[:, 0]
        hits = tables.split_ends[:, previous] & tables.split_starts[:, last] & (step_len >= 2)  # [K, B]
        split = jnp.any(hits, axis=0)
        head = tables.split_row[jnp.argmax(hits, axis=0), previous]
        row = jnp.where(split, head, row)
    text = tables.text_ids[jnp.maximum(row, 0)]
    text = jnp.pad(text, ((0, 0), (0, k - text.shape[1])))
    capped_tail = jnp.zeros((batch, k), jnp.int32).at[:, 0].set(last)
    tail = jnp.where((row >= 0)[:, None], text, capped_tail)
    tail_len = jnp.where(row >= 0, tables.text_len[jnp.maximum(row, 0)],
                         jnp.where(tables.eos[last], 0, 1))
    body_len = jnp.maximum(step_len - 1 - split, 0)
    j = jnp.arange(m + k, dtype=jnp.int32)[None, :]
    body = jnp.take_along_axis(step_tokens, jnp.clip(j, 0, m - 1), axis=1)
    tail_at = jnp.take_along_axis(tail, jnp.clip(j - body_len[:, None], 0, k - 1), axis=1)
    end = body_len + tail_len
    view = jnp.where(j < body_len[:, None], body,
                     jnp.where(j < end[:, None], tail_at, tables.delimiter))
    width = jnp.where(step_len > 0, end + 1, 0)
    view = jnp.where(j < width[:, None], view, 0)
    return view, width


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PRMTextView:
    """The official protocol on the host: `encode(ids, lengths, width) -> (view, widths, overflow)` (numpy, one row
    per step; see rsd_jax.tokenizer.StepTextEncoder) run by `jax.pure_callback`. Both fields are static (hashable):
    the same encoder object reuses the compiled loop."""

    encode: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = dataclasses.field(
        metadata=dict(static=True))
    width: int = dataclasses.field(metadata=dict(static=True))  # W: most ids one step takes in the view

    growth_per_step = 1  # the delimiter; a re-encoding longer than the generated step is caught as an overflow

    @staticmethod
    def width_for(step_tokens: int) -> int:
        """Most ids one step of at most `step_tokens` tokens may take in the view: the step, its delimiter, and room
        for a re-encoding that comes out a little longer than the generated ids (longer still is an overflow)."""
        return step_tokens + 1 + max(8, step_tokens // 8)

    def __call__(self, step_tokens: jax.Array, step_len: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        def packed(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            view, widths, overflow = self.encode(np.asarray(tokens), np.asarray(lengths), self.width)
            return np.concatenate([view, widths[:, None], overflow[:, None].astype(np.int32)], axis=1)

        def on_host(tokens: jax.Array, lengths: jax.Array) -> jax.Array:
            # one int32 [B, W + 2] result (ids, width, overflow): a single host transfer, which every backend
            # lowers (a tuple of results of different ranks does not lower for TPU under a mesh)
            shape = jax.ShapeDtypeStruct((tokens.shape[0], self.width + 2), jnp.int32)
            return jax.pure_callback(packed, shape, tokens, lengths)

        mesh = jax.sharding.get_abstract_mesh()
        if not has_data_axis(mesh):
            out = on_host(step_tokens, step_len)
        else:  # each data shard re-encodes its own rows, on its own host
            out = jax.shard_map(on_host, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS)), out_specs=P(DATA_AXIS))(
                step_tokens, step_len)
        return out[:, :self.width], out[:, self.width], out[:, self.width + 1].astype(bool)

PRMView = PRMTables | PRMTextView


def fit_view(prm_view: PRMView, step_tokens: jax.Array, step_len: jax.Array, *, prm_length: jax.Array,
              capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The PRM's view of steps (ids [B, W], width [B]) cut to what fits the PRM's buffer after prm_length [B];
    overflow [B] marks rows whose view did not fit (they end with an error instead of a wrong reward)."""
    view, width, overflow = prm_view(step_tokens, step_len)
    room = capacity - prm_length
    return view, jnp.minimum(width, jnp.maximum(room, 0)), overflow | (width > room)
