"""RSD and single-model decoding jitted over a mesh: `jax.jit` with in/out shardings and donated buffers.

Weights keep the layout of `rsd_jax.sharding` (tensor parallel over "model"), every batch-major array is
split over "data", and the caches the loop creates are constrained to the same layout (they are built
under `jax.set_mesh`). This is what `pjit` became; nothing here uses `with mesh:`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental.layout import Format, Layout
from jax.sharding import NamedSharding, PartitionSpec as P

from rsd_jax import sharding as sh
from rsd_jax.cache import KVCache
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.generator import TokenTables
from rsd_jax.decoding.prm_view import PRMView
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd import RSDCaches, RSDOutput, final_caches, output, run_loop
from rsd_jax.decoding.single import SingleOutput, single_decode_impl
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.models.model import Model


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


def _output_shardings(out_shape, mesh, replicated_fields=()):
    tree = sh.batch_tree_shardings(out_shape, mesh)
    return dataclasses.replace(tree, **{f: sh.replicated(getattr(out_shape, f), mesh) for f in replicated_fields})


@dataclasses.dataclass(frozen=True)
class Program:
    """A decode loop as `jax.jit` takes it: the function, its input and output shardings, the donated inputs.

    The first `models` inputs are models whose weights take the layout the compiler chooses (`Layout.AUTO`):
    with a fixed row-major layout, XLA on TPU keeps re-laid-out copies of the largest weights as temporaries
    (20 GiB per chip for the 72B target). Such a program is compiled ahead of time (`compile`) and called with
    the weights laid out as `compiled.input_formats` says (`lay_out`).
    """

    fn: Any
    in_shardings: tuple
    out_shardings: Any
    donate_argnums: tuple[int, ...]
    models: int = 0

    def jit(self):
        return jax.jit(self.fn, in_shardings=self.in_shardings, out_shardings=self.out_shardings,
                       donate_argnums=self.donate_argnums)

    def compile(self, args: tuple):
        """Compiled for arguments shaped like `args` (arrays or ShapeDtypeStructs; models' without shardings)."""
        abstract = [jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), a) if i < self.models else
                    jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), a,
                                 self.in_shardings[i])
                    for i, a in enumerate(args)]
        return self.jit().lower(*abstract).compile()


def auto_layout(tree: Any) -> Any:
    """Shardings -> the same shardings with the layout left to the compiler."""
    return jax.tree.map(lambda s: Format(Layout.AUTO, s), tree)


def lay_out(model: Model, formats: Model) -> Model:
    """The model's weights moved, in place, into `formats` (a Model-shaped tree of jax Formats: sharding and
    layout): each array whose format differs is copied into the new one and its old buffer released at once
    (`donate`), so this needs one weight's memory more, not a model's. Every holder of this Model sees the new
    arrays; a model already laid out this way costs nothing."""
    leaves, treedef = jax.tree.flatten(model)
    targets = jax.tree.leaves(formats, is_leaf=lambda x: isinstance(x, Format))
    with warnings.catch_warnings():  # a move onto other devices cannot reuse the old buffer; it is freed all the same
        warnings.filterwarnings("ignore", "Some donated buffers were not usable")
        moved = [x if isinstance(x, jax.Array) and x.format == f else
                 jax.device_put(x, f, donate=isinstance(x, jax.Array)) for x, f in zip(leaves, targets)]
    nnx.replace_by_pure_dict(model.params, jax.tree.unflatten(treedef, moved).pure_dict())
    return model


def cache_shardings(caches: RSDCaches, models: tuple[Model, Model, Model], mesh) -> RSDCaches:
    """Where the three caches live: batch over "data", KV heads over "model" when whole heads divide."""
    def of(cache: KVCache, model: Model) -> KVCache:
        specs = KVCache.specs(model.config.num_kv_heads, mesh)
        return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))

    return RSDCaches(*(of(c, m) for c, m in zip((caches.draft, caches.target, caches.prm), models)))


def rsd_program(mesh, spec: DecodeSpec, shapes) -> Program:
    """The RSD loop on `mesh` for inputs shaped like `shapes` (draft, target, prm, prompts, tables, prm_view,
    params, histogram: pytrees of arrays or ShapeDtypeStructs): weights tensor parallel, batch over "data". The
    program's arguments are those of `rsd_decode_impl` up to the key, then the caches (donated, with the prompts:
    they are allocated once, outside the loop, as arguments rather than temporaries)."""
    draft, target, prm, prompts_shape, tables_shape, prm_view_shape, params_shape, hist_shape = shapes
    caches_shape = jax.eval_shape(RSDCaches.zeros, draft, target, prm, prompts_shape)

    def fn(draft, target, prm, prompts, tables, prm_view, params, budget, histogram, key, caches):
        final = run_loop(draft, target, prm, prompts, tables, prm_view, params, budget, histogram, key, spec, caches)
        return output(final), final_caches(final)  # the caches come back in the donated buffers: no copy

    out_shape = jax.eval_shape(fn, draft, target, prm, prompts_shape, tables_shape, prm_view_shape, params_shape,
                               jax.ShapeDtypeStruct((), "float32"), hist_shape,
                               jax.ShapeDtypeStruct((), jax.random.key(0).dtype), caches_shape)
    rep = functools.partial(sh.replicated, mesh=mesh)
    in_shardings = (*(auto_layout(sh.model_sharding_tree(m, mesh)) for m in (draft, target, prm)),
                    sh.batch_tree_shardings(prompts_shape, mesh), rep(tables_shape), rep(prm_view_shape),
                    rep(params_shape), rep(0.0), rep(hist_shape), rep(0),
                    cache_shardings(caches_shape, (draft, target, prm), mesh))
    out_shardings = (_output_shardings(out_shape[0], mesh, ("histogram",)), in_shardings[10])
    return Program(fn, in_shardings, out_shardings, (3, 10), models=3)


def new_caches(mesh, draft: Model, target: Model, prm: Model, prompts: Prompts) -> RSDCaches:
    """The three caches, zeros, each built straight into its sharding on `mesh`."""
    shape = jax.eval_shape(RSDCaches.zeros, draft, target, prm, prompts)
    shardings = cache_shardings(shape, (draft, target, prm), mesh)
    zeros = jax.jit(lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape), out_shardings=shardings)
    return zeros()


@functools.lru_cache(maxsize=32)
def _compiled_rsd(mesh, spec: DecodeSpec, shapes):
    program = rsd_program(mesh, spec, shapes)
    caches = jax.eval_shape(RSDCaches.zeros, *shapes[:4])
    args = (*shapes[:7], jax.ShapeDtypeStruct((), jnp.float32), shapes[7],
            jax.ShapeDtypeStruct((), jax.random.key(0).dtype), caches)
    with jax.set_mesh(mesh):
        return program.compile(args), program.in_shardings


def _shape_key(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _hashable(tree):
    leaves, treedef = jax.tree.flatten(_shape_key(tree))
    return tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves), treedef


class _Shapes(tuple):
    """A tuple of abstract pytrees that hashes by structure, shapes and dtypes (the jit cache key)."""

    def __hash__(self):
        return hash(tuple(_hashable(t) for t in self))

    def __eq__(self, other):
        return tuple(_hashable(t) for t in self) == tuple(_hashable(t) for t in other)


def rsd_decode_on_mesh(mesh, draft: Model, target: Model, prm: Model, prompts: Prompts, tables: TokenTables,
                       prm_view: PRMView, params: acceptance.AcceptanceParams, budget, histogram,
                       key, *, spec: DecodeSpec) -> RSDOutput:
    """`rsd_decode` with every input placed in its sharding on `mesh` (the batch must split over "data")."""
    sh.check_batch(prompts.tokens.shape[0], mesh)
    shapes = _Shapes(tuple(map(_shape_key, (draft, target, prm, prompts, tables, prm_view, params, histogram))))
    compiled, in_shardings = _compiled_rsd(mesh, spec, shapes)
    models = [lay_out(m, f) for m, f in zip((draft, target, prm), compiled.input_formats[0][:3])]
    args = place((prompts, tables, prm_view, params, budget, histogram, key), in_shardings[3:10])
    caches = new_caches(mesh, draft, target, prm, prompts)
    with jax.set_mesh(mesh):
        out, _ = compiled(*models, *args, caches)
    return out


@functools.lru_cache(maxsize=32)
def _jitted_single(mesh, spec: DecodeSpec, shapes):
    model, prompts_shape, tables_shape = shapes
    out_shape = jax.eval_shape(functools.partial(single_decode_impl, spec=spec), model, prompts_shape,
                               tables_shape, jax.ShapeDtypeStruct((), jax.random.key(0).dtype))
    rep = functools.partial(sh.replicated, mesh=mesh)
    out = sh.batch_tree_shardings(out_shape, mesh)
    in_shardings = (sh.model_sharding_tree(model, mesh), sh.batch_tree_shardings(prompts_shape, mesh),
                    rep(tables_shape), rep(0))
    fn = jax.jit(functools.partial(single_decode_impl, spec=spec), in_shardings=in_shardings,
                 out_shardings=out, donate_argnums=(1,))
    return fn, in_shardings


def single_decode_on_mesh(mesh, model: Model, prompts: Prompts, tables: TokenTables, key, *,
                          spec: DecodeSpec) -> SingleOutput:
    """`single_decode` (target-only / draft-only) with its inputs sharded on `mesh`."""
    sh.check_batch(prompts.tokens.shape[0], mesh)
    fn, in_shardings = _jitted_single(mesh, spec, _Shapes(tuple(map(_shape_key, (model, prompts, tables)))))
    args = place((model, prompts, tables, key), in_shardings)
    with jax.set_mesh(mesh):
        return fn(*args)
