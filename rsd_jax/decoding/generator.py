"""The step generator: catch a model's cache up on committed tokens, then write one step per live row.

One generator serves the draft, the target and single-model decoding. Cache invariant between calls: a
model's cache holds only committed tokens, and all of them but (possibly) the last; writing a step first
(re-)feeds that last token, so a row that just committed a step costs no prefill, and a model that is
behind (the lazy target, or the draft after a rejection) prefills what it missed in chunks of `chunk`.

Shapes: B rows, T committed-token buffer, M = max tokens in one step, V vocabulary, E hidden size.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding import passes
from rsd_jax.decoding.sampling import Sampling, sample, token_probs
from rsd_jax.decoding.usage import Usage
from rsd_jax.errors import ConfigError
from rsd_jax.models.model import Model


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TokenTables:
    """Host-precomputed token sets as dense lookups over the tokenizer's vocabulary (traced arrays, not static).

    Their length V is the vocabulary the loops sample from: a model's embedding may have more rows than its
    tokenizer has tokens (Qwen2.5-Math-1.5B: 151936 rows, 7B: 152064, for 151665 tokens); those rows are never drawn.
    """

    stop: jax.Array  # [V] bool: the token's text contains the step delimiter
    eos: jax.Array  # [V] bool
    # the delimiter written across two tokens (rsd_jax.tokenizer.SplitDelimiterTable): [K, V] bool, K split points
    split_ends: jax.Array | None = None  # the token's text ends with the delimiter's first k + 1 characters
    split_starts: jax.Array | None = None  # the token's text starts with the rest of the delimiter
    #: static: a step also ends where its last two tokens write the delimiter (the official code's stop string)
    split_stop: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def vocab_size(self) -> int:
        return self.eos.shape[0]

    def with_split_stop(self, on: bool) -> "TokenTables":
        """These tables with the two-token delimiter ending steps (on) or not; on needs the split tables."""
        if on and (self.split_ends is None or self.split_starts is None):
            raise ConfigError("decoding.stop_on_split_delimiter needs the tokenizer's split-delimiter tables "
                              "(TokenTables.split_ends / split_starts; Engine.create builds them)")
        return dataclasses.replace(self, split_stop=on)

    def without_steps(self) -> "TokenTables":
        """No step ends (whole responses): nothing is a step delimiter, EOS still ends a row."""
        return dataclasses.replace(self, stop=jnp.zeros_like(self.stop), split_stop=False)

    def without_ends(self) -> "TokenTables":
        """Neither steps nor EOS end anything (speculative decoding's fixed-length proposals)."""
        return dataclasses.replace(self.without_steps(), eos=jnp.zeros_like(self.eos))


def step_ends(tables: TokenTables, previous: jax.Array, token: jax.Array, *, first: jax.Array) -> jax.Array:
    """The one end-of-step test [...] bool: `token` ends a step when its text contains the delimiter, or (with
    tables.split_stop) when `previous` then `token` write it across their boundary ("\\n" then "\\n").

    previous, token, first: int32 ids and bool of one shape [...]; first marks a step's first token, which has no
    previous token in its step (the official stop string only reads the step's own text)."""
    ends = tables.stop[token]
    if not tables.split_stop:
        return ends
    split = jnp.any(tables.split_ends[:, previous] & tables.split_starts[:, token], axis=0)
    return ends | (split & ~first)


def token_logits(model: Model, hidden: jax.Array, tables: TokenTables) -> jax.Array:
    """The LM head's logits [..., V] over the tokenizer's vocabulary (float32) for hidden states [..., E]."""
    return model.logits(hidden)[..., :tables.vocab_size]


def catch_up(model: Model, cache: KVCache, *, view: jax.Array, upto: jax.Array, active: jax.Array, chunk: int,
             usage: Usage) -> tuple[KVCache, jax.Array, Usage]:
    """Feeds view[b, cache.lengths[b] : upto[b]] into the cache for active rows, `chunk` at a time.

    view [B, T] tokens; upto [B]; active [B] bool. Returns the cache (lengths = upto on active rows), the last
    hidden state of each row's final fed token [B, E] (zeros if none), the usage.
    """
    return passes.feed(model, cache, view=view, upto=upto, select=active, chunk=chunk, usage=usage)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Step:
    """One step written by one model for each row."""

    tokens: jax.Array  # [B, M] int32, valid up to `length`
    length: jax.Array  # [B] int32 (0 for rows that did not write)
    ended_eos: jax.Array  # [B] bool
    ended_stop: jax.Array  # [B] bool: ended where its step ends (`step_ends`)
    nonfinite: jax.Array  # [B] bool: some logits were NaN or inf
    cache: KVCache
    usage: Usage
    probs: jax.Array | None = None  # [B, M, V] the distribution each token was drawn from (record_probs)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Writing:
    """`write_step`'s loop state: one token per iteration for every live row."""

    current: jax.Array  # [B] int32 the token fed next (the last one written, or the last committed): the previous
    #                     token of the one drawn next
    live: jax.Array  # [B] bool rows still writing
    written: jax.Array  # [B] int32 tokens written so far
    out: jax.Array  # [B, M] int32 the step's tokens
    eos: jax.Array  # [B] bool ended at EOS
    stop: jax.Array  # [B] bool ended where its step ends (`step_ends`)
    nonfinite: jax.Array  # [B] bool some logits were NaN or inf
    cache: KVCache
    key: jax.Array
    usage: Usage
    probs: jax.Array | None  # [B, M, V] with record_probs, else None


@dataclasses.dataclass(frozen=True)
class Seat:
    """One model's side of a pass: the model, its KV cache and its usage so far."""

    model: Model
    cache: KVCache
    usage: Usage


@dataclasses.dataclass(frozen=True)
class Rows:
    """The rows that write, from where: committed tokens [B, T], their length [B] (>= 1), the rows writing [B] bool,
    the tokens each may still write [B] int32."""

    tokens: jax.Array
    length: jax.Array
    active: jax.Array
    room: jax.Array


@dataclasses.dataclass(frozen=True)
class StepRules:
    """How a step is written (static but the tables): where steps end (tables), sampling, the cap on a step's
    tokens, the tokens per forward when a cache catches up."""

    tables: TokenTables
    sampling: Sampling
    max_step_tokens: int
    chunk: int


def write_step(seat: Seat, at: Rows, *, key: jax.Array, rules: StepRules, record_probs: bool = False) -> Step:
    """Writes at most min(room, max_step_tokens) tokens per active row, stopping a row where its step ends
    (`step_ends`), at EOS, or when its room is spent (inner `lax.while_loop`, one token per iteration).
    record_probs: also return the distribution of every drawn token (speculative decoding needs q).
    """
    model, tokens, length, active = seat.model, at.tokens, at.length, at.active
    tables, sampling, max_step_tokens = rules.tables, rules.sampling, rules.max_step_tokens
    batch = tokens.shape[0]
    rows = jnp.arange(batch)
    cache, _, usage = catch_up(model, seat.cache, view=tokens, upto=length - 1, active=active, chunk=rules.chunk,
                               usage=seat.usage)
    # a cache that already holds the last committed token (right after a rollback) re-feeds it
    cache = cache.with_lengths(jnp.where(active, length - 1, cache.lengths))
    room = jnp.minimum(at.room, max_step_tokens)
    no = jnp.zeros((batch,), bool)
    init = Writing(current=last_committed(tokens, length), live=active & (room > 0), written=jnp.zeros((batch,), jnp.int32),
                   out=jnp.zeros((batch, max_step_tokens), jnp.int32), eos=no, stop=no, nonfinite=no, cache=cache,
                   key=key, usage=usage,
                   probs=jnp.zeros((batch, max_step_tokens, tables.vocab_size), jnp.float32) if record_probs else None)

    def body(s: Writing) -> Writing:
        live, start = s.live, s.cache.lengths
        out = model.backbone(s.current[:, None], start, s.cache, live.astype(jnp.int32))
        logits = token_logits(model, out.hidden[:, 0], tables)
        key, sub = jax.random.split(s.key)
        token = sample(sampling, logits, sub)
        slot = jnp.where(live, s.written, max_step_tokens)
        written = s.written + live
        is_eos = tables.eos[token] & live
        is_stop = step_ends(tables, s.current, token, first=s.written == 0) & live
        finished = is_eos | is_stop | (written >= room)
        probs = None if s.probs is None else s.probs.at[rows, slot].set(token_probs(sampling, logits), mode="drop")
        return Writing(
            current=jnp.where(live, token, s.current), live=live & ~finished, written=written,
            out=s.out.at[rows, slot].set(token, mode="drop"), eos=s.eos | is_eos, stop=s.stop | is_stop,
            nonfinite=s.nonfinite | (live & ~jnp.all(jnp.isfinite(logits), axis=-1)), cache=out.cache, key=key,
            usage=s.usage.add_forward(model.config, start, live.astype(jnp.int32), 1, s.cache.capacity, 1),
            probs=probs)

    s = jax.lax.while_loop(lambda s: jnp.any(s.live), body, init)
    return Step(tokens=s.out, length=s.written, ended_eos=s.eos, ended_stop=s.stop, nonfinite=s.nonfinite,
                cache=s.cache, usage=s.usage, probs=s.probs)


def last_committed(tokens: jax.Array, length: jax.Array) -> jax.Array:
    """Each row's last committed token [B] of tokens [B, T] (length [B] >= 1)."""
    return jnp.take_along_axis(tokens, jnp.maximum(length - 1, 0)[:, None], axis=1)[:, 0]


def commit(tokens: jax.Array, length: jax.Array, step_tokens: jax.Array, step_len: jax.Array) -> jax.Array:
    """Writes each row's step [B, M] (first step_len[b] tokens) into tokens [B, T] at length[b]."""
    m = step_tokens.shape[1]
    offsets = jnp.arange(m, dtype=jnp.int32)[None, :]
    slots = jnp.where(offsets < step_len[:, None], length[:, None] + offsets, tokens.shape[1])
    return tokens.at[jnp.arange(tokens.shape[0])[:, None], slots].set(step_tokens, mode="drop")
