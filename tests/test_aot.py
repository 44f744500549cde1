"""Ahead-of-time compile reports: targets, per-device bytes, the batch bisection, TPU topologies (with libtpu)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from rsd_jax import aot
from rsd_jax.errors import ConfigError

needs_libtpu = pytest.mark.skipif(not aot.tpu_compiler_available(),
                                  reason="libtpu is not installed (pip install 'rsd_jax[tpu-aot]'): "
                                         "TPU topology compiles cannot run here")


def sds(mesh, shape, spec, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def test_cpu_report_counts_per_device_bytes():
    target = aot.compile_target("cpu:8")
    mesh = target.mesh(model=4)  # data 2 x model 4
    x, w = sds(mesh, (16, 64), P("data", None)), sds(mesh, (64, 128), P(None, "model"))
    out = NamedSharding(mesh, P("data", "model"))
    report = aot.compile_report(lambda x, w: jnp.tanh(x @ w), (x, w), None, out, target)
    m = report.memory
    assert (report.target, report.devices, report.refused) == ("cpu:8", 8, None)
    assert m.arguments == 16 * 64 * 4 // 2 + 64 * 128 * 4 // 4  # each device holds its shards only
    assert m.outputs == 16 * 128 * 4 // 8 and m.aliased == 0
    assert m.peak == m.arguments + m.outputs + m.temporaries + m.code
    assert report.compile_wall_s > 0 and report.compile_cpu_s >= 0
    assert report.hbm_bytes is None and report.fits is None  # a CPU target has no HBM to compare with
    compared = aot.compile_report(lambda x, w: jnp.tanh(x @ w), (x, w), None, out, target, chip="v5e")
    assert compared.hbm_bytes == aot.CHIPS["v5e"].hbm_bytes and compared.fits
    assert "of 15.75 GiB HBM: fits" in compared.summary()


def test_donated_argument_is_aliased():
    mesh = aot.compile_target("cpu").mesh()
    x = sds(mesh, (8, 256), P("data", None))
    m = aot.compile_report(lambda x: x + 1, (x,), None, x.sharding, "cpu", donate_argnums=0).memory
    assert m.arguments == m.outputs == m.aliased == 256 * 4
    assert m.peak == 256 * 4 + m.temporaries + m.code


@pytest.mark.parametrize("name", ["gpu", "cpu:x", "cpu:0", "v5e", "v7:2x2", "v5e-8", "tpu:2x4"])
def test_bad_target_names(name):
    with pytest.raises(ConfigError, match="needs at least one device|accepted forms: cpu, cpu:N"):
        aot.compile_target(name)


def test_too_many_cpu_devices_says_how():
    with pytest.raises(ConfigError, match="needs 64 CPU devices.*xla_force_host_platform_device_count=64"):
        aot.compile_target("cpu:64")
    aot.use_cpu_devices(8)  # already 8 (conftest): a no-op
    with pytest.raises(ConfigError, match="already initialised"):
        aot.use_cpu_devices(64)


@pytest.mark.parametrize("limit,expected", [(0, (None, 8, True)), (8, (8, 16, True)), (100, (96, 104, True)),
                                            (1000, (256, None, True))])
def test_bisect_largest(limit, expected):
    calls = []

    def fits(n):
        calls.append(n)
        return n <= limit

    assert aot.bisect_largest(fits, 8, 256, multiple=8, max_probes=10) == expected
    assert all(n % 8 == 0 for n in calls) and len(calls) <= 10 and len(set(calls)) == len(calls)


def test_bisect_stops_at_the_probe_cap():
    largest, failing, exact = aot.bisect_largest(lambda n: n <= 1000, 1, 4096, max_probes=4)
    assert largest <= 1000 < failing and not exact


@needs_libtpu
def test_tpu_topology_compile():
    target = aot.compile_target("v5e:2x4")
    assert (target.platform, len(target.devices), target.chip) == ("tpu", 8, aot.CHIPS["v5e"])
    assert {d.device_kind for d in target.devices} == {"TPU v5 lite"}
    mesh = target.mesh(model=4)
    assert dict(mesh.shape) == {"data": 2, "model": 4}
    x, w = sds(mesh, (16, 256), P("data", None), jnp.bfloat16), sds(mesh, (256, 512), P(None, "model"), jnp.bfloat16)
    report = aot.compile_report(lambda x, w: x @ w, (x, w), None, NamedSharding(mesh, P("data", "model")), target)
    assert report.memory.arguments == (16 * 256 // 2 + 256 * 512 // 4) * 2
    assert report.memory.code > 0 and report.fits
    assert len(aot.compile_target("v5p:1x1x1").devices) == 1
    with pytest.raises(ConfigError, match="libtpu rejects compile target 'v5e:3x3'"):
        aot.compile_target("v5e:3x3")


@needs_libtpu
@pytest.mark.parametrize("name", ["v4:2x2x1", "v5e:2x4", "v5p:2x2x1", "v6e:2x4"])
def test_hbm_table_matches_the_tpu_compiler(name):
    """A program too large for one device: the compiler refuses it and names the HBM it had (CHIPS records it)."""
    target = aot.compile_target(name)
    mesh = jax.make_mesh((1, 1), ("data", "model"), devices=target.devices[:1])
    huge = sds(mesh, (256, 2**30), P())  # 1 TiB of arguments
    report = aot.compile_report(lambda x: x[0, :2], (huge,), target=target)
    assert report.memory is None and report.fits is False
    available = float(re.search(r"available HBM \(([\d.]+)G\)", report.refused).group(1))
    assert available == pytest.approx(target.chip.hbm_bytes / aot.GiB, abs=0.01)
