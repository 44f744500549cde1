"""The synthetic multi-step reasoning task of the embedded default: a chained calculation, one step per operation.

    question:  "37*6+4-3+8"                 (a multiplication first, then single-digit additions and subtractions)
    prompt:    question + "\\n"             (what the draft and target read; the PRM reads BOS + question + "\\n")
    solution:  "37*6=222\\n\\n222+4=226\\n\\n226-3=223\\n\\n223+8=231\\n\\nThe answer is 231."

The level is the number of operations (one equation step each), then the answer phrase is its own last step. The
first operation multiplies a two-digit start value by a digit 3..9: the one hard step, where a small model slips
and a larger one does not. The rest add or subtract a digit 1..9: easy steps that every model should get right.
With the multiplication first, the usual precedence and left-to-right evaluation agree, so the question is an
ordinary expression. This is the regime reward-guided speculative decoding is built for: a draft that is right
on most steps, a few hard steps for the target, and the hard step early, so that rewriting it costs the target
only a short prefix. Values stay in 0..MAX_VALUE. Everything is checked exactly: `is_correct` (the final
answer), `check_steps` (each step given the previous ones).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from rsd_jax.errors import ConfigError

DATA_VERSION = "arith-v2"
DELIMITER = "\n\n"
LEVELS = (3, 4, 5)
HELD_OUT_SEED = 12345  # the held-out split every benchmark figure is measured on
DEV_SEED = 777  # the development split (choosing δ, calibrating a budget); training uses other seeds
MAX_VALUE = 999
_NUMBER = r"(0|[1-9]\d*)"  # canonical: no leading zeros
_EQUATION = re.compile(rf"^\s*{_NUMBER}\s*([+\-*])\s*{_NUMBER}\s*=\s*{_NUMBER}\s*$")
_ANSWER_STEP = re.compile(rf"^\s*The answer is {_NUMBER}\.\s*$")
_ANSWER = re.compile(rf"The answer is {_NUMBER}\.")


@dataclasses.dataclass(frozen=True)
class Problem:
    question: str
    steps: tuple[str, ...]  # the reference solution: `level` equations, then "The answer is N."
    answer: int
    level: int  # number of operations
    uid: str
    start: int
    operations: tuple[tuple[str, int], ...]  # (operator "+" "-" "*", operand), in order


def apply_operation(op: str, a: int, b: int) -> int:
    """a <op> b for op in "+", "-", "*"."""
    return a + b if op == "+" else a - b if op == "-" else a * b


def _pick_easy_operation(rng: np.random.Generator, value: int) -> tuple[str, int]:
    """An addition or subtraction of a digit 1..9 whose result stays in 0..MAX_VALUE."""
    b = int(rng.integers(1, 10))
    if value - b < 0:
        return "+", b
    if value + b > MAX_VALUE:
        return "-", b
    return "+-"[rng.integers(2)], b


def make_problem(rng: np.random.Generator, level: int, uid: str) -> Problem:
    """One problem with `level` operations drawn from rng: a two-digit start times a digit 3..9, then `level` - 1
    single-digit additions and subtractions."""
    value = start = int(rng.integers(10, 100))
    operations, steps = [], []
    for i in range(level):
        op, b = ("*", int(rng.integers(3, 10))) if i == 0 else _pick_easy_operation(rng, value)
        result = apply_operation(op, value, b)
        operations.append((op, b))
        steps.append(f"{value}{op}{b}={result}")
        value = result
    steps.append(f"The answer is {value}.")
    question = str(start) + "".join(f"{op}{b}" for op, b in operations)
    return Problem(question=question, steps=tuple(steps), answer=value, level=level, uid=uid, start=start,
                   operations=tuple(operations))


def generate_problems(n: int, seed: int, levels: tuple[int, ...] = LEVELS) -> list[Problem]:
    """n problems, levels drawn uniformly from `levels`; the same (n, seed, levels) gives the same problems,
    and the first n of a longer list are the n of a shorter one."""
    if not levels or any(level < 1 for level in levels):
        raise ConfigError(f"levels must be positive operation counts, got {levels}")
    rng = np.random.default_rng(seed)
    return [make_problem(rng, int(levels[rng.integers(len(levels))]), f"{DATA_VERSION}-{seed}-{i}")
            for i in range(n)]


def solution_text(problem: Problem) -> str:
    """The reference solution: steps joined by the delimiter (no trailing delimiter)."""
    return DELIMITER.join(problem.steps)


def reference_prefix(problem: Problem, k: int) -> str:
    """The reference solution's first k steps, each followed by the delimiter: what a correct model has written
    when the next step is to come."""
    return "".join(step + DELIMITER for step in problem.steps[:k])


def format_prompt(problem: Problem) -> str:
    """What the draft and the target read before the solution; the first step follows the "\\n" directly."""
    return problem.question + "\n"


def split_steps(text: str) -> list[str]:
    """A response's steps: split on the delimiter, surrounding whitespace stripped, empty pieces dropped."""
    return [s.strip() for s in text.split(DELIMITER) if s.strip()]


def extract_answer(text: str) -> int | None:
    """The number of the last "The answer is N." in text, None when there is none."""
    matches = _ANSWER.findall(text)
    return int(matches[-1]) if matches else None


def is_correct(problem: Problem, text: str) -> bool:
    return extract_answer(text) == problem.answer


def check_steps(problem: Problem, steps: list[str]) -> list[bool]:
    """Whether each step is correct given the steps before it (one bool per step; never raises).

    Step i < level is correct iff it is an equation "a<op>b=c" whose a is the previous step's stated result (the
    start value for i = 0), whose <op> b is the question's i-th operation, and whose c = a <op> b. A malformed
    equation states no result, so the step after it is incorrect too. Step `level` is correct iff it is
    "The answer is N." with N the previous step's stated result (given the previous steps, it concludes
    correctly; whether N is the problem's answer is `is_correct`); any further step is incorrect.
    """
    return [not step_errors(problem, steps, i) for i in range(len(steps))]


def step_errors(problem: Problem, steps: list[str], i: int) -> tuple[str, ...]:
    """What is wrong with step i given the steps before it: () when check_steps calls it correct, else some of
    "chain" (the left value is not the previous result), "operator" / "operand" (not the question's i-th
    operation), "result" (the arithmetic), "answer" (the answer step does not state the previous result),
    "malformed" (neither an equation nor, at the end, the answer phrase), "extra" (a step after the answer)."""
    if i > problem.level:
        return ("extra",)
    previous: int | None = problem.start
    if i > 0:
        m = _EQUATION.match(steps[i - 1])
        previous = int(m[4]) if m else None  # i <= level here: step i - 1 is an equation slot
    if i == problem.level:
        m = _ANSWER_STEP.match(steps[i])
        return ("malformed",) if m is None else () if previous is not None and int(m[1]) == previous else ("answer",)
    m = _EQUATION.match(steps[i])
    if m is None:
        return ("malformed",)
    a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
    want_op, want_b = problem.operations[i]
    errors = [name for name, wrong in (("chain", a != previous), ("operator", op != want_op),
                                       ("operand", b != want_b), ("result", c != apply_operation(op, a, b))) if wrong]
    return tuple(errors)


CORRUPTIONS = ("result", "operator", "operand", "chain")
PERTURBATIONS = CORRUPTIONS + ("answer",)  # what perturbed_solution may do: a corruption or a wrong answer step


def _change_digit(rng: np.random.Generator, value: int) -> int:
    """value with one decimal digit replaced by a different one (no leading zero), e.g. 468 -> 478."""
    digits = list(str(value))
    i = int(rng.integers(len(digits)))
    choices = [d for d in "0123456789" if d != digits[i] and not (i == 0 and d == "0" and len(digits) > 1)]
    digits[i] = choices[int(rng.integers(len(choices)))]
    return int("".join(digits))


def _corruptions_of(op: str, kinds: tuple[str, ...]) -> list[str]:
    """The equation corruptions among `kinds` that a step with operator `op` can take (a product has no
    add/sub operator to flip)."""
    return [kind for kind in kinds if kind in CORRUPTIONS and not (kind == "operator" and op == "*")]


def corrupt_step(problem: Problem, k: int, rng: np.random.Generator,
                 kinds: tuple[str, ...] = CORRUPTIONS) -> tuple[str, str]:
    """(kind, text) of a wrong version of the reference step k, the near misses a small model makes: the
    answer step, or an equation whose result has one digit changed ("result"), whose add/sub operator is flipped
    ("operator") or whose operand is another digit ("operand") with the arithmetic done right, or whose left
    value misreads the previous result ("chain"). check_steps labels it incorrect after the reference steps
    before k. `kinds` limits the equation corruptions drawn from."""
    if k == problem.level:
        return "answer", f"The answer is {_change_digit(rng, problem.answer)}."
    a = problem.start if k == 0 else int(_EQUATION.match(problem.steps[k - 1])[4])
    op, b = problem.operations[k]
    kinds = _corruptions_of(op, kinds)
    if not kinds:
        raise ConfigError(f"no corruption of step {k} of {problem.question} among the kinds asked for")
    for _ in range(100):
        kind = kinds[int(rng.integers(len(kinds)))]
        a2, op2, b2 = a, op, b
        if kind == "operator":
            op2 = "+" if op == "-" else "-"
        elif kind == "operand":
            b2 = int(rng.choice([d for d in range(3 if op == "*" else 1, 10) if d != b]))
        elif kind == "chain":
            a2 = _change_digit(rng, a)
        c = apply_operation(op, a, b) if kind == "result" else apply_operation(op2, a2, b2)
        if kind == "result":
            c = _change_digit(rng, c)
        if 0 <= c <= MAX_VALUE:
            return kind, f"{a2}{op2}{b2}={c}"
    raise AssertionError(f"no corruption of step {k} of {problem.question} in range")  # pragma: no cover


def perturbable_steps(problem: Problem, kinds: tuple[str, ...] = PERTURBATIONS) -> list[int]:
    """The steps k that a perturbation of one of `kinds` can replace: add/sub steps for "operator", equations
    for the other corruptions, the answer step for "answer"."""
    unknown = sorted(set(kinds) - set(PERTURBATIONS))
    if unknown:
        raise ConfigError(f"unknown perturbation kind(s) {unknown}: choose from {list(PERTURBATIONS)}")
    return [k for k in range(problem.level + 1)
            if ("answer" in kinds if k == problem.level else _corruptions_of(problem.operations[k][0], kinds))]


def perturbed_solution(problem: Problem, rng: np.random.Generator,
                       kinds: tuple[str, ...] = PERTURBATIONS) -> str:
    """The reference solution cut after a step k (uniform among `perturbable_steps`, by default 0..level) that
    `corrupt_step` replaces with one of `kinds`: correct steps, then one near-miss wrong step (a hard negative for
    the PRM)."""
    steps = perturbable_steps(problem, kinds)
    if not steps:
        raise ConfigError(f"no step of {problem.question} can take a perturbation of kinds {list(kinds)}")
    k = steps[int(rng.integers(len(steps)))]
    _, wrong = corrupt_step(problem, k, rng, kinds)
    return reference_prefix(problem, k) + wrong
