"""Branches that update their operand in place: `when` and `switch` for loop states that hold KV caches.

A `lax.cond` or `lax.switch` branch cannot return a buffer its operand owns: XLA copies every array the taken
branch updates, so a pass of a model inside a cond copies that model's whole KV cache (twice: keys and values) even
when it writes one token of a few rows. A `lax.while_loop` carries its state in the same buffers from trip to trip;
a loop of at most one trip is a branch whose operand is updated in place. `when` and `switch` are such loops.

The branch must compute its result from the operand it is given (a buffer it closes over instead is copied into
the loop's state).
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import jax
import jax.numpy as jnp

State = TypeVar("State")


def when(pred: jax.Array, f: Callable[[State], State], operand: State) -> State:
    """f(operand) if pred [] bool else operand, as a loop of at most one trip (f keeps the operand's structure)."""
    def body(carry):
        _, state = carry
        return jnp.bool_(False), f(state)

    return jax.lax.while_loop(lambda carry: carry[0], body, (jnp.asarray(pred, bool), operand))[1]


def switch(index: jax.Array, branches: Sequence[Callable[[State], State]], operand: State) -> State:
    """branches[index](operand) (index [] int32 in range; each branch keeps the operand's structure): one `when`
    per branch, the others skipped."""
    if len(branches) == 1:
        return branches[0](operand)
    for i, branch in enumerate(branches):
        operand = when(index == i, branch, operand)
    return operand
