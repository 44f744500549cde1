"""The device mesh's axes, and how a dimension of n splits over them.

A mesh is ("data", "model", "tensor"): rows of the batch over "data"; tensor parallelism over "model" x "tensor"
together. The tensor-parallel width M = |model| x |tensor| is factored so that "model" divides every model's KV
head count (`rsd_jax.sharding.make_mesh`): a cache with fewer KV heads than M (the 1.5B models have 2 KV heads, the
paper's configs M = 4) still splits over "model" instead of being copied on every device. A dimension splits over
the widest of ("model", "tensor"), "model", "tensor" that divides it, or is replicated.
"""

from __future__ import annotations

import jax

DATA, MODEL, TENSOR = "data", "model", "tensor"

Axes = str | tuple[str, ...] | None


def widths(mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh) -> tuple[int, int]:
    """(|model|, |tensor|) of a mesh (1 for an axis it does not have)."""
    shape = dict(mesh.shape)
    return shape.get(MODEL, 1), shape.get(TENSOR, 1)


def split(n: int, model: int, tensor: int = 1) -> Axes:
    """The tensor-parallel axes a dimension of size n splits over (None: replicated)."""
    if model * tensor > 1 and n % (model * tensor) == 0:
        return MODEL if tensor == 1 else TENSOR if model == 1 else (MODEL, TENSOR)
    if model > 1 and n % model == 0:
        return MODEL
    if tensor > 1 and n % tensor == 0:
        return TENSOR
    return None


def has_data_axis(mesh) -> bool:
    return not mesh.empty and DATA in mesh.axis_names
