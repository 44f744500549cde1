"""Pass traces of the RSD schedules, simulated on the host: which forward passes each model makes, over how many
rows, how many tokens per row and at what mean context, for a batch of rows replaying RowScripts
(rsd_jax.step_statistics). The roofline (rsd_jax.roofline) turns a trace into seconds.

Every model keeps, per row, a cache length and the length of its view (draft and target: the committed tokens;
PRM: its own view). A catch-up feeds what the cache misses, `chunk` tokens per pass; a write feeds the last token
and samples the next, one token per pass, as rsd_jax.decoding.generator does (a write starts from a cache holding
all but the last committed token). Three schedules:

- synchronous (rsd_jax.decoding.rsd): per iteration every live row's draft catches up and writes a step (passes:
  the longest proposal), the PRM scores every live row (chunked over the longest view it misses), and if a row
  rejected, the target catches up on the rejected rows (chunked) and writes their steps (passes: the longest
  rejected step); a rejected proposal is rolled back in the draft's and the PRM's cache.
- asynchronous (issue 26, rsd_jax.decoding.rsd): each row has a phase DRAFTING -> SCORING -> (accepted:
  DRAFTING | rejected: WAITING -> TARGET -> DRAFTING) -> DONE. One tick runs each model at most once for the rows
  in its phase, in order, each seeing the phases the previous left: the draft writes one token for every DRAFTING
  row (rows starting a step first catch up, in passes of their own); the PRM scores the SCORING rows (their views,
  chunked) and decides; the target, when at least k rows are WAITING or in its step or nothing else can advance,
  catches up the rows that waited and writes one token for all of them.
- target-only: the target catches up on the prompts, then one pass per token for the rows still writing.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from rsd_jax.errors import ConfigError
from rsd_jax.step_statistics import RowScript

MODELS = ("draft", "target", "prm")
DRAFTING, SCORING, WAITING, TARGET, DONE = "drafting", "scoring", "waiting", "target", "done"


@dataclasses.dataclass(frozen=True)
class Pass:
    """One forward of one model: `rows` rows feeding `tokens` tokens each on average, attending to `context` keys
    on average; `head_rows` of them sample a token (a write)."""

    model: str
    rows: int
    tokens: float
    context: float
    head_rows: int


class _Row:
    """A row's progress through its script (mutable, host side)."""

    def __init__(self, script: RowScript):
        self.script, self.step, self.written, self.phase = script, 0, 0, DRAFTING
        self.view = {"draft": script.prompt, "target": script.prompt, "prm": script.prm_prompt}
        self.cache = dict.fromkeys(MODELS, 0)
        self.produced = {"draft": 0, "target": 0}  # committed tokens each model wrote

    @property
    def done(self) -> bool:
        return self.step >= len(self.script.steps)

    def missing(self, model: str) -> int:
        """Tokens the model's cache must take before it can write (all but the last) or score (all)."""
        return max(0, self.view[model] - (0 if model == "prm" else 1) - self.cache[model])

    def goal(self, model: str) -> int:
        """Tokens of the current step this model writes: the proposal (draft) or the step (target)."""
        return self.script.proposals[self.step] if model == "draft" else self.script.steps[self.step]

    def commit(self, model: str) -> None:
        """The current step, written by `model`, joins every view; the next step starts."""
        length = self.script.steps[self.step]
        for m in ("draft", "target"):
            self.view[m] += length
        if model == "target":  # the PRM reads the target's step instead of the rolled-back proposal
            self.view["prm"] += length
        self.produced[model] += length
        self.step, self.written = self.step + 1, 0
        self.phase = DONE if self.done else DRAFTING

    def reject(self) -> None:
        """The proposal is rolled back: the draft keeps the committed tokens, the PRM forgets the proposal."""
        proposal = self.script.proposals[self.step]
        self.view["prm"] -= proposal
        self.cache["prm"] = min(self.cache["prm"], self.view["prm"])
        self.cache["draft"] = min(self.cache["draft"], self.view["draft"])
        self.written = 0
        self.phase = WAITING


def _feed(model: str, rows: Sequence[_Row], *, chunk: int, write: bool) -> Pass | None:
    """One pass of `model` over `rows`: a catch-up chunk where the cache misses tokens, else (write) one written
    token. Advances the caches and the rows' written counts; None when no row feeds anything."""
    fed, contexts, heads = [], [], 0
    for r in rows:
        n = min(chunk, r.missing(model))
        sampling = n == 0 and write
        n = 1 if sampling else n
        if n == 0:
            continue
        contexts.append(r.cache[model] + (n + 1) / 2)
        fed.append(n)
        r.cache[model] += n
        if sampling:
            heads += 1
            r.written += 1
            r.view[model] += 1  # the written token is in the view until the step is committed or rolled back
    if not fed:
        return None
    return Pass(model, len(fed), sum(fed) / len(fed), sum(contexts) / len(contexts), heads)


def _unview_written(row: _Row, model: str) -> None:
    """A finished write's tokens leave the model's view again (commit adds the committed step)."""
    row.view[model] -= row.written


def _catch_up(model: str, rows: list[_Row], trace: list[Pass], *, chunk: int) -> None:
    """Feeds the rows' caches what they miss, `chunk` tokens per pass, until none misses anything."""
    while p := _feed(model, rows, chunk=chunk, write=False):
        trace.append(p)


def _write_steps(model: str, rows: list[_Row], trace: list[Pass], *, chunk: int) -> None:
    """Synchronous: catch up, then write until every row wrote its step (rows that finished are masked)."""
    _catch_up(model, rows, trace, chunk=chunk)
    writing = [r for r in rows if r.goal(model) > 0]
    while writing:
        trace.append(_feed(model, writing, chunk=chunk, write=True))
        writing = [r for r in writing if r.written < r.goal(model)]
    for r in rows:
        _unview_written(r, model)


def synchronous(scripts: Sequence[RowScript], *, chunk: int) -> list[Pass]:
    """The pass trace of today's lock-step loop for one batch."""
    rows = [_Row(s) for s in scripts]
    trace: list[Pass] = []
    while live := [r for r in rows if not r.done]:
        _write_steps("draft", live, trace, chunk=chunk)
        for r in live:
            r.view["prm"] += r.script.proposals[r.step]
        _catch_up("prm", live, trace, chunk=chunk)
        rejected = [r for r in live if not r.script.accepted[r.step]]
        for r in rejected:
            r.reject()
        if rejected:
            _write_steps("target", rejected, trace, chunk=chunk)
        for r in live:
            r.commit("target" if r.phase == WAITING else "draft")
    return trace


def _write_token(model: str, rows: list[_Row], trace: list[Pass], *, chunk: int) -> list[_Row]:
    """Asynchronous: the rows starting a step catch up, then every row writes one token; returns the rows whose
    step ended (the written tokens leave the view again: the step is committed, or scored and maybe dropped)."""
    _catch_up(model, [r for r in rows if r.written == 0], trace, chunk=chunk)
    trace.append(_feed(model, rows, chunk=chunk, write=True))
    ended = [r for r in rows if r.written == r.goal(model)]
    for r in ended:
        _unview_written(r, model)
    return ended


def asynchronous(scripts: Sequence[RowScript], *, chunk: int, k: int) -> list[Pass]:
    """The pass trace of the per-row phase schedule for one batch (rsd_jax.decoding.phases.target_fires): the
    target runs while a row is writing with it, or to start when >= k rows wait or nothing else can advance; when
    it runs, every waiting row joins."""
    if k < 1:
        raise ConfigError(f"the target's quorum k must be >= 1, got {k}")
    rows = [_Row(s) for s in scripts]
    trace: list[Pass] = []
    while any(not r.done for r in rows):
        if drafting := [r for r in rows if r.phase == DRAFTING]:
            for r in _write_token("draft", drafting, trace, chunk=chunk):
                r.view["prm"] += r.script.proposals[r.step]
                r.phase = SCORING
        if scoring := [r for r in rows if r.phase == SCORING]:
            _catch_up("prm", scoring, trace, chunk=chunk)
            for r in scoring:
                if r.script.accepted[r.step]:
                    r.commit("draft")
                else:
                    r.reject()
        engaged = [r for r in rows if r.phase in (WAITING, TARGET)]
        waiting = [r for r in rows if r.phase == WAITING]
        writing = any(r.phase == TARGET for r in rows)
        others = any(r.phase in (DRAFTING, SCORING) for r in rows)
        if writing or (waiting and (len(waiting) >= k or not others)):
            for r in engaged:
                r.phase = TARGET
            for r in _write_token("target", engaged, trace, chunk=chunk):
                r.commit("target")
    return trace


def target_only(scripts: Sequence[RowScript], *, chunk: int) -> list[Pass]:
    """The pass trace of the target decoding alone: prompt catch-up, then one pass per token of the longest row."""
    rows = [_Row(s) for s in scripts]
    trace: list[Pass] = []
    while p := _feed("target", rows, chunk=chunk, write=False):
        trace.append(p)
    writing = [r for r in rows if r.script.response > 0]
    while writing:
        trace.append(_feed("target", writing, chunk=chunk, write=True))
        writing = [r for r in writing if r.written < r.script.response]
    return trace


def tokens_fed(trace: Sequence[Pass], model: str) -> float:
    """Tokens a model took in over a trace (catch-up and written)."""
    return sum(p.rows * p.tokens for p in trace if p.model == model)


def counts(trace: Sequence[Pass]) -> dict[str, dict[str, float]]:
    """Per model: passes, rows carried (summed), write passes, tokens fed."""
    return {m: {"passes": sum(1 for p in trace if p.model == m), "rows": sum(p.rows for p in trace if p.model == m),
                "write_passes": sum(1 for p in trace if p.model == m and p.head_rows),
                "tokens": tokens_fed(trace, m)} for m in MODELS}
