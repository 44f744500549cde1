"""Token sampling strategies: greedy, temperature, top-k and top-p (nucleus), with explicit PRNG keys.

`Sampling` is frozen and hashable: it is part of the static decoding spec.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.errors import ConfigError

_MASKED = -1e30


@dataclasses.dataclass(frozen=True)
class Sampling:
    """temperature 0 means greedy (argmax); top_k 0 and top_p 1.0 switch those filters off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"sampling.top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"sampling.top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filtered_logits(sampling: Sampling, logits: jax.Array) -> jax.Array:
    """Temperature-scaled logits [B, V] with tokens outside top-k / top-p set to a large negative value."""
    logits = logits.astype(jnp.float32) / sampling.temperature
    if sampling.top_k:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, _MASKED, logits)
    if sampling.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        kept = mass_before < sampling.top_p  # always keeps the most likely token
        cutoff = jnp.min(jnp.where(kept, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, _MASKED, logits)
    return logits


def sample(sampling: Sampling, logits: jax.Array, key: jax.Array) -> jax.Array:
    """Draws one token per row from logits [B, V]: int32 [B]."""
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filtered_logits(sampling, logits), axis=-1).astype(jnp.int32)


def sample_rows(sampling: Sampling, logits: jax.Array, keys: jax.Array) -> jax.Array:
    """Draws one token per row from logits [B, V], row b with its own key keys[b]: int32 [B]. A row's draw depends
    only on its logits and its key, not on the other rows of the batch."""
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    draw = jax.vmap(lambda key, row: jax.random.categorical(key, row))
    return draw(keys, filtered_logits(sampling, logits)).astype(jnp.int32)


def token_probs(sampling: Sampling, logits: jax.Array) -> jax.Array:
    """The distribution `sample` draws from, [B, V] (one-hot for greedy): used by speculative decoding."""
    if sampling.greedy:
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(filtered_logits(sampling, logits), axis=-1)
