"""A demonstration of `rsd_jax.aot` on a generic function: a `lax.scan` over the stacked SwiGLU MLPs of a
Qwen2.5-Math-7B-sized decoder (hidden 3584, MLP width 18944, 28 layers, bf16), tensor parallel over "model" and
batch over "data". It depends on nothing else in the project (no RSD loop, no model code).

    python -m rsd_jax.aot_demo --target cpu:8 --target v5e:2x4 [--layers 28 --batch 32 --tokens 512]
    python -m rsd_jax.aot_demo --target v5e:2x4 --search 8:1024    # largest batch that fits, by bisection
    python -m rsd_jax.aot_demo --target cpu:8 --chip h100            # a CPU compile against an H100's HBM

Per layer: x += down(silu(gate(rms_norm(x))) * up(rms_norm(x))). Shapes: x [batch, tokens, hidden] split over
"data"; gate, up [layers, hidden, mlp] and down [layers, mlp, hidden] split over "model" on the mlp axis; x is
donated and returned with its own sharding.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from rsd_jax import aot
from rsd_jax.mesh_axes import DATA as DATA_AXIS, MODEL as MODEL_AXIS


@dataclasses.dataclass(frozen=True)
class MLPStack:
    """The demonstration's sizes (defaults: Qwen2.5-Math-7B's MLPs)."""

    layers: int = 28
    hidden: int = 3584
    mlp: int = 18944
    dtype: str = "bfloat16"


def mlp_stack(x: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array) -> jax.Array:
    """x [B, T, H]; gate, up [L, H, F]; down [L, F, H] -> [B, T, H]: the residual stream after L MLP blocks."""
    def layer(h, w):
        g, u, d = w
        n = h * jax.lax.rsqrt(jnp.mean(jnp.square(h.astype(jnp.float32)), -1, keepdims=True) + 1e-6).astype(h.dtype)
        return h + (jax.nn.silu(n @ g) * (n @ u)) @ d, None

    return jax.lax.scan(layer, x, (gate, up, down))[0]


def abstract_args(stack: MLPStack, mesh: jax.sharding.Mesh, batch: int, tokens: int) -> tuple:
    """ShapeDtypeStructs with shardings on `mesh` for (x, gate, up, down)."""
    def sds(shape, spec):
        return jax.ShapeDtypeStruct(shape, jnp.dtype(stack.dtype), sharding=NamedSharding(mesh, spec))

    L, H, F = stack.layers, stack.hidden, stack.mlp
    return (sds((batch, tokens, H), P(DATA_AXIS, None, None)), sds((L, H, F), P(None, None, MODEL_AXIS)),
            sds((L, H, F), P(None, None, MODEL_AXIS)), sds((L, F, H), P(None, MODEL_AXIS, None)))


def report(target: aot.Target, stack: MLPStack, batch: int, tokens: int, model: int,
           chip: str | None = None) -> aot.Report:
    args = abstract_args(stack, target.mesh(model), batch, tokens)
    return aot.compile_report(mlp_stack, args, None, args[0].sharding, target, donate_argnums=0, chip=chip)


def search(target: aot.Target, stack: MLPStack, *, tokens: int, model: int, low: int, high: int,
           chip: str | None = None) -> aot.BatchSearch:
    mesh = target.mesh(model)
    return aot.largest_batch(mlp_stack, lambda b: abstract_args(stack, mesh, b, tokens), target, low=low,
                             high=high, multiple=mesh.shape[DATA_AXIS], donate_argnums=0, chip=chip,
                             out_shardings=lambda b: NamedSharding(mesh, P(DATA_AXIS, None, None)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.aot_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", help=f"repeatable; forms: {', '.join(aot.ACCEPTED)}")
    parser.add_argument("--layers", type=int, default=MLPStack.layers)
    parser.add_argument("--hidden", type=int, default=MLPStack.hidden)
    parser.add_argument("--mlp", type=int, default=MLPStack.mlp)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=512, help="tokens per row")
    parser.add_argument("--model", type=int, default=4, help="size of the mesh's model axis")
    parser.add_argument("--search", metavar="LOW:HIGH", help="also bisect for the largest batch that fits "
                        "(TPU targets, or CPU ones with --chip)")
    parser.add_argument("--chip", choices=sorted(aot.CHIPS), help="compare CPU compiles with this chip's HBM")
    a = parser.parse_args(argv)
    targets = a.target or ["cpu:8", "v5e:2x4"]
    cpus = [int(t[4:]) for t in targets if t.startswith("cpu:") and t[4:].isdigit()]
    if cpus:
        aot.use_cpu_devices(max(cpus))  # before anything initialises JAX's backends
    stack = MLPStack(a.layers, a.hidden, a.mlp)
    print(f"{stack}, batch {a.batch}, tokens {a.tokens}, mesh model={a.model}")
    for name in targets:
        target = aot.compile_target(name)
        chip = a.chip if target.platform == "cpu" else None  # a TPU target compares with its own chip
        print(report(target, stack, a.batch, a.tokens, a.model, chip).summary())
        if a.search and (target.chip or chip):
            low, high = (int(v) for v in a.search.split(":"))
            found = search(target, stack, tokens=a.tokens, model=a.model, low=low, high=high, chip=chip)
            probes = ", ".join(f"{b}: {'fits' if r.fits else 'no'} ({r.compile_wall_s:.1f} s)" for b, r in found.probes)
            print(f"  largest batch that fits: {found.largest} (smallest failing {found.smallest_failing}, "
                  f"{'exact' if found.exact else 'probe cap reached'}); probes {probes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
