"""Per-device memory of the paper's decode loops on TPU and GPU slices: estimated, and compiled ahead of time.

    python -m rsd_jax.capacity                        # estimates: each shipped paper config on each slice
    python -m rsd_jax.capacity --config configs/paper/qwen25_math_1.5b_7b_skywork1.5b.yaml --slice v5e-8 --compile
    python -m rsd_jax.capacity ... --compile --largest-batch
    python -m rsd_jax.capacity --config configs/paper/qwen25_math_1.5b_7b_skywork1.5b_v5e1.yaml --slice v5e-1 \
        --compile --largest-batch                      # one 16 GB chip, int8 weights (docs/quantization.md)

A slice is a chip and a device count; its mesh is the config's tensor-parallel width `mesh.model` and data over the
rest, factored by the models' KV heads as the runs lay it out (rsd_jax.sharding.make_mesh). The estimate adds, per
device: the three models' weights and KV caches and the loop's token buffers, exactly as their shardings split them
(bfloat16, or the config's dtype; int8 / int4 weights and their scales when quantized), and the working set of one
forward (a catch-up chunk's MLP and attention block activations, the logits) — the one part estimated. `--compile` compiles the loop itself with abstract weights for
the slice's TPU topology (rsd_jax.aot; needs the libtpu wheel) or this machine's CPU devices, and prints compile
seconds and XLA's per-device memory beside the estimate; `--largest-batch` finds the largest batch that fits by
compiling (bisection). No GPU compiler runs here: GPU slices are estimates only.

The roofline helpers (`critical_batch`, ...) are the chips' published peak bandwidth and FLOPs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rsd_jax import exits, flops
from rsd_jax.aot import CHIPS, GiB
from rsd_jax.errors import ConfigError, RSDError
from rsd_jax.models import architectures, catalog
from rsd_jax.models.config import ModelConfig

CONFIGS = ("configs/paper/qwen25_math_1.5b_7b_skywork1.5b.yaml", "configs/paper/qwen25_math_1.5b_7b_skywork7b.yaml",
           "configs/paper/qwen25_math_7b_72b_skywork7b.yaml")
SINGLE_CHIP_CONFIGS = ("configs/paper/qwen25_math_1.5b_7b_skywork1.5b_v5e1.yaml",)  # shown on SINGLE_CHIP_SLICES


@dataclasses.dataclass(frozen=True)
class Slice:
    """A slice of chips: `chip` a key of rsd_jax.aot.CHIPS, `devices` JAX devices, `topology` the TPU topology
    to compile for (None: no compiler here), peak numbers for the roofline."""

    name: str
    chip: str | None  # None: this machine's CPU devices (no HBM to compare with)
    devices: int
    topology: str | None
    hbm_gbps: float  # per device
    tflops: float  # dense bf16, per device


SLICES = {s.name: s for s in (
    Slice("v5e-8", "v5e", 8, "v5e:2x4", 819, 197), Slice("v5e-16", "v5e", 16, "v5e:4x4", 819, 197),
    Slice("v6e-8", "v6e", 8, "v6e:2x4", 1640, 918), Slice("v5p-1", "v5p", 1, "v5p:1x1x1", 2765, 459),
    Slice("v5p-8", "v5p", 4, "v5p:2x2x1", 2765, 459),
    Slice("v5p-16", "v5p", 8, "v5p:2x2x2", 2765, 459), Slice("8x H100", "h100", 8, None, 3350, 989),
    Slice("1x A100 40GB", "a100", 1, None, 1555, 312), Slice("1x H100", "h100", 1, None, 3350, 989),
    Slice("cpu:1", None, 1, "cpu:1", 0, 0), Slice("cpu:8", None, 8, "cpu:8", 0, 0),
    # single chips (Colab's TPU v5e-1; the GPUs researchers have): GPU rows are estimates (no GPU compiler here)
    Slice("v5e-1", "v5e", 1, "v5e:1x1", 819, 197), Slice("v6e-1", "v6e", 1, "v6e:1x1", 1640, 918),
    Slice("1x L4 24GB", "l4", 1, None, 300, 121))}
DEFAULT_SLICES = ("v5e-8", "v5e-16", "v6e-8", "v5p-8", "v5p-16", "8x H100", "1x A100 40GB", "1x H100")
SINGLE_CHIP_SLICES = ("v5e-1", "v6e-1", "1x L4 24GB", "1x A100 40GB", "1x H100")


# ------------------------------------------------------------------------------------------------ the estimate
@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes per device of one decode loop (the most loaded device)."""

    weights: int
    caches: int
    buffers: int  # prompts, PRM view, token tables, trace, statistics
    activations: int  # the working set of one forward (estimated)

    @property
    def total(self) -> int:
        return self.weights + self.caches + self.buffers + self.activations


def _shard_bytes(shape: tuple[int, ...], dtype: Any, spec: Any, sizes: dict[str, int]) -> int:
    """Bytes of the shard of an array of `shape` that one device holds under PartitionSpec `spec`."""
    dims = list(shape)
    for i, entry in enumerate(tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))):
        for axis in (entry if isinstance(entry, tuple) else (entry,) if entry else ()):
            dims[i] = -(-dims[i] // sizes[axis])
    return -(-int(np.prod(dims)) * _bits(dtype) // 8)


def _bits(dtype: Any) -> int:
    """Bits an element takes in device memory: int4 is packed two to a byte on TPU and GPU."""
    return 4 if np.dtype(dtype).name == "int4" else 8 * np.dtype(dtype).itemsize


def _mesh(slice_: Slice, model: int, kv_heads: tuple[int, ...]) -> jax.sharding.AbstractMesh:
    """The layout of the runs' mesh on a slice (axis sizes only)."""
    import math

    from rsd_jax.mesh_axes import DATA, MODEL, TENSOR

    if model < 1 or slice_.devices % model:
        raise ConfigError(f"mesh.model={model} does not divide the {slice_.devices} devices of {slice_.name}")
    kv = math.gcd(model, *kv_heads)
    return jax.sharding.AbstractMesh((slice_.devices // model, kv, model // kv), (DATA, MODEL, TENSOR))


def estimate(inputs, mesh) -> Estimate:
    """The per-device bytes of the loop for abstract inputs (rsd_jax.abstract_run.Inputs) on `mesh`."""
    from rsd_jax import sharding as sh
    from rsd_jax.cache import KVCache
    from rsd_jax.decoding.rsd_state import RSDCaches
    from rsd_jax.mesh_axes import DATA, widths

    sizes = dict(mesh.shape)
    weights = 0
    for model in inputs.models:
        specs = sh.param_specs(model.config, mesh)
        shapes = model.pure_dict()
        weights += sum(_shard_bytes(s.shape, s.dtype, p, sizes) for s, p in
                       zip(jax.tree.leaves(shapes), jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.P))))
    caches_shape = jax.eval_shape(RSDCaches.zeros, inputs.engine, inputs.prompts)
    caches = 0
    for cache, model in zip((caches_shape.draft, caches_shape.target, caches_shape.prm), inputs.models):
        specs = KVCache.specs(model.config.num_kv_heads, mesh)
        caches += sum(_shard_bytes(c.shape, c.dtype, s, sizes) for c, s in
                      zip(jax.tree.leaves(cache), jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.P))))
    rows = inputs.prompts.tokens.shape[0] // sizes[DATA]
    buffers = sum(_shard_bytes(x.shape, x.dtype, jax.P(DATA), sizes) for x in jax.tree.leaves(inputs.prompts))
    buffers += rows * inputs.spec.max_steps * 16 + sum(int(np.prod(x.shape)) for x in jax.tree.leaves(inputs.engine.tables))
    return Estimate(weights, caches, buffers, max(forward_working_set(m.config, rows, inputs.spec.chunk, *widths(mesh))
                                                  for m in inputs.models))


def forward_working_set(cfg: ModelConfig, rows: int, chunk: int, model: int, tensor: int) -> int:
    """Bytes of the activations one catch-up forward holds at once, per device: the chunk's residual stream and
    normed input, the MLP's gate, up and product on this device's share of the width, one key block's attention
    scores and weights (float32) for this device's query heads, and the LM head's float32 logits of a decode step."""
    from rsd_jax.mesh_axes import split
    from rsd_jax.models.attention import KEY_BLOCK

    tp = model * tensor
    width = cfg.intermediate_size // tp if split(cfg.intermediate_size, model, tensor) else cfg.intermediate_size
    heads = cfg.num_heads // tp if cfg.num_heads % tp == 0 else cfg.num_heads
    item = np.dtype(cfg.jnp_dtype).itemsize
    tokens = rows * chunk
    mlp = tokens * (2 * cfg.hidden_size + 3 * width) * item
    attention = 2 * rows * heads * chunk * KEY_BLOCK * 4 + rows * heads * chunk * cfg.head_dim * 4
    logits = rows * cfg.vocab_size * 4 if cfg.has_lm_head else 0
    dequantized = cfg.hidden_size * width * item if cfg.quantize == "int4" else 0  # one layer's kernel, expanded
    return mlp + attention + logits + dequantized


# ------------------------------------------------------------------------------------------------ one config
@dataclasses.dataclass(frozen=True)
class Row:
    config: str
    slice: str
    batch: int
    mesh: str
    estimate: Estimate
    hbm: int
    largest_estimated: int
    compiled: Any = None  # rsd_jax.aot.Report
    largest_compiled: Any = None  # rsd_jax.aot.BatchSearch


LAYERS: dict[str, int] | None = None  # --layers: every model this deep
SEARCH: tuple[int, int] | None = None  # --search LOW:HIGH: the batches --largest-batch bisects (default data..64 x batch)


@functools.lru_cache(maxsize=16)
def _inputs(cfg, batch: int):
    from rsd_jax import abstract_run

    return abstract_run.abstract_inputs(cfg, batch, layers=LAYERS)


def evaluate_row(cfg, path: str, slice_: Slice, batch: int, *, compile_: bool, largest: bool) -> Row:
    inputs = _inputs(cfg, batch)
    kv_heads = tuple(m.config.num_kv_heads for m in inputs.models)
    mesh = _mesh(slice_, tensor_width(cfg, slice_, kv_heads), kv_heads)
    est = estimate(inputs, mesh)
    hbm = CHIPS[slice_.chip].hbm_bytes if slice_.chip else None
    data = dict(mesh.shape)["data"]
    largest_est = None
    if hbm is not None:
        per_rows = estimate(_inputs(cfg, 2 * batch), mesh).total - est.total  # bytes of `batch` more rows
        largest_est = data * int((hbm - est.total) / per_rows * batch / data) + batch if hbm >= est.total else 0
    shape = "x".join(str(v) for v in dict(mesh.shape).values())
    row = Row(Path(path).stem, slice_.name, batch, shape, est, hbm, largest_est)
    if compile_ or largest:
        if slice_.topology is None:
            raise ConfigError(f"{slice_.name}: no compiler for it on this machine; estimates only")
        report, search = compile_loop(cfg, slice_, batch, kv_heads, largest)
        row = dataclasses.replace(row, compiled=report, largest_compiled=search)
    return row


def tensor_width(cfg, slice_: Slice, kv_heads: tuple[int, ...] = ()) -> int:
    """The config's mesh.model on the slice (rsd_jax.mesh_axes.tensor_width: auto adapts to its devices), a pinned
    width capped at the devices of a slice that has fewer (one GPU: 1)."""
    from rsd_jax.mesh_axes import AUTO, tensor_width as width

    model = cfg.mesh.model if cfg.mesh.model == AUTO else min(cfg.mesh.model, slice_.devices)
    return width(model, slice_.devices, kv_heads, cap=cfg.mesh.model_max)


def compile_loop(cfg, slice_: Slice, batch: int, kv_heads: tuple[int, ...], largest: bool):
    """The loop compiled for the slice's TPU topology: (report at `batch`, batch search or None)."""
    from rsd_jax import abstract_run, aot
    from rsd_jax.sharding import make_mesh

    target = aot.compile_target(slice_.topology)
    if target.platform == "cpu" and len(target.devices) < slice_.devices:
        raise ConfigError(f"{slice_.name} needs {slice_.devices} CPU devices: set "
                          f"XLA_FLAGS=--xla_force_host_platform_device_count={slice_.devices} before starting")
    mesh = make_mesh(-1, tensor_width(cfg, slice_, kv_heads), devices=target.devices, kv_heads=kv_heads)
    data = dict(mesh.shape)["data"]

    def report(rows: int):
        program, args = abstract_run.program(_inputs(cfg, rows), mesh)
        with jax.set_mesh(mesh):
            return aot.compile_report(program.fn, args, program.in_shardings, program.out_shardings, target,
                                      donate_argnums=program.donate_argnums)

    first = report(batch)
    if not largest:
        return first, None
    probes = []

    def fits(rows: int) -> bool:
        probes.append((rows, report(rows) if rows != batch else first))
        return bool(probes[-1][1].fits)

    low, high = SEARCH or (data, 64 * batch)
    best, failing, exact = aot.bisect_largest(fits, low, high, multiple=data, max_probes=8)
    return first, aot.BatchSearch(best, failing, exact, tuple(probes))


# ------------------------------------------------------------------------------------------------ printing
def _gib(x: float) -> str:
    return f"{x / GiB:.2f}"


def table(rows: list[Row]) -> str:
    lines = ["| config | slice | mesh data x model x tensor | batch | weights | KV caches | buffers | activations (est.) "
             "| estimate | compiled: args + temps = peak (GiB) | estimate vs compiled | compile s (wall / CPU) "
             "| HBM per device | fits | largest batch |", "|" + "---|" * 15]
    for r in rows:
        e = r.estimate
        compiled, error, seconds = "–", "–", "–"
        fits = "–" if r.hbm is None else "yes" if e.total <= r.hbm else "no"
        largest = "–" if r.largest_estimated is None else f"{r.largest_estimated} (estimate)"
        if r.compiled is not None:
            c = r.compiled
            if c.memory is None:
                compiled, fits = "refused by the compiler: over HBM", "no"
            else:
                m = c.memory
                compiled = f"{_gib(m.arguments)} + {_gib(m.temporaries)} = {_gib(m.peak)}"
                error = f"{100 * (e.total - m.peak) / m.peak:+.1f}%"
                fits = {True: "yes", False: "no", None: "–"}[c.fits]
            seconds = f"{c.lower_wall_s + c.compile_wall_s:.0f} / {c.lower_cpu_s + c.compile_cpu_s:.0f}"
        if r.largest_compiled is not None:
            s = r.largest_compiled
            largest = f"{s.largest} (compiled; {s.smallest_failing} does not fit)" if s.smallest_failing else \
                f"{s.largest} or more (compiled)"
        lines.append(f"| {r.config} | {r.slice} | {r.mesh} | {r.batch} | {_gib(e.weights)} | {_gib(e.caches)} | "
                     f"{_gib(e.buffers)} | {_gib(e.activations)} | {_gib(e.total)} | {compiled} | {error} | {seconds} "
                     f"| {'–' if r.hbm is None else _gib(r.hbm)} | {fits} | {largest} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ roofline
BYTES = 2  # bfloat16
MODELS = {name.removesuffix("-Instruct"): catalog.model_config(name) for name in
          ("Qwen2.5-Math-1.5B-Instruct", "Qwen2.5-Math-7B-Instruct", "Qwen2.5-Math-72B-Instruct")}


def kv_bytes_per_token(cfg: ModelConfig) -> int:
    """K and V of one token in the cache layout of the config's architecture."""
    layers, kv_heads, head_dim = architectures.of(cfg).cache_layout(cfg)
    return 2 * layers * kv_heads * head_dim * BYTES


def params(cfg: ModelConfig) -> int:
    e, d = cfg.hidden_size, cfg.head_dim
    layer = e * d * (2 * cfg.num_heads + 2 * cfg.num_kv_heads) + 3 * e * cfg.intermediate_size
    return cfg.num_layers * layer + cfg.vocab_size * e * (1 if cfg.tie_word_embeddings else 2)


def critical_batch(cfg: ModelConfig, slice_: Slice, context: int) -> float:
    """Rows per decode step above which the model is compute- rather than memory-bound (one replica):
    B · flops(token) / peak_flops = (weight bytes + B · context · kv bytes) / bandwidth."""
    f = flops.flops_per_token(cfg, context)
    t_flop, t_byte = f / (slice_.tflops * 1e12), context * kv_bytes_per_token(cfg) / (slice_.hbm_gbps * 1e9)
    if t_flop <= t_byte:
        return float("inf")  # attention over the cache keeps it memory-bound at any batch
    return (params(cfg) * BYTES / (slice_.hbm_gbps * 1e9)) / (t_flop - t_byte)


# ------------------------------------------------------------------------------------------------ command
def main(argv: list[str] | None = None) -> int:
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import add_config_flags, describe_if_asked, load_config, print_config_if_asked

    parser = argparse.ArgumentParser(prog="python -m rsd_jax.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", help="run config(s) (default: the three paper configs)")
    parser.add_argument("--slice", action="append", choices=sorted(SLICES),
                        help=f"slices (default: {', '.join(DEFAULT_SLICES)}); cpu:N compiles for this machine")
    parser.add_argument("--batch", type=int, help="rows per batch (default: the config's decoding.batch_size)")
    parser.add_argument("--compile", action="store_true", help="compile the loop for each slice (TPU: libtpu)")
    parser.add_argument("--layers", type=int, help="compile shallower copies of every model (compile-time studies)")
    parser.add_argument("--largest-batch", action="store_true", help="find the largest batch that fits, compiling")
    parser.add_argument("--search", metavar="LOW:HIGH", help="--largest-batch: bisect between these batches "
                                                              "(default: the mesh's data size .. 64 x the batch)")
    add_config_flags(parser)
    parser.add_argument("overrides", nargs="*", help="key.path=value applied to every config")
    args = parser.parse_args(argv)
    if describe_if_asked(args, RunConfig):
        return 0
    for flag, value in (("--batch", args.batch), ("--layers", args.layers)):  # before any work
        if value is not None and value < 1:
            return exits.error(f"{flag} must be a positive integer, got {value}")
    low, _, high = (args.search or "1:1").partition(":")
    if not (low.isdigit() and high.isdigit() and 0 < int(low) <= int(high)):  # before any work, with the others
        return exits.error(f"--search takes LOW:HIGH with 0 < LOW <= HIGH, got {args.search!r}")
    global LAYERS, SEARCH
    LAYERS = {role: args.layers for role in ("draft", "target", "prm")} if args.layers else None
    SEARCH = (int(low), int(high)) if args.search else None
    root = Path(__file__).resolve().parents[1]
    rows = []
    try:
        paths = args.config or [str(root / c) for c in CONFIGS + SINGLE_CHIP_CONFIGS]
        configs = [load_config(RunConfig, path, args.overrides) for path in paths]  # every one checked first
        if print_config_if_asked(args, *configs):
            return 0
        for path, cfg in zip(paths, configs):
            single = not args.config and path.endswith(SINGLE_CHIP_CONFIGS)
            for name in args.slice or (SINGLE_CHIP_SLICES if single else DEFAULT_SLICES):
                slice_ = SLICES[name]
                try:
                    tensor_width(cfg, slice_)
                except ConfigError:  # a pinned mesh.model this slice's devices cannot take
                    continue
                compile_ = (args.compile or args.largest_batch) and slice_.topology is not None
                largest = args.largest_batch and compile_ and slice_.chip is not None
                rows.append(evaluate_row(cfg, path, slice_, args.batch or cfg.decoding.batch_size,
                                         compile_=compile_, largest=largest))
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
