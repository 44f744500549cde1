"""Qwen3 (`Qwen3ForCausalLM`): the Qwen2 / Llama decoder with an RMSNorm over each head's queries and keys.

Per layer, before RoPE: q [B, T, H, D] <- RMSNorm_D(q) · q_norm.weight [D], k [B, T, K, D] <- RMSNorm_D(k) ·
k_norm.weight [D] (one weight per head dimension, shared by the heads; transformers' `self_attn.q_norm`,
`self_attn.k_norm`). No q/k/v bias unless `attention_bias`; head_dim is config.json's own (it need not be
hidden_size / heads). Everything else (cache, attention, MLP, heads) is rsd_jax.models.decoder's.
"""

from __future__ import annotations

import jax
from flax import nnx

from rsd_jax.models.config import ModelConfig
from rsd_jax.models.decoder import Attention, Block, Decoder, RMSNorm


class QKNormAttention(Attention):
    """Grouped-query attention whose queries and keys are RMS-normalised per head before RoPE."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        super().__init__(cfg, rngs)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, cfg.jnp_dtype)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, cfg.jnp_dtype)

    def normalize(self, q: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q [B, T, H, D], k [B, T, K, D] -> the same, each head's vector RMS-normalised over D."""
        return self.q_norm(q), self.k_norm(k)


class Qwen3Block(Block):
    attention = QKNormAttention


class Qwen3Decoder(Decoder):
    """The decoder of `Qwen3ForCausalLM` (and of a Qwen3 LM merged with a value head)."""

    block = Qwen3Block
