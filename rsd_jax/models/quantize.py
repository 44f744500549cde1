"""Weight-only quantization of the decoder: int8 per output channel, int4 per group of input rows.

`ModelConfig.quantize` ("none", "int8", "int4") picks the layers the decoder builds (rsd_jax.models.decoder):
  - int8: every Linear kernel [n_in, n_out] is int8 with one float32 scale per output column ([1, n_out]); the
    embedding table [V, E] (and so a tied LM head) is int8 with one scale per row ([V, 1]); an untied LM head is a
    Linear like the others.
  - int4: the layers' Linear kernels are int4 with one scale per group of `INT4_GROUP` input rows and output column
    ([n_in / g, n_out]); the embeddings and the LM head stay int8 (they are 7% of a 7B model's weights and the
    logits are where a coarse grid costs most).
  - norms, biases and a PRM's value head stay in the model's float dtype.
Quantization is symmetric absmax: scale = max |w| / qmax (qmax 127 or 7), q = round(w / scale) clipped to
[-qmax, qmax], so w ≈ q * scale. The matmuls dequantize inside jit: an int8 kernel multiplies the float activations
as a float matrix and the column scale is applied to the output; an int4 kernel is expanded to the float dtype one
layer at a time (inside the scan over layers, so at most one layer's float kernel exists at once).

Why not a library: Google's qwix 0.1.8 (the JAX quantization library) was tried first. Its PTQ entry point
`qwix.quantize_model` intercepts one method of the top nnx module and quantizes the weights it finds among the
*current module's* `nnx.Param`s when they reach a dot_general; this decoder's layers are one Block whose parameters
are stacked over layers and run by `jax.lax.scan` (rsd_jax.models.decoder), so the kernels reach the matmul as
slices of a split state, not as the module's Params, and qwix leaves every weight in float without an error
(measured: docs/quantization.md). It also quantizes a model whose float weights are already on the device, where
the weights here are quantized slice by slice as they load (rsd_jax.weights.quantized). With float activations its
`dot_general` dequantizes the weight before a float matmul, as this module does.

Shapes: a kernel [n_in, n_out] (stacked: [L, n_in, n_out]); its scale [n_in / g, n_out]; an embedding [V, E], its
scale [V, 1].
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

MODES = ("none", "int8", "int4")
INT4_GROUP = 128  # input rows per int4 scale (the largest divisor of n_in up to this)
_QMAX = {"int8": 127, "int4": 7}
_STORAGE = {"int8": np.dtype(np.int8), "int4": np.dtype(jnp.int4)}


def storage_dtype(mode: str) -> np.dtype:
    """The integer dtype a kernel of `mode` is stored in (int8, or int4: packed two to a byte on TPU)."""
    return _STORAGE[mode]


def group_size(n_in: int, mode: str) -> int:
    """Input rows that share one scale: all of them for int8, the largest divisor of n_in <= INT4_GROUP for int4."""
    if mode == "int8":
        return n_in
    return max(g for g in range(1, min(n_in, INT4_GROUP) + 1) if n_in % g == 0)


def quantize_columns(w: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """w [..., n_in, n_out] float -> (q [..., n_in, n_out] in storage_dtype(mode), scale [..., n_in/g, n_out]
    float32), symmetric absmax per group of g = group_size(n_in) input rows and output column; on the host."""
    w = np.asarray(w, np.float32)
    n_in, n_out = w.shape[-2:]
    g = group_size(n_in, mode)
    grouped = w.reshape(*w.shape[:-2], n_in // g, g, n_out)
    absmax = np.abs(grouped).max(axis=-2)  # [..., G, n_out]
    scale = np.where(absmax > 0, absmax / _QMAX[mode], 1.0).astype(np.float32)
    q = np.clip(np.rint(grouped / scale[..., None, :]), -_QMAX[mode], _QMAX[mode])
    return q.reshape(w.shape).astype(_STORAGE[mode]), scale


def quantize_rows(table: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """An embedding table [V, E] -> (q [V, E], scale [V, 1] float32): one scale per row (per token)."""
    q, scale = quantize_columns(np.asarray(table).T, mode)
    return q.T, scale.T


def dequantize(q: jax.Array, scale: jax.Array, dtype: Any) -> jax.Array:
    """q [..., n_in, n_out] with scale [..., n_in/g, n_out] -> the float kernel [..., n_in, n_out] in `dtype`."""
    *lead, n_in, n_out = q.shape
    groups = scale.shape[-2]
    w = q.astype(jnp.float32).reshape(*lead, groups, n_in // groups, n_out) * scale[..., :, None, :]
    return w.reshape(q.shape).astype(dtype)


def _param(value: jax.Array, axes: tuple[str | None, ...]) -> nnx.Param:
    return nnx.Param(value, axes=axes)


class QuantizedLinear(nnx.Module):
    """y = x @ (kernel * scale) + bias, kernel int8/int4 [n_in, n_out], scale float32 [n_in/g, n_out].

    Built with random integers (tests, `Model.init`) or as a shape (`nnx.eval_shape`) that loading fills
    (rsd_jax.weights.quantized). axes: the kernel's logical axes (in, out); the scale shares the
    output axis, its group axis is replicated."""

    def __init__(self, n_in: int, n_out: int, *, bias: bool, mode: str, dtype: Any, rngs: nnx.Rngs,
                 axes: tuple[str | None, str | None]):
        q, scale = _random_quantized(rngs.params(), (n_in, n_out), mode)
        self.kernel = _param(q, axes)
        self.scale = _param(scale, (None, axes[1]))
        self.bias = _param(jnp.zeros((n_out,), dtype), axes[1:]) if bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., n_in] -> [..., n_out] in the model's dtype."""
        q, scale = self.kernel[...], self.scale[...]
        x = x.astype(self.dtype)
        if scale.shape[-2] == 1:  # one scale per column: scale the output, never expand the kernel
            y = (jnp.matmul(x, q.astype(self.dtype), preferred_element_type=jnp.float32) * scale[0])
        else:
            y = jnp.matmul(x, dequantize(q, scale, self.dtype), preferred_element_type=jnp.float32)
        y = y.astype(self.dtype)
        return y if self.bias is None else y + self.bias[...]


class QuantizedEmbed(nnx.Module):
    """An int8 embedding table [V, E] with one float32 scale per row [V, 1]; `attend` is the tied LM head."""

    def __init__(self, vocab: int, features: int, dtype: Any, rngs: nnx.Rngs):
        q, scale = _random_quantized(rngs.params(), (features, vocab), "int8")  # columns of the transpose = rows
        self.embedding = _param(q.T, ("vocab", None))
        self.scale = _param(scale.T, ("vocab", None))
        self.dtype = dtype

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens [...] int -> [..., E] in the model's dtype."""
        rows = jnp.take(self.embedding[...], tokens, axis=0).astype(jnp.float32)
        return (rows * jnp.take(self.scale[...], tokens, axis=0)).astype(self.dtype)

    def attend(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., E] -> [..., V] float32: hidden · table^T, each vocabulary row's scale on the output."""
        q = self.embedding[...].astype(self.dtype)
        y = jnp.matmul(hidden.astype(self.dtype), q.T, preferred_element_type=jnp.float32)
        return y * self.scale[...][:, 0]


def _random_quantized(key: jax.Array, shape: tuple[int, int], mode: str) -> tuple[jax.Array, jax.Array]:
    """A random quantized kernel [n_in, n_out] (initialisation, and the shapes `nnx.eval_shape` reads): integers
    uniform on the grid, scaled so the weights have standard deviation 0.02 like the float layers' init."""
    n_in, n_out = shape
    qmax = _QMAX[mode]
    q = jax.random.randint(key, shape, -qmax, qmax + 1).astype(_STORAGE[mode])
    scale = jnp.full((n_in // group_size(n_in, mode), n_out), 0.02 * 3 ** 0.5 / qmax, jnp.float32)
    return q, scale
