"""A batch of prompts laid out for the jitted loops."""

from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Prompts:
    """A batch of prompts laid out in fixed buffers (right-padded with zeros)."""

    tokens: jax.Array  # [B, T] prompt in [0, length), room for the response after it
    length: jax.Array  # [B] int32 prompt lengths (>= 1; 0 marks a padding row, done from the start)
    prm_tokens: jax.Array  # [B, Tp] the PRM's prompt (BOS + question + "\n"), room for its view of the steps
    prm_length: jax.Array  # [B] int32
