"""Meshes and logical-axis rules: how weights, caches and loop state are laid out over ("data", "model").

Weights use tensor parallelism over "model" (query heads, whole KV heads, MLP width, vocabulary), each only when
the dimension divides evenly over the axis (otherwise it is replicated); caches split their KV heads over "model"
when whole heads divide evenly; everything with a batch dimension is split over "data". One table of logical axes per
parameter, declared where the parameter is created (`rsd_jax.models.decoder`: its `axes` metadata), is the single
description from which every sharding is derived; a parameter without declared axes is an error.

Axes: ("data", "model", "tensor"), see rsd_jax.mesh_axes. The mesh uses Auto axes, so XLA's partitioner propagates shardings through the loop from the declared
inputs and outputs; the entry points are `jax.jit(..., in_shardings=..., out_shardings=...)`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from rsd_jax.mesh_axes import DATA, MODEL, TENSOR, split, widths
from rsd_jax.errors import ConfigError
from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model


def make_mesh(data: int = -1, model: int = 1, devices=None, kv_heads: Sequence[int] = ()) -> jax.sharding.Mesh:
    """A ("data", "model", "tensor") mesh: data=-1 takes all devices left over after the tensor-parallel width
    `model`, which is factored as |model| x |tensor| with |model| the largest divisor of it that divides every
    count in kv_heads (the models' KV heads: their caches split over "model"; rsd_jax.mesh_axes)."""
    devices = list(devices if devices is not None else jax.devices())
    if model < 1 or len(devices) % model:
        raise ConfigError(f"mesh.model={model} does not divide the {len(devices)} devices")
    data = len(devices) // model if data == -1 else data
    if data < 1 or data * model != len(devices):
        raise ConfigError(f"mesh.data={data} x mesh.model={model} != {len(devices)} devices")
    kv = math.gcd(model, *kv_heads) if kv_heads else model
    auto = (jax.sharding.AxisType.Auto,) * 3
    return jax.make_mesh((data, kv, model // kv), (DATA, MODEL, TENSOR), axis_types=auto, devices=devices)


def logical_rules(cfg: ModelConfig, mesh) -> dict[str | None, Any]:
    """Logical axis -> mesh axes for one model's weights on `mesh`: the query heads (heads x head dim,
    flattened), the MLP width and the vocabulary split over the widest tensor-parallel axes they divide; the
    key/value projections only by whole KV heads (like the caches they fill, rsd_jax.cache); what does not split
    is replicated (rsd_jax.mesh_axes.split).

    The query projections may split inside a head (12 heads of 128 over 8 devices: 192 columns each): memory runs
    out first, and the partitioner gathers the few activations that need whole heads. The key/value projections do
    not: their output goes into the cache, and a cache laid out by half heads costs the compiler layout copies of it
    (measured on TPU v5e: 1.2 GiB per chip more for the 1.5B/7B/1.5B loop)."""
    model, tensor = widths(mesh)
    return {"heads": split(cfg.num_heads * cfg.head_dim, model, tensor),
            "kv_heads": split(cfg.num_kv_heads, model, tensor), "mlp": split(cfg.intermediate_size, model, tensor),
            "vocab": split(cfg.vocab_size, model, tensor), "layers": None, None: None}


def declared_axes(state: nnx.State) -> Any:
    """A pure-dict tree of the logical axes each parameter of `state` declared (its `axes` metadata); a parameter
    without them is a ConfigError naming it."""
    def axes(path, variable: nnx.Variable) -> tuple[str | None, ...]:
        declared = variable.get_metadata().get("axes")
        if declared is None or len(declared) != variable.ndim:
            raise ConfigError(f"parameter {jax.tree_util.keystr(path)} declares no logical axes for its "
                              f"{variable.ndim} dimensions (got {declared!r})")
        return tuple(declared)

    tree = jax.tree_util.tree_map_with_path(axes, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree


@functools.lru_cache(maxsize=32)
def param_axes(config: ModelConfig) -> Any:
    """A params-shaped tree (pure dict) of the logical axes each parameter declared where it was created (memoised
    per config: building the abstract model is the slow part of an estimate; callers map it, never change it)."""
    return declared_axes(Model.abstract(config).params)


def param_specs(config: ModelConfig, mesh: jax.sharding.Mesh) -> Any:
    """A params-shaped tree (pure dict) of PartitionSpecs, from the declared axes and the mesh."""
    rules = logical_rules(config, mesh)

    def spec(axes: tuple[str | None, ...]) -> P:
        unknown = [a for a in axes if a not in rules]
        if unknown:
            raise ConfigError(f"logical axis {unknown[0]!r} has no sharding rule (known: {sorted(map(str, rules))})")
        return P(*(rules[a] for a in axes))

    return jax.tree.map(spec, param_axes(config), is_leaf=lambda x: isinstance(x, tuple))


def param_shardings(config: ModelConfig, mesh: jax.sharding.Mesh) -> Any:
    """A params-shaped tree (pure dict) of NamedShardings: where loaders put each parameter."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(config, mesh),
                        is_leaf=lambda x: isinstance(x, P))


def model_sharding_tree(model: Model, mesh: jax.sharding.Mesh) -> Model:
    """The model's pytree with NamedShardings as leaves (an `in_shardings` entry for `jax.jit`)."""
    return Model.from_pure_dict(model.config, param_shardings(model.config, mesh))


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int) -> NamedSharding:
    """Batch over "data", everything else replicated."""
    return NamedSharding(mesh, P(DATA, *([None] * (ndim - 1))))


def batch_tree_shardings(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Shards every array of a batch-major pytree over "data" (scalars replicated)."""
    def one(x):
        ndim = np.ndim(x)
        return NamedSharding(mesh, P()) if ndim == 0 else batch_sharding(mesh, ndim)

    return jax.tree.map(one, tree)


def replicated(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)


def check_batch(batch: int, mesh: jax.sharding.Mesh) -> None:
    if batch % mesh.shape[DATA]:
        raise ConfigError(f"batch of {batch} rows is not a multiple of mesh.data={mesh.shape[DATA]}; "
                          "pad it (rsd_jax.api.encode_prompts does)")
