"""Arrays into their places on a mesh, and back to the host: what the jitted loops' callers do around a call.

The loops themselves are plain `jax.jit` functions; their inputs arrive committed to their shardings (weights as
they declare, the batch over "data", the rest replicated), so jit's own cache keys on those shardings and the
compiled program keeps them. This is what `pjit` became; nothing here uses `with mesh:`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

import jax
import numpy as np

from rsd_jax import sharding as sh

if TYPE_CHECKING:
    from rsd_jax.decoding.prompts import Prompts


def place(tree: Any, shardings: Any) -> Any:
    """Every array of `tree` in its sharding. Arrays already there stay; others are built from the host copy every
    process holds (multi-host: each process puts only its own devices' shards, so the same call runs everywhere)."""
    def one(x, sharding):
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, np.ndim(x)):
            return x
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def to_host(tree: Any) -> Any:
    """A loop's output as numpy arrays on this host (multi-host: gathered from every process)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


@contextlib.contextmanager
def on_mesh(mesh: jax.sharding.Mesh | None, *, prompts: "Prompts",
            replicated: Any) -> Iterator[tuple["Prompts", Any]]:
    """Around a loop's call: on `mesh` (an engine's), the prompts split over "data" (the batch must divide it) and
    `replicated` (knobs, keys: any pytree) on every device, inside `jax.set_mesh` (the loop reads the mesh while
    tracing: cache layout, the PRM's text view per data shard). Without a mesh: the arguments as they are."""
    if mesh is None:
        yield prompts, replicated
        return
    sh.check_batch(prompts.tokens.shape[0], mesh)
    prompts = place(prompts, sh.batch_tree_shardings(prompts, mesh))
    replicated = place(replicated, sh.replicated(replicated, mesh))
    with jax.set_mesh(mesh):
        yield prompts, replicated
