"""Test set-up: eight fake CPU devices (for the sharding tests) before JAX is imported, float32 matmuls, and one
compilation cache for the whole run.

The eight devices are threads of one process; on a loaded 2-core machine a collective can wait for its slowest thread
far longer than XLA's default 40 s before it aborts the process, so the tests give collectives ten minutes.

Many tests run the commands in fresh processes (decode, evaluate, train, the notebooks, killed and resumed runs), each
compiling the same loops for the embedded models: JAX's persistent compilation cache, in one folder for the run
(inherited by those processes and by every pytest-xdist worker), compiles each program once."""

import gc
import os
import tempfile
from pathlib import Path

PATIENT_COLLECTIVES = "--xla_cpu_collective_call_terminate_timeout_seconds=600 --xla_cpu_collective_timeout_seconds=600"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {PATIENT_COLLECTIVES}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"rsd_jax_tests_xla_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# the TPU-topology compiles (rsd_jax.aot, where the libtpu wheel is installed) may run in two test workers at once:
# they only compile, so libtpu's one-process-per-host lock does not apply
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


# Each compiled RSD loop maps about 1,600 memory regions (XLA:CPU's kernels), held while JAX's caches hold the
# executable. A test worker that kept every program of the suite passed Linux's default vm.max_map_count (65,530)
# and crashed inside XLA (a segfault in a compile, an abort in a cache write), at a different test each time. The
# programs of a test file are released when it ends, and sooner should one file approach the limit.
MAP_COUNT_LIMIT = 40_000


def _map_count() -> int:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux
        return 0


def _release_compiled_programs() -> None:
    jax.clear_caches()  # (rsd_jax.compilations.release_programs; not imported before the settings above)
    gc.collect()


@pytest.fixture(autouse=True, scope="module")
def release_programs_after_each_file():
    yield
    _release_compiled_programs()


@pytest.fixture(autouse=True)
def release_programs_near_the_map_limit():
    yield
    if _map_count() > MAP_COUNT_LIMIT:
        _release_compiled_programs()
