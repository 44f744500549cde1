"""Step contexts and what a model writes there: the unit of the theory's per-context quantities (μ_M(z), the
draft's reward distribution at z).

A context z = (problem, the steps committed before it). `sample_steps` has the draft or the target write k steps
at each context (the run's sampling; the RSD loop at δ = 0 with one step, the writer as its draft), and
`rewards_in_context` scores a step at its context with the PRM on the host, from its text (the protocol's view:
BOS + question + "\\n", each step's text then the delimiter), so that a context's samples are scored exactly as the
loop scores steps.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.data.item import Item
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine, RSDModels
from rsd_jax.methods import RSD
from rsd_jax.models.model import full_forward
from rsd_jax.theory.decoded import generate
from rsd_jax.tokenizer import prm_prompt_ids, prm_step_ids

_WIDTH = 64  # the PRM's views are padded to a multiple of this (few compilations)
_ROWS = 256  # and scored this many at a time


@dataclasses.dataclass(frozen=True)
class Context:
    problem: int  # index into the experiment's items
    steps: tuple[str, ...]  # the texts of the steps committed before it (each with its delimiter)


def contexts_of(problem: int, steps: Sequence[str]) -> list[Context]:
    """The contexts at which each of a solution's steps was written: (), (s1,), (s1, s2), ..."""
    return [Context(problem, tuple(steps[:k])) for k in range(len(steps))]


def rewards_in_context(models: RSDModels, questions: Sequence[str],
                       solutions: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """The PRM's reward [n_steps] of every step of each solution (its steps' texts), in context, scored from
    scratch on the PRM's view of the whole solution."""
    tok = models.prm_tok
    views, marks = [], []
    for q, steps in zip(questions, solutions):
        ids, pos = prm_prompt_ids(tok, q), []
        for text in steps:
            ids += prm_step_ids(tok, text, models.delimiter)
            pos.append(len(ids) - 1)
        views.append(ids)
        marks.append(pos)
    score = jax.jit(lambda prm, ids: prm.rewards(full_forward(prm, ids)[1]))
    out: list[np.ndarray] = []
    for start in range(0, len(views), _ROWS):
        chunk = views[start:start + _ROWS]
        width = -(-max(map(len, chunk)) // _WIDTH) * _WIDTH
        buf = np.zeros((_ROWS, width), np.int32)
        for i, v in enumerate(chunk):
            buf[i, :len(v)] = v
        rewards = np.asarray(score(models.prm, jnp.asarray(buf)))
        out += [rewards[i, pos] for i, pos in enumerate(marks[start:start + len(chunk)])]
    return out


@dataclasses.dataclass(frozen=True)
class Samples:
    """k steps written at each of C contexts: their texts [C][k] and PRM rewards in context [C, k] (NaN where the
    writer wrote nothing)."""

    texts: list[list[str]]
    rewards: np.ndarray


def sample_steps(engine: Engine, items: Sequence[Item], contexts: Sequence[Context], *, writer: str, k: int,
                 spec: DecodeSpec, batch_size: int, seed: int) -> Samples:
    """k steps by `writer` ("draft" or "target") at each context, sampled under spec.sampling, scored in context."""
    drafting = engine if writer == "draft" else dataclasses.replace(engine, draft=engine.target)
    one_step = spec.replace(max_steps=1, record_target_reward=False)
    rows = [c for c in contexts for _ in range(k)]
    prompts = [items[c.problem].prompt + "".join(c.steps) for c in rows]
    questions = [items[c.problem].question for c in rows]
    texts: list[str] = []
    for n, start in enumerate(range(0, len(rows), batch_size)):
        results = generate(drafting, prompts[start:start + batch_size], questions=questions[start:start + batch_size],
                           method=RSD(delta=0.0), decoding=one_step, seed=seed + n, pad_batch_to=batch_size)
        texts += [r.steps[0].text if r.steps else "" for r in results]
    scored = rewards_in_context(engine.models, questions, [list(c.steps) + [t] for c, t in zip(rows, texts)])
    rewards = np.array([r[-1] if t else np.nan for r, t in zip(scored, texts)], np.float64).reshape(len(contexts), k)
    return Samples([texts[i * k:(i + 1) * k] for i in range(len(contexts))], rewards)
