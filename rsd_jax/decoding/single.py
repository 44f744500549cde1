"""Single-model decoding (target-only, draft-only) through the step generator, with no step overhead.

One call of the generator with no step delimiters writes the whole response: the baselines of RSD, and the
reference for its invariants (accept-everything RSD = the draft's decoding; reject-everything = the target's).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax

from rsd_jax.decoding.generator import Rows, Seat, StepRules, TokenTables, commit, write_step
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.decoding.usage import Usage
from rsd_jax.models.model import Model
from rsd_jax.placement import on_mesh

if TYPE_CHECKING:
    from rsd_jax.engine import Engine


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SingleOutput:
    tokens: jax.Array  # [B, T]
    length: jax.Array  # [B]
    prompt_length: jax.Array  # [B]
    ended_eos: jax.Array  # [B] bool
    nonfinite: jax.Array  # [B] bool
    usage: Usage


def single_decode_impl(model: Model, *, prompts: Prompts, tables: TokenTables, key: jax.Array,
                       spec: DecodeSpec) -> SingleOutput:
    """Decodes each row up to its token budget (spec.end_of) with one model, stopping rows at EOS."""
    batch, t_cap = prompts.tokens.shape
    no_steps = tables.without_steps()
    step = write_step(Seat(model, model.init_cache(batch, t_cap), Usage.zeros(batch)),
                      Rows(prompts.tokens, prompts.length, prompts.length > 0,
                           spec.end_of(prompts.length) - prompts.length),
                      key=key, rules=StepRules(no_steps, spec.sampling, spec.max_new_tokens, spec.chunk))
    return SingleOutput(tokens=commit(prompts.tokens, prompts.length, step.tokens, step.length),
                        length=prompts.length + step.length, prompt_length=prompts.length,
                        ended_eos=step.ended_eos, nonfinite=step.nonfinite, usage=step.usage)


decode_model = jax.jit(single_decode_impl, static_argnames=("spec",))
"""`single_decode_impl` jitted: one model, outside any engine (benchmarks against other libraries)."""


def single_decode(engine: "Engine", *, role: str, prompts: Prompts, key: jax.Array, spec: DecodeSpec) -> SingleOutput:
    """One of the engine's models ("draft" or "target") alone over the batch, on the engine's mesh when it has
    one: target-only and draft-only decoding, the baselines and the references of RSD's invariants."""
    with on_mesh(engine.mesh, prompts=prompts, replicated=key) as (prompts, key):
        return decode_model(getattr(engine, role), prompts=prompts, tables=engine.tables, key=key, spec=spec)
