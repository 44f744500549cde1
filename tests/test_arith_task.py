"""The synthetic arithmetic task: determinism, difficulty levels, and the exact answer and step checkers."""

import re

import numpy as np
import pytest

from rsd_jax.data import arith
from rsd_jax.errors import ConfigError


def test_generation_is_deterministic_by_seed():
    a = arith.generate_problems(50, seed=4)
    assert a == arith.generate_problems(50, seed=4) and a != arith.generate_problems(50, seed=5)
    assert arith.generate_problems(20, seed=4) == a[:20]
    assert len({p.uid for p in a}) == 50 and all(p.uid.startswith(arith.DATA_VERSION) for p in a)


def test_levels_set_the_number_of_steps_and_values_stay_bounded():
    for level in (2, 4, 6):
        for p in arith.generate_problems(100, seed=level, levels=(level,)):
            assert p.level == level and len(p.steps) == level + 1 and len(p.operations) == level
            assert p.steps[-1] == f"The answer is {p.answer}."
            results = [int(s.split("=")[1]) for s in p.steps[:-1]]
            assert all(0 <= v <= arith.MAX_VALUE for v in results) and results[-1] == p.answer
    assert {p.level for p in arith.generate_problems(200, seed=0)} == set(arith.LEVELS)
    with pytest.raises(ConfigError):
        arith.generate_problems(1, seed=0, levels=())


def test_one_hard_multiplication_first_then_easy_single_digit_steps():
    problems = arith.generate_problems(500, seed=7)
    for p in problems:
        (first, factor), rest = p.operations[0], p.operations[1:]
        assert first == "*" and 3 <= factor <= 9 and 10 <= p.start <= 99
        assert all(op in "+-" and 1 <= b <= 9 for op, b in rest)
        assert p.question == str(p.start) + "".join(f"{op}{b}" for op, b in p.operations)
        assert eval(p.question) == p.answer  # an ordinary expression: precedence and left-to-right agree
    assert {op for p in problems for op, _ in p.operations[1:]} == {"+", "-"}
    assert {b for p in problems for _, b in p.operations[:1]} == set(range(3, 10))


def test_reference_solutions_pass_every_check():
    for p in arith.generate_problems(300, seed=0):
        text = arith.solution_text(p)
        assert arith.split_steps(text) == list(p.steps)
        assert arith.is_correct(p, text) and arith.extract_answer(text) == p.answer
        assert all(arith.check_steps(p, arith.split_steps(text)))
        assert all(arith.check_steps(p, [s.replace("=", " = ") for s in p.steps]))  # spacing is tolerated


def _equation(a: int, op: str, b: int, error: int = 0) -> str:
    return f"{a}{op}{b}={arith.apply_operation(op, a, b) + error}"


def test_a_wrong_result_is_caught_and_later_steps_are_judged_on_it():
    p = arith.generate_problems(1, seed=1, levels=(4,))[0]
    (op1, b1), (op2, b2), (op3, b3) = p.operations[:3]
    first = arith.apply_operation(op1, p.start, b1)
    wrong_second = arith.apply_operation(op2, first, b2) + 1
    steps = [_equation(p.start, op1, b1), _equation(first, op2, b2, error=1), _equation(wrong_second, op3, b3)]
    assert arith.check_steps(p, steps) == [True, False, True]  # step 3 applies the right operation to step 2
    assert arith.check_steps(p, [_equation(p.start + 1, op1, b1)]) == [False]  # not the previous result
    assert arith.check_steps(p, [p.steps[1]]) == [False]  # the operations out of order


def test_wrong_operations_and_answers_are_caught():
    p = arith.generate_problems(1, seed=2, levels=(3,))[0]
    (op, b), start = p.operations[0], p.start
    assert arith.check_steps(p, [_equation(start, "+" if op != "+" else "-", b)]) == [False]  # another operator
    assert arith.check_steps(p, [_equation(start, op, b + 1)]) == [False]  # another operand
    wrong_answer = list(p.steps[:-1]) + [f"The answer is {p.answer + 1}."]
    assert arith.check_steps(p, wrong_answer) == [True] * 3 + [False]
    assert not arith.is_correct(p, arith.solution_text(p).replace(f"is {p.answer}.", f"is {p.answer + 1}."))
    early = [p.steps[0], f"The answer is {p.answer}."]  # the answer before the operations are done
    assert arith.check_steps(p, early) == [True, False]
    assert arith.check_steps(p, list(p.steps) + [p.steps[-1]]) == [True] * 4 + [False]  # a step too many


def test_malformed_text_is_incorrect_never_an_error():
    p = arith.generate_problems(1, seed=2, levels=(4,))[0]
    for text in ("no answer here", "The answer is", "The answer is 12", "The answer is x.", "The answer is 012.", ""):
        assert arith.extract_answer(text) is None and not arith.is_correct(p, text)
    assert arith.extract_answer("The answer is 3. The answer is 7.") == 7
    garbage = ["garbage", "", "1+1=", "3++4=7", "=", "12*3=36=36", "The answer is.", "\u0000", "9" * 400]
    assert arith.check_steps(p, garbage) == [False] * len(garbage)
    assert arith.check_steps(p, [p.steps[0], "oops", p.steps[2]])[1:] == [False, False]  # no result to build on
    assert arith.check_steps(p, []) == []


def test_every_corruption_is_a_near_miss_the_checker_rejects():
    rng = np.random.default_rng(0)
    kinds = set()
    for p in arith.generate_problems(300, seed=4):
        for k in range(p.level + 1):
            kind, wrong = arith.corrupt_step(p, k, rng)
            kinds.add(kind)
            assert arith.check_steps(p, list(p.steps[:k]) + [wrong]) == [True] * k + [False]
            if kind == "answer":
                assert k == p.level and wrong != p.steps[k]
                continue
            a, op, b, c = re.match(r"^(\d+)([+\-*])(\d+)=(\d+)$", wrong).groups()
            ref_a, ref_op, ref_b, ref_c = re.match(r"^(\d+)([+\-*])(\d+)=(\d+)$", p.steps[k]).groups()
            changed = [a != ref_a, op != ref_op, b != ref_b, c != ref_c]
            if kind == "result":  # one digit of the result, nothing else
                assert changed == [False, False, False, True] and len(c) == len(ref_c) and \
                    sum(x != y for x, y in zip(c, ref_c)) == 1
            else:  # the operator, operand or previous value misread, the arithmetic then done right
                assert int(c) == arith.apply_operation(op, int(a), int(b)) and 0 <= int(c) <= arith.MAX_VALUE
                assert changed[{"chain": 0, "operator": 1, "operand": 2}[kind]]
                assert sum(changed[:3]) == 1 and not (kind == "operator" and ref_op == "*")
    assert kinds == set(arith.CORRUPTIONS) | {"answer"}


def test_a_perturbed_solution_is_the_reference_up_to_one_wrong_last_step():
    rng = np.random.default_rng(1)
    cuts = set()
    for p in arith.generate_problems(100, seed=5):
        steps = arith.split_steps(arith.perturbed_solution(p, rng))
        k = len(steps) - 1
        cuts.add(k == p.level)
        assert list(steps[:k]) == list(p.steps[:k]) and arith.check_steps(p, steps) == [True] * k + [False]
    assert cuts == {True, False}  # the answer step and equations both get corrupted


def test_perturbations_can_be_limited_to_some_kinds():
    rng = np.random.default_rng(3)
    for p in arith.generate_problems(100, seed=7):
        assert arith.perturbable_steps(p) == list(range(p.level + 1))
        assert arith.perturbable_steps(p, ("operator",)) == [k for k, (op, _) in enumerate(p.operations) if op != "*"]
        assert arith.perturbable_steps(p, ("answer",)) == [p.level]
        steps = arith.split_steps(arith.perturbed_solution(p, rng, ("operator",)))
        k = len(steps) - 1
        assert arith.step_errors(p, steps, k) == ("operator",) and list(steps[:k]) == list(p.steps[:k])
        assert arith.corrupt_step(p, 0, rng, ("operand", "chain"))[0] in ("operand", "chain")
    with pytest.raises(ConfigError, match="unknown perturbation kind"):
        arith.perturbed_solution(p, rng, ("sign",))
    with pytest.raises(ConfigError, match="no corruption of step 0"):
        arith.corrupt_step(p, 0, rng, ("operator",))  # step 0 multiplies: no operator to flip


def test_step_errors_name_what_is_wrong():
    rng = np.random.default_rng(2)
    for p in arith.generate_problems(200, seed=6):
        steps = list(p.steps)
        for _ in range(3):  # random slips, several per solution, including malformed and extra steps
            k = int(rng.integers(len(steps) + 1))
            if k == len(steps):
                steps.append("The answer is 1.")
            else:
                pos = int(rng.integers(len(steps[k])))
                steps[k] = steps[k][:pos] + "0123456789+-=x"[int(rng.integers(14))] + steps[k][pos + 1:]
        for i in range(len(steps)):
            assert set(arith.step_errors(p, steps, i)) <= set(arith.CORRUPTIONS) | {"answer", "malformed", "extra"}
        for k in range(p.level + 1):
            kind, wrong = arith.corrupt_step(p, k, rng)
            assert arith.step_errors(p, list(p.steps[:k]) + [wrong], k) == (kind,)
    p = arith.make_problem(np.random.default_rng(0), 3, "x")
    a, (op, b) = p.start, p.operations[0]
    wrong_op = "+" if op != "+" else "-"
    assert arith.step_errors(p, [f"{a + 1}{wrong_op}{b}={a + 500}"], 0) == ("chain", "operator", "result")
    assert arith.step_errors(p, list(p.steps) + ["The answer is 0."], p.level + 1) == ("extra",)
    assert arith.step_errors(p, list(p.steps[:p.level]) + ["7"], p.level) == ("malformed",)
