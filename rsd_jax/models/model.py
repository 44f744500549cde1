"""`Model`: a decoder as data — static (config, graphdef) plus a params pytree — and pure functions over it.

`Model` is a registered pytree whose only leaves are the parameters, so it can be passed straight into
`jax.jit`; the config and graphdef are static metadata (hashable: equal configs share compiled code).
Inside a trace, `nnx.merge(graphdef, params)` rebuilds the module, so every call here is a pure function
of (params, tokens, starts, cache).

`layer_copies` (optional, `with_layer_copies`): the layers' weights once more, one array per layer, which the
decoder then reads in place instead of slicing the stack (a CPU's fast decode; rsd_jax.models.decoder).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rsd_jax.cache import KVCache
from rsd_jax.models import architectures
from rsd_jax.models.config import ModelConfig
from rsd_jax.models.decoder import Decoder, DecoderOutput, unstack_layers


@dataclasses.dataclass(frozen=True)
class Model:
    config: ModelConfig
    graphdef: Any
    params: Any  # nnx.State of arrays (or ShapeDtypeStructs for an abstract model)
    layer_copies: tuple | None = None  # L per-layer dicts equal to params["layers"] (with_layer_copies), or None

    # ------------------------------------------------------------ construction
    @classmethod
    def init(cls, config: ModelConfig, seed: int = 0) -> "Model":
        """Randomly initialised weights (tests and training), of the config's architecture."""
        graphdef, params = nnx.split(architectures.of(config).module(config, rngs=nnx.Rngs(seed)))
        return cls(config, graphdef, params)

    @classmethod
    def abstract(cls, config: ModelConfig) -> "Model":
        """Shapes and dtypes only (no memory): the target for loading and restoring weights."""
        module = architectures.of(config).module
        graphdef, params = nnx.split(nnx.eval_shape(lambda: module(config, rngs=nnx.Rngs(0), shapes_only=True)))
        return cls(config, graphdef, params)

    @classmethod
    def from_pure_dict(cls, config: ModelConfig, pure: dict) -> "Model":
        """Builds a model from a nested dict of arrays shaped like `nnx.to_pure_dict(params)`."""
        abstract = cls.abstract(config)
        params = abstract.params
        nnx.replace_by_pure_dict(params, pure)
        return cls(config, abstract.graphdef, params)

    def pure_dict(self) -> dict:
        """The params as a nested dict of arrays (what orbax saves)."""
        return nnx.to_pure_dict(self.params)

    def with_layer_copies(self) -> "Model":
        """This model with a per-layer copy of its layer weights, which its forward passes then read instead of the
        stacked ones: on a CPU, where the product of a stacked weight's slice first copies the slice out, batch-1
        decoding is about twice as fast; the price is the layer weights' memory once more. Where a forward runs
        under `lax.scan` over the stack (TPU, GPU, ahead-of-time compiles) keep the model without them."""
        if self.layer_copies is not None:
            return self
        return dataclasses.replace(self, layer_copies=unstack_layers(self.module().layers))

    def without_layer_copies(self) -> "Model":
        return dataclasses.replace(self, layer_copies=None)

    def module(self) -> Decoder:
        return nnx.merge(self.graphdef, self.params)

    # ------------------------------------------------------------ pure functions
    def init_cache(self, batch: int, capacity: int) -> KVCache:
        """Zeros in the layout of the config's architecture (`Architecture.cache_layout`)."""
        layout = architectures.of(self.config).cache_layout(self.config)
        return KVCache.zeros(layout, batch, capacity, self.config.jnp_dtype)

    def backbone(self, tokens: jax.Array, starts: jax.Array, cache: KVCache,
                 n_valid: jax.Array | None = None, all_blocks: bool = False,
                 rows: jax.Array | None = None) -> DecoderOutput:
        return self.module().backbone(tokens, starts, cache, n_valid, all_blocks, rows,
                                      layer_copies=self.layer_copies)

    def logits(self, hidden: jax.Array) -> jax.Array:
        return self.module().logits(hidden)

    def rewards(self, hidden: jax.Array) -> jax.Array:
        return self.module().rewards(hidden)

    def num_params(self) -> int:
        return sum(int(x.size) for x in jax.tree.leaves(self.params))


jax.tree_util.register_dataclass(Model, data_fields=["params", "layer_copies"], meta_fields=["config", "graphdef"])


def forward(model: Model, tokens: jax.Array, starts: jax.Array, cache: KVCache,
            n_valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array, KVCache]:
    """One chunk through the decoder: the same function prefills a prompt and decodes one token.

    model: the weights; tokens [B, T] int32; starts [B] slot of each row's first token (its context
    length so far); cache with capacity S; n_valid [B] tokens of the chunk that are real (default T).
    Returns logits [B, T, V] float32 (LM heads; zeros of width 0 for a value-head PRM), last hidden
    states [B, T, E], and the cache with the chunk written and lengths = starts + n_valid.
    """
    out = model.backbone(tokens, starts, cache, n_valid)
    if model.config.has_lm_head:
        logits = model.logits(out.hidden)
    else:
        logits = jnp.zeros(out.hidden.shape[:2] + (0,), jnp.float32)
    return logits, out.hidden, out.cache


def full_forward(model: Model, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Whole sequences [B, T] from scratch, no cache kept: (logits [B, T, V], hidden [B, T, E]); differentiable."""
    b, t = tokens.shape
    out = model.backbone(tokens, jnp.zeros((b,), jnp.int32), model.init_cache(b, t), all_blocks=True)
    logits = model.logits(out.hidden) if model.config.has_lm_head else jnp.zeros((b, t, 0), jnp.float32)
    return logits, out.hidden
