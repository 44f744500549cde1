"""Token-level speculative decoding (Leviathan et al. 2023; Chen et al. 2023), jitted and batched.

Each round, per live row: the draft proposes up to γ tokens (q), the target scores all of them in one
forward (p); token i is kept with probability min(1, p(x_i)/q(x_i)); at the first rejection a token is drawn
from the residual max(0, p − q) (normalised), and if all γ are kept a bonus token comes from p. Greedy
decoding is the special case where p and q are one-hot: keep while the target's argmax agrees. Rows accept
different numbers of tokens (ragged); both caches are rolled back by lowering their lengths.

`speculative_write` runs rounds until each row's step ends (a step delimiter, EOS or the cap): the target
side of RSD with speculative target steps, and (with no step delimiters) plain speculative decoding.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from rsd_jax.cache import KVCache
from rsd_jax.decoding.generator import (Rows, Seat, Step, StepRules, catch_up, commit, step_ends, token_logits,
                                        write_step)
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.sampling import token_probs
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.decoding.usage import Usage

if TYPE_CHECKING:
    from rsd_jax.engine import Engine


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Round:
    tokens: jax.Array  # [B, T] with the round's tokens committed
    length: jax.Array  # [B]
    n_new: jax.Array  # [B] tokens committed this round
    ended_eos: jax.Array  # [B]
    ended_stop: jax.Array  # [B]
    proposed: jax.Array  # [B] draft tokens proposed
    kept: jax.Array  # [B] draft tokens kept
    draft_cache: KVCache
    target_cache: KVCache
    draft_usage: Usage
    target_usage: Usage


def first_false(ok: jax.Array) -> jax.Array:
    """Index of the first False in each row of ok [B, G] (G if none): the number of leading Trues."""
    return jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=1), axis=1)


def speculative_round(draft: Seat, target: Seat, at: Rows, *, key: jax.Array, rules: StepRules, gamma: int,
                      step_start: jax.Array | None = None) -> Round:
    """One propose / verify round. Commits between 1 and min(γ + 1, room) tokens per active row, cut after
    the first EOS or end of step (`step_ends`). step_start [B]: the committed length at which the row's step
    began (default: `length`, the round starts the step). rules.max_step_tokens is not used (γ caps a round)."""
    tokens, length, active, room = at.tokens, at.length, at.active, at.room
    tables, sampling, chunk = rules.tables, rules.sampling, rules.chunk
    batch = tokens.shape[0]
    k_draft, k_accept, k_residual = jax.random.split(key, 3)
    d = write_step(draft, dataclasses.replace(at, room=jnp.minimum(room, gamma)), key=k_draft,
                   rules=StepRules(tables.without_ends(), sampling, gamma, chunk), record_probs=True)

    target_cache, _, target_usage = catch_up(target.model, target.cache, view=tokens, upto=length - 1, active=active,
                                            chunk=chunk, usage=target.usage)
    target_cache = target_cache.with_lengths(jnp.where(active, length - 1, target_cache.lengths))
    last = jnp.take_along_axis(tokens, jnp.maximum(length - 1, 0)[:, None], axis=1)
    n_in = jnp.where(active, d.length + 1, 0)
    out = target.model.backbone(jnp.concatenate([last, d.tokens], axis=1), target_cache.lengths, target_cache, n_in)
    target_usage = target_usage.add_forward(target.model.config, target_cache.lengths, n_in, gamma + 1,
                                          target_cache.capacity, gamma + 1)
    p = token_probs(sampling, token_logits(target.model, out.hidden, tables))  # [B, γ+1, V]
    q = d.probs  # [B, γ, V]
    p_x = jnp.take_along_axis(p[:, :gamma], d.tokens[..., None], axis=2)[..., 0]
    q_x = jnp.take_along_axis(q, d.tokens[..., None], axis=2)[..., 0]
    u = 1.0 - jax.random.uniform(k_accept, (batch, gamma))  # (0, 1]
    proposed_mask = jnp.arange(gamma)[None, :] < d.length[:, None]
    kept = jnp.minimum(first_false((u * q_x <= p_x) & proposed_mask), d.length)

    rows = jnp.arange(batch)
    p_j = p[rows, kept]
    q_j = jnp.where((kept < d.length)[:, None], q[rows, jnp.minimum(kept, gamma - 1)], 0.0)
    residual = jnp.maximum(p_j - q_j, 0.0)
    residual = jnp.where(jnp.sum(residual, -1, keepdims=True) > 0, residual, p_j)
    if sampling.greedy:
        extra = jnp.argmax(residual, axis=-1).astype(jnp.int32)
    else:
        extra = jax.random.categorical(k_residual, jnp.log(residual), axis=-1).astype(jnp.int32)

    j = jnp.arange(gamma + 1)[None, :]
    padded = jnp.pad(d.tokens, ((0, 0), (0, 1)))
    new = jnp.where(j < kept[:, None], padded, jnp.where(j == kept[:, None], extra[:, None], 0))  # [B, γ+1]
    n_new = jnp.minimum(kept + 1, room)
    previous = jnp.concatenate([last, new[:, :-1]], axis=1)  # [B, γ+1] the token before each new one
    step_start = length if step_start is None else step_start
    stop = step_ends(tables, previous, new, first=(j == 0) & (length == step_start)[:, None])
    ends = (tables.eos[new] | stop) & (j < n_new[:, None])
    n_new = jnp.where(active, jnp.minimum(n_new, first_false(~ends) + 1), 0)
    at_last = jnp.maximum(n_new - 1, 0)
    last_new = new[rows, at_last]
    new_length = length + n_new
    return Round(
        tokens=commit(tokens, length, new, n_new), length=new_length, n_new=n_new,
        ended_eos=active & tables.eos[last_new], ended_stop=active & stop[rows, at_last],
        proposed=jnp.where(active, d.length, 0), kept=jnp.where(active, jnp.minimum(kept, n_new), 0),
        draft_cache=d.cache.with_lengths(jnp.where(active, jnp.minimum(d.cache.lengths, new_length - 1),
                                                   d.cache.lengths)),
        target_cache=out.cache.with_lengths(jnp.where(active, new_length - 1, target_cache.lengths)),
        draft_usage=d.usage, target_usage=target_usage)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Speculating:
    """`speculative_write`'s loop state: one round per iteration for every live row."""

    tokens: jax.Array  # [B, T] committed tokens, the rounds' included
    length: jax.Array  # [B]
    live: jax.Array  # [B] bool rows whose step has not ended
    eos: jax.Array  # [B] bool
    stop: jax.Array  # [B] bool
    kept: jax.Array  # [B] draft tokens kept so far
    draft_cache: KVCache
    target_cache: KVCache
    draft_usage: Usage
    target_usage: Usage
    key: jax.Array


def speculative_write(draft: Seat, target: Seat, at: Rows, *, key: jax.Array, rules: StepRules,
                      gamma: int) -> tuple[Step, KVCache, Usage, jax.Array]:
    """Writes one step per active row with speculative rounds until a delimiter, EOS or its room is spent.

    Returns the target's Step (tokens [B, max_step_tokens]), the draft cache and usage, and the draft
    tokens kept [B] (those the target did not have to decode itself).
    """
    tokens, length, active, max_step_tokens = at.tokens, at.length, at.active, rules.max_step_tokens
    room = jnp.minimum(at.room, max_step_tokens)
    batch = tokens.shape[0]
    no = jnp.zeros((batch,), bool)
    init = Speculating(tokens=tokens, length=length, live=active, eos=no, stop=no, kept=jnp.zeros((batch,), jnp.int32),
                       draft_cache=draft.cache, target_cache=target.cache, draft_usage=draft.usage,
                       target_usage=target.usage, key=key)

    def body(s: Speculating) -> Speculating:
        key, sub = jax.random.split(s.key)
        r = speculative_round(Seat(draft.model, s.draft_cache, s.draft_usage),
                              Seat(target.model, s.target_cache, s.target_usage),
                              Rows(s.tokens, s.length, s.live, room - (s.length - length)), key=sub, rules=rules,
                              gamma=gamma, step_start=length)
        finished = r.ended_eos | r.ended_stop | (r.length - length >= room)
        return Speculating(tokens=r.tokens, length=r.length, live=s.live & ~finished, eos=s.eos | r.ended_eos,
                           stop=s.stop | r.ended_stop, kept=s.kept + r.kept, draft_cache=r.draft_cache,
                           target_cache=r.target_cache, draft_usage=r.draft_usage, target_usage=r.target_usage, key=key)

    s = jax.lax.while_loop(lambda s: jnp.any(s.live), body, init)
    offsets = length[:, None] + jnp.arange(max_step_tokens)[None, :]
    step_tokens = jnp.take_along_axis(s.tokens, jnp.clip(offsets, 0, s.tokens.shape[1] - 1), axis=1)
    n = s.length - length
    step_tokens = jnp.where(jnp.arange(max_step_tokens)[None, :] < n[:, None], step_tokens, 0)
    step = Step(tokens=step_tokens, length=n, ended_eos=s.eos, ended_stop=s.stop, nonfinite=no,
                cache=s.target_cache, usage=s.target_usage)
    return step, s.draft_cache, s.draft_usage, s.kept


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpeculativeOutput:
    tokens: jax.Array  # [B, T]
    length: jax.Array  # [B]
    prompt_length: jax.Array  # [B]
    ended_eos: jax.Array  # [B]
    draft_kept: jax.Array  # [B] tokens taken from the draft's proposals
    draft: Usage
    target: Usage


def speculative_decode_impl(engine: "Engine", *, prompts: Prompts, key: jax.Array, spec: DecodeSpec,
                            gamma: int = 4) -> SpeculativeOutput:
    """Speculative decoding of whole responses: the target's distribution (its greedy output when greedy)."""
    batch, t_cap = prompts.tokens.shape
    no_steps = engine.tables.without_steps()
    step, _, draft_usage, kept = speculative_write(
        Seat(engine.draft, engine.draft.init_cache(batch, t_cap), Usage.zeros(batch)),
        Seat(engine.target, engine.target.init_cache(batch, t_cap), Usage.zeros(batch)),
        Rows(prompts.tokens, prompts.length, prompts.length > 0, spec.end_of(prompts.length) - prompts.length),
        key=key, rules=StepRules(no_steps, spec.sampling, spec.max_new_tokens, spec.chunk), gamma=gamma)
    return SpeculativeOutput(tokens=commit(prompts.tokens, prompts.length, step.tokens, step.length),
                             length=prompts.length + step.length, prompt_length=prompts.length,
                             ended_eos=step.ended_eos, draft_kept=kept, draft=draft_usage, target=step.usage)


speculative_decode = jax.jit(speculative_decode_impl, static_argnames=("spec", "gamma"))
