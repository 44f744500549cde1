"""The synthetic multi-step reasoning task of the embedded default: chained arithmetic, one step per operation.

    question:  "Start with 37. Add 48. Multiply by 3. Subtract 19."
    solution:  "37+48=85\\n\\n85*3=255\\n\\n255-19=236\\n\\nThe answer is 236."

Every step is an equation that applies the next operation of the question to the previous result; the last
step states the answer. Values stay in 0..999 and multipliers are single digits, so that tiny char-level
models can learn it and their mistakes are honest arithmetic slips. The level is the number of operations.
Every step can be checked exactly: a step is correct when it is well formed, applies the right operation
to the previous step's result and computes it right, and every step before it is correct (the label a
process reward model learns: "this prefix still leads to the right answer").
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

DATA_VERSION = "arith-v1"
DELIMITER = "\n\n"
LEVELS = (2, 3, 4, 5)
_OPS = {"+": ("Add", "{}"), "-": ("Subtract", "{}"), "*": ("Multiply by", "{}")}
_EQUATION = re.compile(r"^(\d+)([+\-*])(\d+)=(\d+)$")
_ANSWER = re.compile(r"The answer is (\d+)\.")
MAX_VALUE = 999


@dataclasses.dataclass(frozen=True)
class Problem:
    question: str
    steps: tuple[str, ...]  # equations, then "The answer is N."
    answer: int
    level: int
    uid: str
    operations: tuple[tuple[str, int], ...]  # (op, operand) in order
    start: int


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _pick_operation(rng: np.random.Generator, value: int) -> tuple[str, int]:
    choices = ["+", "-", "*"]
    while True:
        op = choices[rng.integers(3)]
        if op == "+" and value < MAX_VALUE - 10:
            return op, int(rng.integers(2, min(99, MAX_VALUE - value) + 1))
        if op == "-" and value >= 12:
            return op, int(rng.integers(2, min(99, value) + 1))
        if op == "*" and 2 <= value <= MAX_VALUE // 2:
            return op, int(rng.integers(2, min(9, MAX_VALUE // value) + 1))


def make_problem(rng: np.random.Generator, level: int, uid: str) -> Problem:
    value = start = int(rng.integers(2, 100))
    operations, steps, sentences = [], [], [f"Start with {start}."]
    for _ in range(level):
        op, b = _pick_operation(rng, value)
        result = _apply(op, value, b)
        operations.append((op, b))
        steps.append(f"{value}{op}{b}={result}")
        sentences.append(f"{_OPS[op][0]} {b}.")
        value = result
    steps.append(f"The answer is {value}.")
    return Problem(question=" ".join(sentences), steps=tuple(steps), answer=value, level=level, uid=uid,
                   operations=tuple(operations), start=start)


def generate_problems(n: int, seed: int, levels: tuple[int, ...] = LEVELS) -> list[Problem]:
    """n problems, levels drawn uniformly from `levels`; the same (n, seed, levels) gives the same problems."""
    rng = np.random.default_rng(seed)
    return [make_problem(rng, int(levels[rng.integers(len(levels))]), f"{DATA_VERSION}-{seed}-{i}") for i in range(n)]


def solution_text(problem: Problem) -> str:
    return DELIMITER.join(problem.steps)


def format_prompt(problem: Problem) -> str:
    """What the draft and the target read before the solution (the PRM reads the raw question)."""
    return problem.question + "\n"


def split_steps(text: str) -> list[str]:
    """A response's steps (delimiters removed, empty pieces dropped)."""
    return [s.strip() for s in text.split(DELIMITER) if s.strip()]


def extract_answer(text: str) -> int | None:
    matches = _ANSWER.findall(text)
    return int(matches[-1]) if matches else None


def is_correct(problem: Problem, text: str) -> bool:
    return extract_answer(text) == problem.answer


def check_steps(problem: Problem, steps: list[str]) -> list[bool]:
    """Prefix correctness of each step: well formed, the right operation on the previous result, the right
    value, and every earlier step correct. The answer step is correct iff it states the right answer after
    all operations were done correctly. Malformed text is incorrect, never an error."""
    labels, value, ok = [], problem.start, True
    for i, step in enumerate(steps):
        if i < len(problem.operations):
            op, b = problem.operations[i]
            m = _EQUATION.match(step.strip())
            good = (m is not None and int(m.group(1)) == value and m.group(2) == op and int(m.group(3)) == b
                    and int(m.group(4)) == _apply(op, value, b))
            value = _apply(op, value, b)
        else:
            good = i == len(problem.operations) and step.strip() == f"The answer is {problem.answer}."
        ok = ok and good
        labels.append(ok)
    return labels
