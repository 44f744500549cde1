"""Best-of-N with the PRM, and the N samples that majority voting counts.

N draft samples per prompt are drawn by the RSD loop itself with every step accepted (binary δ = 0): the
draft writes each step and the PRM scores it incrementally from its own cache, exactly as in RSD, so the
samples come with per-step rewards and the same accounting. The target is never invoked.
Selection (jitted over the batch) aggregates each sample's step rewards: the last, the minimum, or the product.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import Knobs, RSDOutput
from rsd_jax.decoding.spec import DecodeSpec

if TYPE_CHECKING:
    from rsd_jax.engine import Engine

AGGREGATES = ("last", "min", "prod")


def tile_prompts(prompts: Prompts, n: int) -> Prompts:
    """Each prompt repeated n times, consecutively: row b*n + j is sample j of prompt b."""
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), prompts)


def sample_n(engine: "Engine", *, prompts: Prompts, key: jax.Array, spec: DecodeSpec, n: int) -> RSDOutput:
    """n samples per prompt from the draft, each step scored by the PRM: an RSDOutput over B*n rows (the RSD loop
    with every step accepted; the target never runs)."""
    spec = spec.replace(weighting="binary", budget=False, online_budget=False, patience=0)  # the official cut-off is RSD's alone
    return rsd_decode(engine.drafting_only(), prompts=tile_prompts(prompts, n), knobs=Knobs.accept_all(spec), key=key,
                      spec=spec)


def aggregate_rewards(out: RSDOutput, how: str) -> jax.Array:
    """One score per sample [B*n] from its step rewards."""
    steps = jnp.arange(out.trace.reward.shape[1])[None, :]
    valid = steps < out.n_steps[:, None]
    rewards = jnp.where(valid, out.trace.reward, jnp.nan)
    if how == "last":
        return jnp.take_along_axis(rewards, jnp.maximum(out.n_steps - 1, 0)[:, None], axis=1)[:, 0]
    if how == "min":
        return jnp.min(jnp.where(valid, rewards, jnp.inf), axis=1)
    if how == "prod":
        return jnp.exp(jnp.sum(jnp.where(valid, jnp.log(jnp.maximum(rewards, 1e-30)), 0.0), axis=1))
    raise ValueError(f"aggregate {how!r} is not one of {', '.join(AGGREGATES)}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BestOfNOutput:
    samples: RSDOutput  # all B*n samples
    scores: jax.Array  # [B, n]
    chosen: jax.Array  # [B] index of the chosen sample of each prompt


def best_of_n(engine: "Engine", *, prompts: Prompts, key: jax.Array, spec: DecodeSpec, n: int,
              aggregate: str = "min") -> BestOfNOutput:
    """n scored draft samples per prompt, and the one whose aggregated step rewards score highest."""
    samples = sample_n(engine, prompts=prompts, key=key, spec=spec, n=n)
    scores = aggregate_rewards(samples, aggregate).reshape(-1, n)
    chosen = jnp.argmax(jnp.nan_to_num(scores, nan=-jnp.inf), axis=1)
    return BestOfNOutput(samples=samples, scores=scores, chosen=chosen)


def majority_vote(answers: list[object]) -> object:
    """The most frequent non-None answer (ties: the one seen first); None if there is none."""
    counts: dict[object, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


