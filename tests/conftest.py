"""Test set-up: eight fake CPU devices (for the sharding tests) before JAX is imported, float32 matmuls.

The eight devices are threads of one process; on a loaded 2-core machine a collective can wait for its slowest thread
far longer than XLA's default 40 s before it aborts the process, so the tests give collectives ten minutes."""

import os

PATIENT_COLLECTIVES = "--xla_cpu_collective_call_terminate_timeout_seconds=600 --xla_cpu_collective_timeout_seconds=600"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {PATIENT_COLLECTIVES}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
