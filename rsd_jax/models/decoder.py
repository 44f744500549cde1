"""The Qwen2 / Llama decoder in flax.nnx: RMSNorm, RoPE, grouped-query attention, SwiGLU, LM or PRM head.

The layers are one `Block` whose parameters are stacked over a leading layer axis, run by `jax.lax.scan`, so a
compiled forward holds one layer's body whatever the depth (compile time and temporaries do not grow with it).
On a CPU, XLA copies each layer's slice of the stacked weights out before every matrix product (the dot cannot read a
slice where it lies), so a decoded token there would read the layer weights three times: given `layer_copies` (one
array per layer and parameter, `unstack_layers`), the layers run as a plain loop over those, each read in place.
Attribute names follow the HF checkpoints (`layers.self_attn.q_proj`, `mlp.gate_proj`, `v_head.summary`, ...):
layer i of an HF checkpoint is row i of the stacked arrays (Linear weights transposed).

Every parameter declares the logical axes of its dimensions in its `axes` metadata ("layers", "vocab", "heads",
"kv_heads", "mlp" or None); `rsd_jax.sharding` derives every sharding from them.

Shapes: B batch, T tokens in the chunk, S cache capacity, H query heads, K kv heads, D head dim,
E hidden size, V vocabulary, L layers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rsd_jax.cache import KVCache, chunk_slots
from rsd_jax.models.attention import Visibility, attend
from rsd_jax.models.config import ModelConfig, RopeConfig
from rsd_jax.models.quantize import QuantizedEmbed, QuantizedLinear


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, dtype):
        self.weight = nnx.Param(jnp.ones((dim,), dtype), axes=(None,))
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


def _linear(n_in: int, n_out: int, bias: bool, cfg: ModelConfig, rngs: nnx.Rngs,
            axes: tuple[str | None, str | None], *, quantize: str | None = None) -> nnx.Linear | QuantizedLinear:
    """A Linear whose kernel [n_in, n_out] has logical axes `axes` (its bias: the output axis); quantized as
    `quantize` says (default: the model's `quantize`; rsd_jax.models.quantize)."""
    mode = cfg.quantize if quantize is None else quantize
    if mode != "none":
        return QuantizedLinear(n_in, n_out, bias=bias, mode=mode, dtype=cfg.jnp_dtype, rngs=rngs, axes=axes)
    return nnx.Linear(n_in, n_out, use_bias=bias, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_dtype,
                      kernel_init=nnx.initializers.normal(0.02), rngs=rngs,
                      kernel_metadata={"axes": axes}, bias_metadata={"axes": axes[1:]})


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        e, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = _linear(e, cfg.num_heads * d, cfg.qkv_bias, cfg, rngs, (None, "heads"))
        self.k_proj = _linear(e, cfg.num_kv_heads * d, cfg.qkv_bias, cfg, rngs, (None, "kv_heads"))
        self.v_proj = _linear(e, cfg.num_kv_heads * d, cfg.qkv_bias, cfg, rngs, (None, "kv_heads"))
        self.o_proj = _linear(cfg.num_heads * d, e, cfg.out_bias, cfg, rngs, ("heads", None))
        self.cfg = cfg

    def __call__(self, x, positions, inv_freq, slots, *, cache: KVCache, layer: jax.Array, visible: Visibility,
                 rows: jax.Array | None = None):
        """x [B, T, E], positions/slots [B, T] -> ([B, T, E], cache with layer `layer` written); with rows [G],
        x holds G rows of the cache's batch."""
        cfg = self.cfg
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = self.k_proj(x).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        v = self.v_proj(x).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        q, k = self.normalize(q, k)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        cache = cache.write_layer(layer, slots, k, v, rows).on_current_mesh()  # pinned: the loop keeps its layout
        out = attend(q, cache.k, cache.v, layer, visible, rows)
        return self.o_proj(out.reshape(b, t, cfg.num_heads * cfg.head_dim)), cache

    def normalize(self, q: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q [B, T, H, D], k [B, T, K, D] before RoPE: unchanged here (an architecture with q/k norms overrides it)."""
        return q, k


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        e, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _linear(e, f, cfg.mlp_bias, cfg, rngs, (None, "mlp"))
        self.up_proj = _linear(e, f, cfg.mlp_bias, cfg, rngs, (None, "mlp"))
        self.down_proj = _linear(f, e, cfg.mlp_bias, cfg, rngs, ("mlp", None))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    attention = Attention  # the attention module of its architecture (a subclass overrides it)

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.jnp_dtype)
        self.self_attn = self.attention(cfg, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.jnp_dtype)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, positions, inv_freq, slots, *, cache: KVCache, layer: jax.Array, visible: Visibility,
                 rows: jax.Array | None = None):
        attn, cache = self.self_attn(self.input_layernorm(x), positions, inv_freq, slots, cache=cache, layer=layer,
                                     visible=visible, rows=rows)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), cache


def stack_layers(blocks: list[Block]) -> Block:
    """One Block whose every parameter is the layers' parameters stacked on a new leading "layers" axis
    (built from per-layer Blocks, so a model draws the same random numbers as a layer-by-layer one)."""
    graphdef, _ = nnx.split(blocks[0])

    def stack(*variables: nnx.Variable) -> nnx.Variable:
        first = variables[0]
        return first.replace(jnp.stack([v[...] for v in variables]), axes=("layers", *first.get_metadata()["axes"]))

    states = [nnx.state(block) for block in blocks]
    return nnx.merge(graphdef, jax.tree.map(stack, *states, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def unstack_layers(layers: Block) -> tuple[dict, ...]:
    """The stacked layers' parameters as L per-layer nested dicts of arrays (`nnx.to_pure_dict`'s form, each leaf a
    copy of one row of the stack): what `Decoder.backbone` takes as `layer_copies`. Plain dicts, not nnx.State: a
    jitted call flattens its arguments on every call, and a State flattens in Python (an engine of the embedded
    models with copies held as States took 243 us a flatten against 56 us without copies)."""
    _, stacked = nnx.split(layers)
    depth = jax.tree.leaves(stacked)[0].shape[0]
    return tuple(nnx.to_pure_dict(jax.tree.map(lambda a: a[i], stacked)) for i in range(depth))


def layer_state(stacked: nnx.State, copy: dict) -> nnx.State:
    """One layer's state for `nnx.merge` from a per-layer copy (`unstack_layers`): a slice of the stack's state
    (dead once replaced: XLA drops it) with the copy's arrays put in."""
    state = jax.tree.map(lambda a: a[0], stacked)
    nnx.replace_by_pure_dict(state, copy)
    return state


class ValueHead(nnx.Module):
    """Skywork-o1-Open-PRM value head: `v_head.summary`, Linear(E, 1) with bias."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.summary = _linear(cfg.hidden_size, 1, True, cfg, rngs, (None, None), quantize="none")

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.summary(hidden)[..., 0].astype(jnp.float32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerInput:
    """What the scan over the stacked layers carries from one layer to the next."""

    x: jax.Array  # [B, T, E] the hidden states
    cache: KVCache
    index: jax.Array  # [] int32 the layer (its slice of the stacked cache)


@dataclasses.dataclass(frozen=True)
class DecoderOutput:
    hidden: jax.Array  # [B, T, E] last hidden states (after the final norm)
    cache: KVCache


class Decoder(nnx.Module):
    """Backbone plus the configured head. Build it with `nnx.eval_shape` when weights come from a file."""

    block = Block  # the layer of its architecture (a subclass overrides it; rsd_jax.models.architectures)

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, *, shapes_only: bool = False):
        """shapes_only (under `nnx.eval_shape`): one layer is built and its shapes repeated down the stack, the same
        shapes as L layers' without tracing L layers' initialisers (an 80-layer model took 43 s to trace that way:
        each traced initialiser costs more the longer the trace already is)."""
        self.cfg = cfg
        if cfg.quantize != "none":  # embeddings and LM head: int8 in both modes (rsd_jax.models.quantize)
            self.embed_tokens = QuantizedEmbed(cfg.vocab_size, cfg.hidden_size, cfg.jnp_dtype, rngs)
        else:
            self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.jnp_dtype,
                                          param_dtype=cfg.jnp_dtype, embedding_init=nnx.initializers.normal(0.02),
                                          rngs=rngs, embedding_metadata={"axes": ("vocab", None)})
        built = [self.block(cfg, rngs) for _ in range(1 if shapes_only else cfg.num_layers)]
        self.layers = stack_layers(built * (cfg.num_layers // len(built)))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.jnp_dtype)
        if cfg.has_lm_head and not cfg.tie_word_embeddings:
            self.lm_head = _linear(cfg.hidden_size, cfg.vocab_size, False, cfg, rngs, (None, "vocab"),
                                   quantize="none" if cfg.quantize == "none" else "int8")
        if cfg.has_value_head:
            self.v_head = ValueHead(cfg, rngs)

    def backbone(self, tokens: jax.Array, starts: jax.Array, cache: KVCache,
                 n_valid: jax.Array | None = None, all_blocks: bool = False,
                 rows: jax.Array | None = None, *, layer_copies: tuple | None = None) -> DecoderOutput:
        """Runs tokens [B, T] written at per-row slots starts[b] .. starts[b] + n_valid[b] - 1.

        Tokens at t >= n_valid[b] are padding: not written to the cache, their outputs are meaningless.
        The returned cache has lengths = starts + n_valid. all_blocks: attend over every key block of the cache
        (a static loop, differentiable) instead of those up to the longest row. rows [G] (distinct): tokens, starts
        and n_valid hold G rows of the cache's batch; only those rows are computed, written and read (a row with
        n_valid 0 is left as it was: give it starts = its length). layer_copies: `unstack_layers(self.layers)`, the
        same values as the stacked layers, run as a loop over separate arrays instead of a scan over the stack.
        """
        b, t = tokens.shape
        starts = starts.astype(jnp.int32)
        n_valid = jnp.full((b,), t, jnp.int32) if n_valid is None else n_valid.astype(jnp.int32)
        visible = Visibility.of_chunk(starts, n_valid, t, cache.capacity, all_blocks)
        slots = chunk_slots(starts, n_valid, t, cache.capacity)
        inv_freq = rope_inverse_frequencies(self.cfg.rope, self.cfg.head_dim)
        x = self.embed_tokens(tokens)
        block_def, block_params = nnx.split(self.layers)

        def layer(carry: LayerInput, params) -> tuple[LayerInput, None]:
            x, cache = nnx.merge(block_def, params)(carry.x, visible.query_slot, inv_freq, slots, cache=carry.cache,
                                                    layer=carry.index, visible=visible, rows=rows)
            return LayerInput(x=x, cache=cache, index=carry.index + 1), None

        final = LayerInput(x=x, cache=cache, index=jnp.int32(0))
        with jax.named_scope("layers"):
            if layer_copies is None:
                final, _ = jax.lax.scan(layer, final, block_params)
            else:
                for copy in layer_copies:
                    final, _ = layer(final, layer_state(block_params, copy))
            x, cache = final.x, final.cache
        return DecoderOutput(hidden=self.norm(x), cache=cache.set_lengths(rows, starts + n_valid))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """[..., E] -> [..., V] float32."""
        if self.cfg.tie_word_embeddings and isinstance(self.embed_tokens, QuantizedEmbed):
            out = self.embed_tokens.attend(hidden)  # int8 table, a scale per vocabulary row
        elif self.cfg.tie_word_embeddings:
            # [V, E] x [N, E] -> [V, N]: the embedding is the left operand, read in its own layout (as the right one,
            # a CPU copies the whole [E, V] transpose out for every decoded token)
            table = self.embed_tokens.embedding[...]
            flat = hidden.reshape(-1, hidden.shape[-1]).astype(table.dtype)
            out = jax.lax.dot_general(table, flat, (((1,), (1,)), ((), ()))).T.reshape(*hidden.shape[:-1], -1)
        else:
            out = self.lm_head(hidden)
        return out.astype(jnp.float32)

    def rewards(self, hidden: jax.Array) -> jax.Array:
        """[..., E] -> [...] step reward in [0, 1] (PRM heads, and an LM's value head beside its LM head)."""
        if self.cfg.has_value_head:
            return jax.nn.sigmoid(self.v_head(hidden))
        if self.cfg.head == "token_logit":
            logits = self.logits(hidden)
            return jax.nn.sigmoid(logits[..., self.cfg.good_token_id] - logits[..., self.cfg.bad_token_id])
        raise ValueError("rewards() needs a PRM head ('value', 'token_logit' or 'lm+value')")
