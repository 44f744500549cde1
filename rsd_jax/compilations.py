"""Counting XLA compilations as JAX itself reports them (its monitoring events), not by any cache of ours.

    with compilations() as count:
        sweep()
    assert count() == 1

Every backend compilation JAX performs in the block is counted: jit's cache misses, ahead-of-time `.compile()`
calls, and the small programs eager operations compile the first time they meet a shape.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Callable, Iterator

import jax

#: The event JAX records once per backend compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compilations() -> Iterator[Callable[[], int]]:
    """Yields a function that returns how many backend compilations happened since the block began."""
    seen = [0]

    def listener(event: str, duration_secs: float, **_) -> None:
        if event == BACKEND_COMPILE_EVENT:
            seen[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield lambda: seen[0]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def release_programs() -> None:
    """Drops every compiled program JAX holds, on a CPU backend (elsewhere: nothing). An XLA:CPU executable maps its
    kernels into memory region by region (about 1,600 regions for an RSD loop of the embedded models), and a
    process that keeps every program it compiled passes Linux's default limit of 65,530 regions after a few dozen
    (then XLA crashes in a compile). Call it where the programs compiled so far are done with, e.g. between the
    methods of an evaluation; a program needed again is compiled again (or read from the persistent cache)."""
    if jax.default_backend() == "cpu":
        jax.clear_caches()
        gc.collect()
