"""A slow, obviously correct RSD on the host, for tests only.

Plain Python over one row at a time; every token comes from a full forward over the whole sequence (no KV
cache), the PRM scores each step by a full forward over its whole view; greedy sampling and the binary
threshold, so every decision is deterministic. The jitted loop must reproduce it token for token.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.models.model import Model, full_forward


@dataclasses.dataclass(frozen=True)
class HostTables:
    stop_ids: frozenset[int]
    eos_ids: frozenset[int]
    prm_text: dict[int, tuple[int, ...]]  # stop token -> its text part, tokenised on its own
    delimiter: int
    vocab_size: int | None = None  # tokens that may be drawn (the tokenizer's); None: every row of the LM head
    # the delimiter split over two tokens, per split point k: tokens ending with its head, tokens starting with the
    # rest, and {(k, token): the PRM's ids of the token's text before the head}; split_stop: steps end there
    split_ends: tuple[frozenset[int], ...] = ()
    split_starts: tuple[frozenset[int], ...] = ()
    split_head: dict[tuple[int, int], tuple[int, ...]] = dataclasses.field(default_factory=dict)
    split_stop: bool = False

    def split_at(self, previous: int, token: int) -> int | None:
        """The first split point at which previous then token write the delimiter (None: none, or split_stop off)."""
        if not self.split_stop:
            return None
        return next((k for k, (e, s) in enumerate(zip(self.split_ends, self.split_starts))
                     if previous in e and token in s), None)


@dataclasses.dataclass
class ReferenceResult:
    tokens: list[int]  # prompt + response
    sources: list[int]  # 0 draft, 1 target, per step
    rewards: list[float]  # the draft's reward per step
    ends: list[int]  # committed length after each step


@functools.partial(jax.jit, static_argnames=())
def _full(model: Model, tokens: jax.Array):
    logits, hidden = full_forward(model, tokens)
    return logits, hidden


class _Scorer:
    """Full forwards over a fixed-size buffer: causal attention makes later padding irrelevant."""

    def __init__(self, capacity: int):
        self.capacity = capacity

    def _run(self, model: Model, seq: list[int]):
        buf = np.zeros((1, self.capacity), np.int32)
        buf[0, :len(seq)] = seq
        return _full(model, jnp.asarray(buf))

    def next_token(self, model: Model, seq: list[int], vocab_size: int | None = None) -> int:
        logits, _ = self._run(model, seq)
        return int(np.argmax(np.asarray(logits[0, len(seq) - 1])[:vocab_size]))

    def reward(self, prm: Model, seq: list[int]) -> float:
        _, hidden = self._run(prm, seq)
        return float(prm.rewards(hidden[0, len(seq) - 1]))


def prm_step_view(step: list[int], tables: HostTables) -> list[int]:
    """The PRM's view of one generated step: body + text part of its last token + delimiter (a step ended by the
    split delimiter: all but its last two tokens + the head of the first of them + delimiter)."""
    last = step[-1]
    k = tables.split_at(step[-2], last) if len(step) >= 2 else None
    if k is not None:
        return step[:-2] + list(tables.split_head[(k, step[-2])]) + [tables.delimiter]
    if last in tables.stop_ids:
        tail = list(tables.prm_text[last])
    elif last in tables.eos_ids:
        tail = []
    else:
        tail = [last]
    return step[:-1] + tail + [tables.delimiter]


def _write_step(scorer: _Scorer, model: Model, seq: list[int], cap: int, tables: HostTables) -> list[int]:
    step: list[int] = []
    while True:
        token = scorer.next_token(model, seq + step, tables.vocab_size)
        step.append(token)
        split = len(step) >= 2 and tables.split_at(step[-2], token) is not None
        if token in tables.eos_ids or token in tables.stop_ids or split or len(step) >= cap:
            return step


def reference_rsd(draft: Model, target: Model, prm: Model, prompt: list[int], prm_prompt: list[int],
                  tables: HostTables, *, delta: float, max_new_tokens: int, max_steps: int,
                  max_step_tokens: int, capacity: int, budget_includes_prompt: bool = False,
                  prm_view: Callable[[list[int]], list[int]] | None = None) -> ReferenceResult:
    """Greedy RSD with the binary threshold δ for one prompt.

    prm_view: the PRM's ids of one generated step (default: the tables' view, `prm_step_view`; pass
    `rsd_jax.tokenizer.StepTextEncoder.step_ids` for the official text protocol).
    """
    scorer = _Scorer(capacity)
    view = prm_view or (lambda step: prm_step_view(step, tables))
    end = max_new_tokens if budget_includes_prompt else len(prompt) + max_new_tokens
    seq, prm_seq = list(prompt), list(prm_prompt)
    result = ReferenceResult(tokens=seq, sources=[], rewards=[], ends=[])
    while True:
        cap = min(max_step_tokens, end - len(seq))
        proposal = _write_step(scorer, draft, seq, cap, tables)
        reward = scorer.reward(prm, prm_seq + view(proposal))
        if reward >= delta:
            step, source = proposal, 0
        else:
            step, source = _write_step(scorer, target, seq, cap, tables), 1
        seq += step
        prm_seq += view(step)
        result.sources.append(source)
        result.rewards.append(reward)
        result.ends.append(len(seq))
        if step[-1] in tables.eos_ids or len(seq) >= end or len(result.sources) >= max_steps:
            return result
