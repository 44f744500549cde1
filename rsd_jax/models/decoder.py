"""The Qwen2 / Llama decoder in flax.nnx: RMSNorm, RoPE, grouped-query attention, SwiGLU, LM or PRM head.

Attribute names follow the HF checkpoints (`layers[i].self_attn.q_proj`, `mlp.gate_proj`, `v_head.summary`,
...) so that loading weights is a name-for-name copy (Linear weights transposed).

Shapes: B batch, T tokens in the chunk, S cache capacity, H query heads, K kv heads, G = H / K, D head dim,
E hidden size, V vocabulary.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rsd_jax.cache import KVCache, attention_mask, chunk_slots
from rsd_jax.models.config import ModelConfig, RopeConfig

_MASKED = -1e30  # finite: a fully masked row gives a uniform softmax, never NaN


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, dtype):
        self.weight = nnx.Param(jnp.ones((dim,), dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...] * normed.astype(x.dtype)


def rope_inverse_frequencies(rope: RopeConfig, head_dim: int) -> jax.Array:
    """[D/2] float32 inverse frequencies, with Llama-3 or linear scaling when configured."""
    inv = 1.0 / (rope.theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if rope.kind == "linear":
        return inv / rope.factor
    if rope.kind == "llama3":
        low_wavelen = rope.original_max_position / rope.low_freq_factor
        high_wavelen = rope.original_max_position / rope.high_freq_factor
        wavelen = 2 * jnp.pi / inv
        smooth = (rope.original_max_position / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor)
        mid = (1 - smooth) * inv / rope.factor + smooth * inv
        scaled = jnp.where(wavelen > low_wavelen, inv / rope.factor, inv)
        is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return jnp.where(is_mid, mid, scaled)
    return inv


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotates x [B, T, N, D] at positions [B, T] (HF "rotate_half" convention)."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _linear(n_in: int, n_out: int, bias: bool, cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=bias, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_dtype,
                      kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        e, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = _linear(e, cfg.num_heads * d, cfg.qkv_bias, cfg, rngs)
        self.k_proj = _linear(e, cfg.num_kv_heads * d, cfg.qkv_bias, cfg, rngs)
        self.v_proj = _linear(e, cfg.num_kv_heads * d, cfg.qkv_bias, cfg, rngs)
        self.o_proj = _linear(cfg.num_heads * d, e, cfg.out_bias, cfg, rngs)
        self.cfg = cfg

    def __call__(self, x, positions, inv_freq, mask, slots, cache: KVCache, layer: int):
        """x [B, T, E], positions/slots [B, T], mask [B, T, S] -> ([B, T, E], cache with this layer written)."""
        cfg = self.cfg
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = self.k_proj(x).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        v = self.v_proj(x).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        cache = cache.write_layer(layer, slots, k, v)
        keys, values = cache.k[layer], cache.v[layer]  # [B, K, S, D]
        groups = cfg.num_heads // cfg.num_kv_heads
        q = q.reshape(b, t, cfg.num_kv_heads, groups, cfg.head_dim)
        scores = jnp.einsum("btkgd,bksd->bkgts", q, keys.astype(q.dtype), preferred_element_type=jnp.float32)
        scores = scores * (cfg.head_dim ** -0.5)
        scores = jnp.where(mask[:, None, None], scores, _MASKED)
        probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
        out = jnp.einsum("bkgts,bksd->btkgd", probs, values.astype(x.dtype))
        return self.o_proj(out.reshape(b, t, cfg.num_heads * cfg.head_dim)), cache


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        e, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _linear(e, f, cfg.mlp_bias, cfg, rngs)
        self.up_proj = _linear(e, f, cfg.mlp_bias, cfg, rngs)
        self.down_proj = _linear(f, e, cfg.mlp_bias, cfg, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.jnp_dtype)
        self.self_attn = Attention(cfg, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.jnp_dtype)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, positions, inv_freq, mask, slots, cache, layer):
        attn, cache = self.self_attn(self.input_layernorm(x), positions, inv_freq, mask, slots, cache, layer)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class ValueHead(nnx.Module):
    """Skywork-o1-Open-PRM value head: `v_head.summary`, Linear(E, 1) with bias."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.summary = _linear(cfg.hidden_size, 1, True, cfg, rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.summary(hidden)[..., 0].astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class DecoderOutput:
    hidden: jax.Array  # [B, T, E] last hidden states (after the final norm)
    cache: KVCache


class Decoder(nnx.Module):
    """Backbone plus the configured head. Build it with `nnx.eval_shape` when weights come from a file."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.jnp_dtype,
                                      param_dtype=cfg.jnp_dtype,
                                      embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.jnp_dtype)
        if cfg.has_lm_head and not cfg.tie_word_embeddings:
            self.lm_head = _linear(cfg.hidden_size, cfg.vocab_size, False, cfg, rngs)
        if cfg.head == "value":
            self.v_head = ValueHead(cfg, rngs)

    def backbone(self, tokens: jax.Array, starts: jax.Array, cache: KVCache,
                 n_valid: jax.Array | None = None) -> DecoderOutput:
        """Runs tokens [B, T] written at per-row slots starts[b] .. starts[b] + n_valid[b] - 1.

        Tokens at t >= n_valid[b] are padding: not written to the cache, their outputs are meaningless.
        The returned cache has lengths = starts + n_valid.
        """
        b, t = tokens.shape
        starts = starts.astype(jnp.int32)
        n_valid = jnp.full((b,), t, jnp.int32) if n_valid is None else n_valid.astype(jnp.int32)
        positions = starts[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
        slots = chunk_slots(starts, n_valid, t, cache.capacity)
        mask = attention_mask(starts, n_valid, t, cache.capacity)
        inv_freq = rope_inverse_frequencies(self.cfg.rope, self.cfg.head_dim)
        x = self.embed_tokens(tokens)
        for i, layer in enumerate(self.layers):
            with jax.named_scope(f"layer_{i}"):
                x, cache = layer(x, positions, inv_freq, mask, slots, cache, i)
        return DecoderOutput(hidden=self.norm(x), cache=cache.with_lengths(starts + n_valid))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """[..., E] -> [..., V] float32."""
        if self.cfg.tie_word_embeddings:
            out = self.embed_tokens.attend(hidden)
        else:
            out = self.lm_head(hidden)
        return out.astype(jnp.float32)

    def rewards(self, hidden: jax.Array) -> jax.Array:
        """[..., E] -> [...] step reward in [0, 1] (PRM heads only)."""
        if self.cfg.head == "value":
            return jax.nn.sigmoid(self.v_head(hidden))
        if self.cfg.head == "token_logit":
            logits = self.logits(hidden)
            return jax.nn.sigmoid(logits[..., self.cfg.good_token_id] - logits[..., self.cfg.bad_token_id])
        raise ValueError("rewards() needs a PRM head ('value' or 'token_logit')")
