"""The device mesh's axes, and how a dimension of n splits over them.

A mesh is ("data", "model", "tensor"): rows of the batch over "data"; tensor parallelism over "model" x "tensor"
together. The tensor-parallel width M = |model| x |tensor| is factored so that "model" divides every model's KV
head count (`rsd_jax.sharding.make_mesh`): a cache with fewer KV heads than M (the 1.5B models have 2 KV heads, the
paper's configs M = 4) still splits over "model" instead of being copied on every device. A dimension splits over
the widest of ("model", "tensor"), "model", "tensor" that divides it, or is replicated.

How wide M is (`tensor_width`): `mesh.model: N` pins it to N; `mesh.model: auto` takes the widest M, up to
`mesh.model_max` (unset: every device), that divides the device count (and leaves `mesh.data` its devices when that
is not -1) and that each model's KV head count k divides or is divided by (M | k or k | M: the caches split over
whole heads, none is copied on a share of the devices it could have split over). A width that cannot be had is a
ConfigError that names the setting and the value that would work.
"""

from __future__ import annotations

from typing import Sequence

import jax

from rsd_jax.errors import ConfigError

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


AUTO = "auto"


def kv_compatible(width: int, kv_heads: Sequence[int]) -> bool:
    """Does a tensor-parallel width split every model's KV heads cleanly (width | k or k | width)?"""
    return all(k % width == 0 or width % k == 0 for k in kv_heads)


def auto_width(devices: int, kv_heads: Sequence[int] = (), cap: int | None = None, data: int = -1) -> int:
    """The widest tensor-parallel width <= cap (None: devices) that divides `devices`, leaves `data` devices for the
    batch (data=-1: any), and is kv_compatible; 1 when nothing wider is (1 always divides)."""
    top = min(devices, cap or devices)
    return max((w for w in range(1, top + 1) if devices % w == 0 and kv_compatible(w, kv_heads)
                and (data == -1 or data * w == devices)), default=1)


def tensor_width(model: int | str, devices: int, kv_heads: Sequence[int] = (), *, cap: int | None = None,
                 data: int = -1) -> int:
    """The tensor-parallel width a run gets on `devices` devices: `model` itself when it is pinned (an int), else
    (`model == "auto"`) `auto_width`. A pinned width the devices cannot take is a ConfigError naming the fix."""
    if model == AUTO:
        width = auto_width(devices, kv_heads, cap, data)
        if data != -1 and data * width != devices:
            raise ConfigError(f"mesh.data={data} leaves no tensor-parallel width for {devices} devices: set "
                              f"mesh.data=-1 (all devices left after mesh.model)")
        return width
    if model < 1 or devices % model:
        fits = auto_width(devices, kv_heads, model, data if data != -1 and devices % data == 0 else -1)
        raise ConfigError(f"mesh.model={model} does not divide the {devices} devices JAX sees: set mesh.model={fits} "
                          f"(the widest these devices and the models' KV heads {tuple(kv_heads)} allow), or "
                          f"mesh.model=auto to adapt to the devices found")
    if data != -1 and data * model != devices:
        raise ConfigError(f"mesh.data={data} x mesh.model={model} != {devices} devices: set mesh.data=-1 "
                          f"(all devices left after mesh.model), or mesh.data={devices // model}")
    return model


def width_name(model: int | str, cap: int | None) -> str:
    """How a config's width reads in messages: `4`, `auto`, `auto (up to 4)`."""
    return f"{AUTO} (up to {cap})" if model == AUTO and cap else str(model)
