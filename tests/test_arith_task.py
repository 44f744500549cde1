"""The synthetic arithmetic task: determinism, exact checkers, difficulty levels."""

from rsd_jax.data import arith


def test_generation_is_deterministic_and_levels_set_the_length():
    a, b = arith.generate_problems(30, seed=4), arith.generate_problems(30, seed=4)
    assert a == b and a != arith.generate_problems(30, seed=5)
    for p in a:
        assert len(p.steps) == p.level + 1 and p.level in arith.LEVELS
        assert all(0 <= int(s.split("=")[1]) <= arith.MAX_VALUE for s in p.steps[:-1])


def test_reference_solutions_pass_every_check():
    for p in arith.generate_problems(200, seed=0):
        text = arith.solution_text(p)
        assert arith.is_correct(p, text)
        assert all(arith.check_steps(p, arith.split_steps(text)))


def test_errors_are_caught_and_propagate():
    p = arith.generate_problems(1, seed=1, levels=(4,))[0]
    steps = list(p.steps)
    lhs, result = steps[1].split("=")
    steps[1] = f"{lhs}={int(result) + 1}"
    assert arith.check_steps(p, steps) == [True] + [False] * (len(steps) - 1)
    wrong_op = list(p.steps)
    wrong_op[0] = wrong_op[0].replace(wrong_op[0][len(str(p.start))], "?", 1)
    assert arith.check_steps(p, wrong_op)[0] is False
    assert not arith.is_correct(p, arith.solution_text(p).replace(f"is {p.answer}.", f"is {p.answer + 1}."))


def test_malformed_text_is_incorrect_not_an_error():
    p = arith.generate_problems(1, seed=2)[0]
    assert arith.extract_answer("no answer here") is None
    assert arith.check_steps(p, ["garbage", "", "1+1="]) == [False, False, False]
    assert not arith.is_correct(p, "The answer is")
