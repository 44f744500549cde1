"""Ahead-of-time compiles for a named target, and what they need per device: this process's CPU devices, or a
TPU topology compiled on a CPU-only machine.

    target = compile_target("v5e:2x4")                 # 8 compile-only TPU v5e devices (needs libtpu)
    mesh = target.mesh(model=4)                        # ("data", "model") = (2, 4), Auto axes
    x = jax.ShapeDtypeStruct((32, 4096), jnp.bfloat16, sharding=NamedSharding(mesh, P("data", None)))
    report = compile_report(fn, (x,), target=target)   # lowers and compiles; nothing is allocated
    print(report.summary())                            # seconds, per-device bytes, peak against the chip's HBM

Targets: "cpu" (every CPU device of this process), "cpu:N" (the first N; the process must have been started with
N CPU devices, see `use_cpu_devices`), or "CHIP:TOPOLOGY" for CHIP in v4, v5e, v5p, v6e and a TOPOLOGY such as
2x4 (v5e, v6e) or 2x2x1 (v4, v5p); layouts smaller than one host (v5e:1x1, v5p:1x1x1) are single-chip slices.
TPU targets use `jax.experimental.topologies.get_topology_desc(name, platform="tpu")`, which needs the libtpu
wheel matching jaxlib (`pip install 'rsd_jax[tpu-aot]'`; libtpu 0.0.42.* for jax 0.10.2). Their devices can be
compiled for, not run on.

Memory (`Memory`, per device, bytes; XLA compiles one SPMD program that every device runs on its shards):
    peak = arguments + outputs - aliased (donated inputs reused as outputs) + temporaries + generated code
Measured with jax 0.10.2 / libtpu 0.0.42: on TPU `temp_size_in_bytes` counts HBM temporaries only; buffers the
compiler places in on-chip VMEM are not in it. XLA's own `peak_memory_in_bytes` is kept as `xla_peak` for
reference but is not the HBM figure: on CPU it leaves temporaries out, on TPU it also counts VMEM buffers (it can
exceed HBM use by up to the VMEM size). The TPU compiler refuses a program whose arguments and temporaries exceed
the chip's usable HBM (RESOURCE_EXHAUSTED); `compile_report` returns such a compile as a report that does not fit.
CPU compiles upcast some bf16 work to f32, so their temporaries overstate an accelerator's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import time
from typing import Any, Callable, Sequence

import jax
from jax.sharding import AxisType, Mesh

from rsd_jax.mesh_axes import DATA as DATA_AXIS, MODEL as MODEL_AXIS
from rsd_jax.errors import ConfigError, RSDError

GiB = 2**30
ACCEPTED = ("cpu", "cpu:N", "v4:AxBxC", "v5e:AxB", "v5p:AxBxC", "v6e:AxB")
_TPU_NAME = re.compile(r"^(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})$")
_HOST_BOUNDS = (2, 2, 1)  # libtpu's default chips per host: smaller layouts are compiled as one-host slices


@dataclasses.dataclass(frozen=True)
class Chip:
    """An accelerator's memory, per JAX device.

    hbm_bytes: usable HBM per JAX device (what a compile is compared with): for TPUs the "available HBM" the
        TPU compiler of libtpu 0.0.42 reports when a program does not fit; for GPUs the nominal size.
    chip_hbm_gib: nominal HBM per chip. devices_per_chip: JAX devices per chip in a compile-only topology (v4
        topologies expose each of a chip's two TensorCores as a device, each with half the HBM).
    """

    name: str
    device_kind: str
    hbm_bytes: int
    chip_hbm_gib: float
    devices_per_chip: int = 1


CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", "TPU v4", int(15.25 * GiB), 32, devices_per_chip=2),
    "v5e": Chip("TPU v5e", "TPU v5 lite", int(15.75 * GiB), 16),
    "v5p": Chip("TPU v5p", "TPU v5", int(95.74 * GiB), 95),
    "v6e": Chip("TPU v6e", "TPU v6 lite", int(31.25 * GiB), 32),
    # No GPU compile is possible on a CPU machine: for comparing a CPU compile (`compile_report(chip=...)`).
    # JAX preallocates 75% of it unless XLA_PYTHON_CLIENT_MEM_FRACTION / XLA_PYTHON_CLIENT_PREALLOCATE say otherwise.
    "h100": Chip("NVIDIA H100 SXM", "NVIDIA H100 80GB HBM3", 80 * GiB, 80),
    "a100": Chip("NVIDIA A100 40GB", "NVIDIA A100-SXM4-40GB", 40 * GiB, 40),
    "l4": Chip("NVIDIA L4", "NVIDIA L4", 24 * GiB, 24),
}


@dataclasses.dataclass(frozen=True)
class Target:
    """Devices to compile for. chip: None for CPU (no HBM to compare with unless a report names one)."""

    name: str
    platform: str  # "cpu" or "tpu"
    devices: tuple[Any, ...]
    chip: Chip | None

    def mesh(self, model: int = 1) -> Mesh:
        """A ("data", "model") mesh over all the target's devices, data = devices / model, Auto axes (XLA
        propagates shardings from the declared inputs and outputs). TPU devices are laid out by their physical
        coordinates (`jax.make_mesh`)."""
        n = len(self.devices)
        if model < 1 or n % model:
            raise ConfigError(f"mesh model={model} does not divide the {n} devices of target {self.name!r}")
        return jax.make_mesh((n // model, model), (DATA_AXIS, MODEL_AXIS), axis_types=(AxisType.Auto,) * 2,
                             devices=list(self.devices))


def tpu_compiler_available() -> bool:
    """Whether TPU topologies can be compiled for here (the libtpu wheel, or TPU_LIBRARY_PATH, is present)."""
    path = os.environ.get("TPU_LIBRARY_PATH")
    return bool(path and os.path.isfile(path)) or importlib.util.find_spec("libtpu") is not None


def use_cpu_devices(n: int) -> None:
    """Asks for n CPU devices in this process (`jax_num_cpu_devices`); only possible before JAX initialises its
    backends (any array op, `jax.devices()`), and a no-op when the process already has n or more. Equivalent:
    XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX is imported."""
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as e:
        if len(jax.devices("cpu")) >= n:  # already started with enough (e.g. by XLA_FLAGS)
            return
        raise ConfigError(f"cannot switch to {n} CPU devices: JAX's backends are already initialised "
                          f"({len(jax.devices('cpu'))} CPU devices); set "
                          f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting Python") from e


def compile_target(name: str) -> Target:
    """The target named `name`: "cpu", "cpu:N", or a TPU topology "v5e:2x4", "v5p:2x2x1", "v6e:2x4", "v4:2x2x1"."""
    if name == "cpu" or name.startswith("cpu:"):
        return _cpu_target(name)
    match = _TPU_NAME.match(name)
    if not match:
        raise ConfigError(f"unknown compile target {name!r}; accepted forms: {', '.join(ACCEPTED)} "
                          "(e.g. cpu:8, v5e:2x4, v5p:2x2x1)")
    return _tpu_target(name, CHIPS[match.group(1)], tuple(int(d) for d in match.group(2).split("x")))


def _cpu_target(name: str) -> Target:
    devices = jax.devices("cpu")
    count = len(devices)
    if name != "cpu":
        try:
            count = int(name[4:])
        except ValueError:
            raise ConfigError(f"unknown compile target {name!r}; accepted forms: {', '.join(ACCEPTED)}") from None
        if count < 1:
            raise ConfigError(f"compile target {name!r} needs at least one device")
        if count > len(devices):
            raise ConfigError(f"compile target {name!r} needs {count} CPU devices and this process has "
                              f"{len(devices)}: set XLA_FLAGS=--xla_force_host_platform_device_count={count} "
                              "before JAX starts (or call rsd_jax.aot.use_cpu_devices first)")
    return Target(name, "cpu", tuple(devices[:count]), None)


def _tpu_target(name: str, chip: Chip, layout: tuple[int, ...]) -> Target:
    from jax.experimental import topologies

    if not tpu_compiler_available():
        raise ConfigError(f"compile target {name!r} needs the libtpu wheel that matches jaxlib "
                          f"{jax.__version__}: pip install 'rsd_jax[tpu-aot]'")
    dims = (layout + (1,))[:3]
    kwargs = {}
    if dims != _HOST_BOUNDS and all(d <= h for d, h in zip(dims, _HOST_BOUNDS)):  # within one host
        kwargs["chips_per_host_bounds"] = dims
    try:
        topology = topologies.get_topology_desc(name, platform="tpu", **kwargs)
    except RuntimeError as e:  # libtpu's INVALID_ARGUMENT (a JaxRuntimeError) for a layout it does not know
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"libtpu rejects compile target {name!r}: {first}") from e
    return Target(name, "tpu", tuple(topology.devices), chip)


@dataclasses.dataclass(frozen=True)
class Memory:
    """Per-device bytes of one compiled program (`compiled.memory_analysis()`); see the module docstring."""

    arguments: int
    outputs: int
    aliased: int  # outputs written into donated arguments (counted in both arguments and outputs)
    temporaries: int
    code: int  # generated code (0 on CPU)
    xla_peak: int | None  # XLA's peak_memory_in_bytes, for reference only

    @property
    def peak(self) -> int:
        """Bytes a device needs: arguments + outputs - aliased + temporaries + generated code."""
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    @classmethod
    def from_analysis(cls, stats: Any) -> Memory:
        peak = getattr(stats, "peak_memory_in_bytes", None)
        return cls(int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes),
                   int(stats.alias_size_in_bytes), int(stats.temp_size_in_bytes),
                   int(stats.generated_code_size_in_bytes), int(peak) if peak else None)


@dataclasses.dataclass(frozen=True)
class Report:
    """One compile: seconds (wall, and CPU of this process and its children), per-device memory, and the HBM
    compared with. memory is None when the compiler refused the program for lack of memory (`refused` holds its
    one-line message); hbm_bytes is None when there is no chip to compare with (a CPU target, no `chip=`)."""

    target: str
    devices: int
    lower_wall_s: float
    lower_cpu_s: float
    compile_wall_s: float
    compile_cpu_s: float
    memory: Memory | None
    hbm_bytes: int | None
    refused: str | None = None

    @property
    def fits(self) -> bool | None:
        """Whether the program fits the chip's usable HBM per device; None without a chip to compare with."""
        if self.refused is not None:
            return False
        if self.hbm_bytes is None:
            return None
        return self.memory.peak <= self.hbm_bytes

    def summary(self) -> str:
        """A few lines for a terminal: seconds, per-device GiB, fits."""
        head = (f"{self.target} ({self.devices} devices): lower {self.lower_wall_s:.1f} s wall / "
                f"{self.lower_cpu_s:.1f} s CPU, compile {self.compile_wall_s:.1f} s wall / "
                f"{self.compile_cpu_s:.1f} s CPU")
        hbm = "" if self.hbm_bytes is None else f" of {self.hbm_bytes / GiB:.2f} GiB HBM"
        if self.memory is None:
            return f"{head}\n  refused by the compiler{hbm}: {self.refused}"
        m = self.memory
        verdict = {True: ": fits", False: ": does NOT fit", None: ""}[self.fits]
        return (f"{head}\n  per device GiB: arguments {m.arguments / GiB:.3f}, outputs {m.outputs / GiB:.3f}, "
                f"aliased {m.aliased / GiB:.3f}, temporaries {m.temporaries / GiB:.3f}, code {m.code / GiB:.3f}"
                f" -> peak {m.peak / GiB:.3f}{hbm}{verdict}")


def _chip(chip: Chip | str | None, target: Target) -> Chip | None:
    if isinstance(chip, str):
        if chip not in CHIPS:
            raise ConfigError(f"unknown chip {chip!r}; known: {', '.join(CHIPS)}")
        return CHIPS[chip]
    return chip or target.chip


def _uncached(fn: Callable) -> Callable:
    """A new function object calling fn: JAX caches traces, lowerings and executables by the function, so a
    repeated report of the same fn would otherwise measure a cache hit (~0 s) instead of a compile."""
    def call(*args):
        return fn(*args)

    call.__name__ = call.__qualname__ = getattr(fn, "__name__", "fn")
    return call


def _clock() -> tuple[float, float]:
    t = os.times()
    return time.perf_counter(), time.process_time() + t.children_user + t.children_system


def compile_report(fn: Callable, args: Sequence[Any], in_shardings: Any = None, out_shardings: Any = None,
                   target: Target | str = "cpu", *, donate_argnums: int | Sequence[int] = (),
                   static_argnums: int | Sequence[int] = (), chip: Chip | str | None = None) -> Report:
    """Lowers and compiles `jax.jit(fn, in_shardings=..., out_shardings=..., donate_argnums=...)` for `args`
    (pytrees of `jax.ShapeDtypeStruct`, with shardings on `target.mesh(...)`; in_shardings None takes them from
    the args, out_shardings None lets XLA choose) and reports seconds and per-device memory.

    chip overrides the HBM compared with (e.g. "h100" or "v5e" for a CPU compile). A TPU compile refused for
    lack of HBM returns a report with memory None and fits False; other compile errors propagate.
    """
    target = compile_target(target) if isinstance(target, str) else target
    chip = _chip(chip, target)
    kwargs = {k: v for k, v in (("in_shardings", in_shardings), ("out_shardings", out_shardings)) if v is not None}
    jitted = jax.jit(_uncached(fn), donate_argnums=donate_argnums, static_argnums=static_argnums, **kwargs)
    wall0, cpu0 = _clock()
    lowered = jitted.lower(*args)
    wall1, cpu1 = _clock()
    memory, refused = None, None
    try:
        stats = lowered.compile().memory_analysis()
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        refused = str(e).strip().splitlines()[0]
    else:
        if stats is None:
            raise RSDError(f"the {target.platform} compiler of this jaxlib gives no memory analysis")
        memory = Memory.from_analysis(stats)
    wall2, cpu2 = _clock()
    return Report(target.name, len(target.devices), wall1 - wall0, cpu1 - cpu0, wall2 - wall1, cpu2 - cpu1,
                  memory, chip.hbm_bytes if chip else None, refused)


@dataclasses.dataclass(frozen=True)
class BatchSearch:
    """The outcome of a search for the largest batch that fits (rsd_jax.capacity): largest (None: not even `low`
    fits), smallest_failing (None: `high` fits), exact (no untested multiple between them), and every probe's
    report in the order compiled."""

    largest: int | None
    smallest_failing: int | None
    exact: bool
    probes: tuple[tuple[int, Report], ...]


def bisect_largest(fits: Callable[[int], bool], low: int, high: int, *, multiple: int = 1,
                   max_probes: int = 8) -> tuple[int | None, int | None, bool]:
    """(largest n that fits, smallest that does not, exact) over the multiples of `multiple` in [low, high],
    for a `fits` that holds up to some n and fails above it; calls `fits` at most max_probes times."""
    if multiple < 1 or max_probes < 2:
        raise ConfigError(f"bisection needs multiple >= 1 and max_probes >= 2 (got {multiple}, {max_probes})")
    lo, hi = -(-low // multiple), high // multiple  # in units of `multiple`
    if lo > hi:
        raise ConfigError(f"no multiple of {multiple} between low={low} and high={high}")
    if not fits(lo * multiple):
        return None, lo * multiple, True
    if lo == hi or fits(hi * multiple):
        return hi * multiple, None, True
    probes = 2
    while hi - lo > 1 and probes < max_probes:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid * multiple) else (lo, mid)
        probes += 1
    return lo * multiple, hi * multiple, hi - lo == 1
