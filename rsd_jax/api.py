"""The public Python API: `generate(engine, prompts, method=...)` runs RSD (or a baseline) on text prompts.

    from rsd_jax.api import RSDModels, generate
    from rsd_jax.data.char_tokenizer import CharTokenizer
    from rsd_jax.engine import Engine
    from rsd_jax.methods import RSD
    from rsd_jax.weights import load_model
    models = RSDModels(draft=load_model("checkpoints/arith_draft"), target=load_model("checkpoints/arith_target"),
                       prm=load_model("checkpoints/arith_prm"), tokenizer=CharTokenizer())
    for r in generate(Engine.create(models), ["37*6+4-3+8\n"], method=RSD(delta=0.85)):
        print(r.text, [(s.source, s.reward) for s in r.steps], r.accounting["flops_ratio_vs_target"])

Host side only: tokenise, lay the batch out in bucketed buffers, and hand it to the method, which calls its
jitted loop once and turns the arrays it returns into per-prompt records (rsd_jax.results).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.decoding.prm_view import PRMTextView
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine, RSDModels
from rsd_jax.errors import InputError
from rsd_jax.mesh_axes import DATA
from rsd_jax.methods import RSD, Method
from rsd_jax.results import GenerationResult, StepRecord
from rsd_jax.tokenizer import build_prm_stop_table, prm_prompt_ids

__all__ = ["Engine", "GenerationResult", "RSDModels", "StepRecord", "encode_prompts", "generate"]


def _bucket(n: int, minimum: int = 16) -> int:
    return max(minimum, 1 << (max(n, 1) - 1).bit_length())


def buffer_widths(spec: DecodeSpec, prompt_tokens: int, prm_prompt_tokens: int, growth: int,
                  prm_excess: int | None = None) -> tuple[int, int]:
    """(T, Tp): the committed-token buffer of the draft and target (and their caches' capacity), and the PRM's
    view buffer, for a batch whose longest prompt and PRM prompt have these many tokens.

    Prompts are bucketed to a power of two (one compilation per bucket); with the budget counting the prompt, T is
    the budget itself. The PRM's buffer holds its prompt, the response and `growth` more ids per step
    (rsd_jax.decoding.prm_view); with the budget counting the prompt, a row's response is at most the budget less
    its prompt, so the PRM needs the budget plus `prm_excess` (the most a row's PRM prompt exceeds its prompt,
    rounded up to 64; None: the PRM prompt's bucket) plus the steps' growth.
    """
    steps = spec.max_steps * growth
    if not spec.budget_includes_prompt:
        return _bucket(prompt_tokens) + spec.max_new_tokens, _bucket(prm_prompt_tokens) + spec.max_new_tokens + steps
    excess = _bucket(prm_prompt_tokens) if prm_excess is None else -(-max(prm_excess, 0) // 64) * 64
    return spec.max_new_tokens, spec.max_new_tokens + excess + steps


def prompt_shapes(spec: DecodeSpec, rows: int, *, prompt_tokens: int = 512, prm_prompt_tokens: int = 512,
                  growth: int = PRMTextView.growth_per_step, prm_excess: int = 0) -> Prompts:
    """The buffers of a batch of `rows` prompts whose longest (and longest PRM prompt) has these many tokens, as
    ShapeDtypeStructs: for compiling ahead of time without data (`buffer_widths`)."""
    t_cap, tp_cap = buffer_widths(spec, prompt_tokens, prm_prompt_tokens, growth, prm_excess)
    ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)  # noqa: E731
    return Prompts(tokens=ints(rows, t_cap), length=ints(rows), prm_tokens=ints(rows, tp_cap), prm_length=ints(rows))


def view_growth_per_step(models: RSDModels) -> int:
    """At most how many more ids than generated tokens one step takes in the PRM's view (its buffer's slack)."""
    if not models.prm_view_in_graph:
        return PRMTextView.growth_per_step
    return max(1, int(np.max(build_prm_stop_table(models.tokenizer, models.delimiter).text_len, initial=0)))


def encode_prompts(models: RSDModels, prompts: Sequence[str], questions: Sequence[str] | None,
                   spec: DecodeSpec, batch_multiple: int = 1) -> Prompts:
    """Tokenises prompts (and the PRM's raw questions) into bucketed, right-padded buffers.

    The batch is padded with empty rows (length 0: done from the start) to a multiple of batch_multiple.
    """
    if not prompts:
        raise InputError("no prompts given")
    questions = list(questions) if questions is not None else [p.strip() for p in prompts]
    tok = models.tokenizer
    ids = [([tok.bos_id] if tok.bos_id is not None else []) + tok.encode(p) for p in prompts]
    prm_ids = [prm_prompt_ids(models.prm_tok, q) for q in questions]
    for i, seq in enumerate(ids):
        check_context(models, spec, i, len(seq), len(prm_ids[i]))
    excess = max(len(p) - len(i) for i, p in zip(ids, prm_ids))
    t_cap, tp_cap = buffer_widths(spec, max(map(len, ids)), max(map(len, prm_ids)), view_growth_per_step(models),
                                  excess)
    batch = -(-len(ids) // batch_multiple) * batch_multiple
    tokens = np.zeros((batch, t_cap), np.int32)
    prm_tokens = np.zeros((batch, tp_cap), np.int32)
    length = np.zeros((batch,), np.int32)
    prm_length = np.zeros((batch,), np.int32)
    for i, (seq, pseq) in enumerate(zip(ids, prm_ids)):
        tokens[i, :len(seq)], length[i] = seq, len(seq)
        prm_tokens[i, :len(pseq)], prm_length[i] = pseq, len(pseq)
    return Prompts(tokens=jnp.asarray(tokens), length=jnp.asarray(length),
                   prm_tokens=jnp.asarray(prm_tokens), prm_length=jnp.asarray(prm_length))


def check_context(models: RSDModels, spec: DecodeSpec, i: int, prompt_len: int, prm_prompt_len: int) -> None:
    """Refuses a prompt that leaves no token of the budget, or whose budget runs past a model's context
    (max_position_embeddings, or the models.*.max_context override): an InputError naming the limit."""
    if prompt_len == 0:
        raise InputError(f"prompt {i} is empty")
    budget = spec.max_new_tokens
    if spec.budget_includes_prompt and prompt_len >= budget:
        raise InputError(f"prompt {i} has {prompt_len} tokens, which leaves nothing of the budget of prompt + response "
                         f"(decoding.max_new_tokens={budget} with decoding.budget_includes_prompt)")
    end = budget if spec.budget_includes_prompt else prompt_len + budget
    for role in ("draft", "target"):
        context = getattr(models, role).config.max_position_embeddings
        if end > context:
            raise InputError(f"prompt {i} has {prompt_len} tokens; with decoding.max_new_tokens={budget} it exceeds the "
                             f"models' context: position {end} is past the {role}'s {context} (raise "
                             f"models.{role}.max_context if the model can read further, or lower the budget)")
    prm_end = prm_prompt_len + (end - prompt_len) + spec.max_steps  # the steps' text and one delimiter each
    context = models.prm.config.max_position_embeddings
    if prm_end > context:
        raise InputError(f"prompt {i}: the PRM's view can reach position {prm_end} (its question, the response budget "
                         f"and a delimiter per step), past the PRM's context of {context} (raise "
                         f"models.prm.max_context, or lower decoding.max_new_tokens or decoding.max_steps)")


def generate(engine: Engine, prompts: Sequence[str], *, method: Method = RSD(),
             decoding: DecodeSpec = DecodeSpec(), questions: Sequence[str] | None = None, seed: int = 0,
             pad_batch_to: int = 1) -> list[GenerationResult]:
    """Decodes each prompt with `method` (rsd_jax.methods: RSD, TargetOnly, DraftOnly, Speculative, BestOfN,
    Majority, Beam) under the decoding settings `decoding` (budgets, sampling, chunk; a method may set its own part
    of them: RSD its weighting, BestOfN / Majority / Beam the temperature of their samples).

    questions: the raw question of each prompt, as the PRM reads it (default: the prompt, stripped).
    pad_batch_to: pad the batch with empty rows to a multiple of this (one compilation for every batch); on an
    engine with a mesh, also to a multiple of its "data" axis.
    """
    spec = method.spec(decoding)
    multiple = math.lcm(pad_batch_to, engine.mesh.shape[DATA]) if engine.mesh is not None else pad_batch_to
    batch = encode_prompts(engine.models, prompts, questions, spec, batch_multiple=multiple)
    return method.run(engine, batch, prompts=prompts, key=jax.random.key(seed), spec=spec)
