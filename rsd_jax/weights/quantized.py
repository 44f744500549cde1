"""Quantize weights while they load: each device's shard of each quantized parameter is read as float slices from
the checkpoint, one layer at a time, quantized on the host and placed straight into its sharding.

No float copy of a quantized parameter is ever made on a device: a device receives only its int8/int4 shard and the
scales of its columns. Host memory holds one layer's float slice of the columns being built, and the integer shard
itself. A scale depends on whole columns (int8: every input row; int4: a group of rows), so a block is read over
the whole quantized axis and cut to the device's rows after quantizing; the kernel and its scale share that read.

    params = quantized_params(config, read, placement, device)

config: the quantized ModelConfig (rsd_jax.models.quantize); read(path, index) -> a float numpy block of the
*unquantized* parameter at `path` (index: one slice per dimension, stacked parameters [L, ...] included); placement:
path -> Sharding (missing: `device`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model
from rsd_jax.models.quantize import quantize_columns, quantize_rows
from rsd_jax.weights.param_paths import Path_, leaves, nest

Reader = Callable[[Path_, tuple[slice, ...]], np.ndarray]
QUANTIZED_LEAVES = ("kernel", "embedding")  # the integer leaves; each has a float32 "scale" beside it


def flat_params(config: ModelConfig) -> dict[Path_, jax.ShapeDtypeStruct]:
    """path -> shape and dtype of every parameter of a model with this config (nothing allocated)."""
    return dict(leaves(nnx.to_pure_dict(Model.abstract(config).params)))


def is_quantized(path: Path_, dtype: Any) -> bool:
    """Is this leaf an integer kernel or embedding table (its float32 scale sits beside it)?"""
    return path[-1] in QUANTIZED_LEAVES and np.dtype(dtype).name in ("int8", "int4")


def quantized_params(config: ModelConfig, read: Reader, placement: dict[Path_, Any], device: Any) -> dict:
    """The nested params dict of a model with quantized `config`, every array built in its sharding."""
    arrays, targets = {}, flat_params(config)
    for path, target in targets.items():
        sharding = placement.get(path, device)
        if path[-1] == "scale":
            continue  # built with its kernel below
        if not is_quantized(path, target.dtype):
            arrays[path] = jax.make_array_from_callback(
                target.shape, sharding, lambda index, path=path, dtype=target.dtype: read(path, index).astype(dtype))
            continue
        scale_path = path[:-1] + ("scale",)
        blocks = _QuantizedBlocks(path, target.shape, np.dtype(target.dtype), read)
        arrays[path] = jax.make_array_from_callback(target.shape, sharding, blocks.values)
        scale_shape = targets[scale_path].shape
        arrays[scale_path] = jax.make_array_from_callback(scale_shape, placement.get(scale_path, device),
                                                          blocks.scales)
    return nest(arrays)


class _QuantizedBlocks:
    """One quantized parameter's blocks, read and quantized once per (layers, columns) block and served to the
    kernel's and the scale's callbacks. A kernel [.., n_in, n_out] is quantized over n_in (axis -2), an embedding
    [V, E] over E (axis -1: one scale per row)."""

    def __init__(self, path: Path_, shape: tuple[int, ...], dtype: np.dtype, read: Reader):
        self.path, self.shape, self.read = path, shape, read
        self.mode = dtype.name  # "int8" or "int4"
        self.embedding = path[-1] == "embedding"
        self.axis = len(shape) - 1 if self.embedding else len(shape) - 2  # the quantized (reduced) axis
        self.done: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _block(self, index: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(q, scale) over the whole quantized axis for the other dimensions of `index`."""
        index = tuple(slice(*s.indices(n)) for s, n in zip(index, self.shape))
        key = tuple((s.start, s.stop) for i, s in enumerate(index) if i != self.axis)
        if key not in self.done:
            whole = index[:self.axis] + (slice(0, self.shape[self.axis]),) + index[self.axis + 1:]
            if self.embedding:
                self.done[key] = quantize_rows(self.read(self.path, whole), self.mode)
            else:
                self.done[key] = self._per_layer(whole)
        return self.done[key]

    def _per_layer(self, whole: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        if len(self.shape) == 2:
            return quantize_columns(self.read(self.path, whole), self.mode)
        pieces = [quantize_columns(self.read(self.path, (slice(i, i + 1),) + whole[1:]), self.mode)
                  for i in range(whole[0].start, whole[0].stop)]  # one layer's float slice at a time
        return np.concatenate([q for q, _ in pieces]), np.concatenate([s for _, s in pieces])

    def values(self, index: tuple[slice, ...]) -> np.ndarray:
        q, _ = self._block(index)
        cut = [slice(None)] * len(self.shape)
        cut[self.axis] = index[self.axis]
        return q[tuple(cut)]

    def scales(self, index: tuple[slice, ...]) -> np.ndarray:
        """A block of the scale: [.., G, n_out] for a kernel (its group axis cut by `index`), [V, 1] for a table."""
        kernel_index = list(index)
        kernel_index[self.axis] = slice(None)
        _, scale = self._block(tuple(kernel_index))
        cut = [slice(None)] * len(self.shape)
        cut[self.axis] = index[self.axis]
        return scale[tuple(cut)]

