"""Counting XLA compilations as JAX itself reports them (its monitoring events), not by any cache of ours.

    with compilations() as count:
        sweep()
    assert count() == 1

Every backend compilation JAX performs in the block is counted: jit's cache misses, ahead-of-time `.compile()`
calls, and the small programs eager operations compile the first time they meet a shape.
"""

from __future__ import annotations

import contextlib
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
