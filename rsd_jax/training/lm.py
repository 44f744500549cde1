"""Language-model training data and loss for the embedded draft and target.

A sequence is BOS + prompt + solution + EOS; the loss is next-token cross-entropy on the solution and EOS
only (the prompt is context). Batches are drawn by (seed, step) from a fixed problem list, so resumed runs
see the same data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsd_jax.data import arith
from rsd_jax.models.model import Model, full_forward
from rsd_jax.training.loop import trim_padding

if TYPE_CHECKING:
    from rsd_jax.tokenizer import Tokenizer


def encode_examples(tok: Tokenizer, problems: list[arith.Problem], length: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens [N, length] int32 and loss mask [N, length] (1 where the token is a target to predict)."""
    tokens = np.zeros((len(problems), length), np.int32)
    mask = np.zeros((len(problems), length), np.float32)
    for i, p in enumerate(problems):
        prompt = [tok.bos_id] + tok.encode(arith.format_prompt(p))
        seq = prompt + tok.encode(arith.solution_text(p)) + [tok.eos_ids[0]]
        if len(seq) > length:
            raise ValueError(f"problem {p.uid} needs {len(seq)} tokens > {length}")
        tokens[i, :len(seq)] = seq
        mask[i, len(prompt):len(seq)] = 1.0
    return tokens, mask


def next_token_loss(logits: jax.Array, tokens: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy: logits [B, T, V] at position t predict tokens[:, t + 1], weighted by
    weights [B, T] of the predicted token (1 where it is a target)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])
    return jnp.sum(ce * weights[:, 1:]) / jnp.maximum(jnp.sum(weights[:, 1:]), 1.0)


def lm_loss(model: Model, batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    tokens, mask = batch
    logits, _ = full_forward(model, tokens)
    loss = next_token_loss(logits, tokens, mask)
    weights = mask[:, 1:]
    correct = (jnp.argmax(logits[:, :-1], -1) == tokens[:, 1:]) * weights
    return loss, {"token_acc": jnp.sum(correct) / jnp.maximum(jnp.sum(weights), 1.0)}


def batch_sampler(tokens: np.ndarray, mask: np.ndarray, batch_size: int, seed: int):
    """batch_at(step): a batch drawn by (seed, step), cut to the width its longest row needs."""
    def batch_at(step: int):
        idx = np.random.default_rng([seed, step]).integers(0, len(tokens), batch_size)
        return trim_padding((tokens[idx], mask[idx]))

    return batch_at
