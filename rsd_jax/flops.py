"""Analytic forward FLOPs of a decoder, per token (multiply-add = 2 FLOPs).

For one token at context length c (keys it attends to, itself included):
    matmuls   = its architecture's formula (rsd_jax.models.architectures); the dense ones:
                2 · L · (E·H·D + 2·E·K·D + H·D·E + 3·E·F)
    attention = 4 · L · H · D · c            (q·kᵀ and p·v)
    head      = 2 · E · V  (LM head)  or  2 · E  (value head)
These functions accept Python numbers or jnp arrays, so the decoding loop counts work with them as arrays. The
per-token counts are Python floats: a real model's counts exceed int32 (a Qwen2.5-Math-7B token is 1.3e10 FLOPs),
and JAX refuses a Python int above 2^31 - 1 inside traced arithmetic.
"""

from __future__ import annotations

from rsd_jax.models import architectures
from rsd_jax.models.config import ModelConfig


def matmul_flops_per_token(cfg: ModelConfig) -> float:
    """Projection and MLP FLOPs of one token through all layers (no attention scores, no head): the formula of the
    config's architecture (`Architecture.matmul_flops`)."""
    return architectures.of(cfg).matmul_flops(cfg)


def attention_flops_per_key(cfg: ModelConfig) -> float:
    """Attention-score FLOPs of one token per attended key, all layers."""
    return float(4 * cfg.num_layers * cfg.num_heads * cfg.head_dim)


def head_flops_per_token(cfg: ModelConfig) -> float:
    return float(2 * cfg.hidden_size * (cfg.vocab_size if cfg.has_lm_head else 1))


def reward_head_flops(cfg: ModelConfig) -> float:
    """FLOPs of reading one reward: the value head (2 · E) when the model has one, else the LM head."""
    return float(2 * cfg.hidden_size) if cfg.has_value_head else head_flops_per_token(cfg)


def flops_per_token(cfg: ModelConfig, context, with_head: bool = True):
    """FLOPs of one token that attends to `context` keys."""
    base = matmul_flops_per_token(cfg) + (head_flops_per_token(cfg) if with_head else 0)
    return base + attention_flops_per_key(cfg) * context


def span_flops(cfg: ModelConfig, start, n, with_head: bool = True):
    """Useful FLOPs of n tokens at positions start .. start+n-1 (token at position p attends to p+1 keys).

    Closed form: n·base + a·(n·start + n·(n+1)/2). Works elementwise on arrays of starts and counts.
    """
    base = matmul_flops_per_token(cfg) + (head_flops_per_token(cfg) if with_head else 0)
    keys = n * start + n * (n + 1) / 2
    return n * base + attention_flops_per_key(cfg) * keys


def executed_flops(cfg: ModelConfig, batch: int, chunk: int, capacity: int, with_head: bool = True):
    """FLOPs a forward over a [batch, chunk] block with a cache of `capacity` slots actually executes
    (every row and padded token, attention over the whole cache)."""
    return batch * chunk * flops_per_token(cfg, capacity, with_head)
