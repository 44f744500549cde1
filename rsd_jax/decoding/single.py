"""Single-model decoding (target-only, draft-only) through the step generator, with no step overhead.

One call of the generator with no step delimiters writes the whole response: the baselines of RSD, and the
reference for its invariants (accept-everything RSD = the draft's decoding; reject-everything = the target's).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.decoding.generator import TokenTables, commit, write_step
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.decoding.work import Work
from rsd_jax.models.model import Model


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SingleOutput:
    tokens: jax.Array  # [B, T]
    length: jax.Array  # [B]
    prompt_length: jax.Array  # [B]
    ended_eos: jax.Array  # [B] bool
    nonfinite: jax.Array  # [B] bool
    work: Work


def single_decode_impl(model: Model, prompts: Prompts, tables: TokenTables, key: jax.Array,
                  spec: DecodeSpec) -> SingleOutput:
    """Decodes each row up to its token budget (spec.end_of) with one model, stopping rows at EOS."""
    batch, t_cap = prompts.tokens.shape
    no_steps = dataclasses.replace(tables, stop=jnp.zeros_like(tables.stop))
    step = write_step(model, model.init_cache(batch, t_cap), prompts.tokens, prompts.length,
                      prompts.length > 0, spec.end_of(prompts.length) - prompts.length, key,
                      no_steps, sampling=spec.sampling, max_step_tokens=spec.max_new_tokens,
                      chunk=spec.chunk, work=Work.zeros(batch))
    return SingleOutput(tokens=commit(prompts.tokens, prompts.length, step.tokens, step.length),
                        length=prompts.length + step.length, prompt_length=prompts.length,
                        ended_eos=step.ended_eos, nonfinite=step.nonfinite, work=step.work)


single_decode = jax.jit(single_decode_impl, static_argnames=("spec",))
