"""The RSD loop compiled ahead of time for a mesh, and the weights' layouts that compilation chooses.

The loops run as plain `jax.jit` functions whose inputs arrive in their shardings (rsd_jax.placement). Two things
need the loop as a whole program instead: studying its compile time and memory on abstract inputs, for TPU
topologies this machine does not have (rsd_jax.capacity, rsd_jax.aot), and letting the compiler choose the layout
of the weights (`Layout.AUTO`, only possible ahead of time) before the first call (`lay_out_engine`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import jax
from flax import nnx
from jax.experimental.layout import Format, Layout

from rsd_jax import sharding as sh
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd import rsd_loop
from rsd_jax.decoding.rsd_state import cache_shardings
from rsd_jax.decoding.rsd_state import Knobs, RSDCaches
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.models.model import Model


def _output_shardings(out_shape, mesh, replicated_fields=()):
    tree = sh.batch_tree_shardings(out_shape, mesh)
    return dataclasses.replace(tree, **{f: sh.replicated(getattr(out_shape, f), mesh) for f in replicated_fields})


@dataclasses.dataclass(frozen=True)
class Program:
    """A loop as `jax.jit` takes it for ahead-of-time compilation: the function, its input and output shardings (the
    weights' with `Layout.AUTO`: with a fixed row-major layout, XLA on TPU keeps re-laid-out copies of the largest
    weights as temporaries), the donated inputs, and the shapes of its arguments."""

    fn: Any
    in_shardings: tuple
    out_shardings: Any
    donate_argnums: tuple[int, ...]
    shapes: tuple

    def jit(self):
        return jax.jit(self.fn, in_shardings=self.in_shardings, out_shardings=self.out_shardings,
                       donate_argnums=self.donate_argnums)

    def abstract_args(self) -> tuple:
        """The arguments as ShapeDtypeStructs with the program's shardings (none for the weights, whose layout and
        placement are the compiler's to choose)."""
        def one(x, where):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=None if isinstance(where, Format) else where)

        return jax.tree.map(one, self.shapes, self.in_shardings)

    def lower(self):
        """Lowered for the program's argument shapes (call under `jax.set_mesh` of its mesh)."""
        return self.jit().lower(*self.abstract_args())

    def compile(self):
        return self.lower().compile()


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


def rsd_program(engine: Engine, spec: DecodeSpec, prompts: Prompts) -> Program:
    """The RSD loop (rsd_jax.decoding.rsd.rsd_loop) on the engine's mesh, for an engine and prompts shaped like these
    (arrays or ShapeDtypeStructs) and ahead-of-time compilation: the weights' layouts left to the compiler, the batch
    over "data", knobs and key replicated, the caches donated. Its arguments: (engine, prompts, knobs, key, caches)."""
    mesh = engine.mesh
    caches_shape = jax.eval_shape(RSDCaches.zeros, engine, prompts)
    knobs_shape = jax.eval_shape(functools.partial(Knobs.create, histogram_bins=spec.histogram_bins))
    key_shape = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)

    def fn(engine, prompts, knobs, key, caches):
        return rsd_loop(engine, prompts=prompts, knobs=knobs, key=key, caches=caches, spec=spec)

    out_shape = jax.eval_shape(fn, engine, prompts, knobs_shape, key_shape, caches_shape)
    rep = functools.partial(sh.replicated, mesh=mesh)
    placed = engine.shardings(mesh)
    engine_shardings = dataclasses.replace(placed, **{role: auto_layout(getattr(placed, role))
                                                      for role in ("draft", "target", "prm")})
    in_shardings = (engine_shardings, sh.batch_tree_shardings(prompts, mesh), rep(knobs_shape), rep(key_shape),
                    cache_shardings(engine, caches_shape))
    out_shardings = (_output_shardings(out_shape[0], mesh, ("histogram",)), in_shardings[4])
    return Program(fn, in_shardings, out_shardings, (1, 4), shapes=(engine, prompts, knobs_shape, key_shape,
                                                                     caches_shape))


def lay_out_engine(engine: Engine, spec: DecodeSpec, prompts: Prompts) -> Engine:
    """The engine with each model's weights moved, in place, into the layouts the compiler chooses for the RSD
    loop of `spec` on batches shaped like `prompts` (one ahead-of-time compilation). Later calls of the loop
    (plain `jax.jit`, its own cache) compile for the weights' layouts as they find them, so a TPU keeps no
    re-laid-out copy of the largest weights among its temporaries (20 GiB per chip for the 72B target)."""
    if engine.mesh is None:
        return engine
    program = rsd_program(engine, spec, prompts)
    with jax.set_mesh(engine.mesh):
        compiled = program.compile()
    formats = compiled.input_formats[0][0]
    for role in ("draft", "target", "prm"):
        lay_out(getattr(engine, role), getattr(formats, role))
    return engine
