"""The package's seams stay readable: no function takes more than six positional parameters (the rest are
keyword-only, so that swapping two arguments is an error, not a silent mix-up), none more than eight parameters of
any kind (wider ones group their arguments into small values), and the jitted loops take one engine value."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import rsd_jax

PACKAGE = Path(rsd_jax.__file__).parent
MOST_POSITIONAL = 6
MOST_PARAMETERS = 8

#: Functions over eight parameters allowed for now ("path:function"): none. The list only shrinks.
WIDE_FOR_NOW: set[str] = set()


def positional_parameters(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(line, function, count) of every function in `tree`, counting positional parameters but self and cls."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
            found.append((node.lineno, node.name, len(names)))
    return found


def all_parameters(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(line, function, count) of every function in `tree`, counting every parameter but self and cls: positional,
    keyword-only, and *args / **kwargs (one each)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            named = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
            found.append((node.lineno, node.name, len(named) + (a.vararg is not None) + (a.kwarg is not None)))
    return found


def wide_functions(package: Path) -> dict[str, str]:
    """"path:function" -> "path:line function (count)" of every function of `package` over MOST_PARAMETERS."""
    return {f"{path.relative_to(package.parent).as_posix()}:{name}":
            f"{path.relative_to(package.parent).as_posix()}:{line} {name} ({count})"
            for path in sorted(package.rglob("*.py"))
            for line, name, count in all_parameters(ast.parse(path.read_text()))
            if count > MOST_PARAMETERS}


def test_no_function_takes_more_than_eight_parameters():
    wide = wide_functions(PACKAGE)
    new = [where for key, where in wide.items() if key not in WIDE_FOR_NOW]
    assert not new, "more than eight parameters (group them into a small value): " + ", ".join(new)
    narrowed = sorted(WIDE_FOR_NOW - set(wide))
    assert not narrowed, "narrowed or gone: remove from WIDE_FOR_NOW: " + ", ".join(narrowed)


def test_the_parameter_count_can_fail(tmp_path):
    source = ("def wide(a, b, c, /, d, *, e, f, g, h, i):\n    pass\n"
              "def starred(self, a, *args, b, c, d, e, f, g, **kwargs):\n    pass\n"
              "class C:\n    def method(self, a, b, c, d, e, f, g, h):\n        pass\n")
    assert [(name, count) for _, name, count in all_parameters(ast.parse(source))] == [
        ("wide", 9), ("starred", 9), ("method", 8)]
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(source)
    assert wide_functions(package) == {"pkg/mod.py:wide": "pkg/mod.py:1 wide (9)",
                                       "pkg/mod.py:starred": "pkg/mod.py:3 starred (9)"}


def test_no_function_takes_more_than_six_positional_parameters():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({count})"
                 for path in sorted(PACKAGE.rglob("*.py"))
                 for line, name, count in positional_parameters(ast.parse(path.read_text()))
                 if count > MOST_POSITIONAL]
    assert not offenders, "more than six positional parameters: " + ", ".join(offenders)


def test_the_check_can_fail():
    tree = ast.parse("def f(a, b, c, d, e, f, g):\n    pass\ndef g(self, a, *, b, c, d, e, f, g):\n    pass\n")
    assert [(name, count) for _, name, count in positional_parameters(tree)] == [("f", 7), ("g", 1)]


def test_the_loops_take_the_engine_then_keywords():
    from rsd_jax.decoding.beam_search import beam_search
    from rsd_jax.decoding.best_of_n import best_of_n, sample_n
    from rsd_jax.decoding.rsd import rsd_decode
    from rsd_jax.decoding.single import single_decode
    from rsd_jax.decoding.speculative import speculative_decode_impl

    for loop in (rsd_decode, single_decode, sample_n, best_of_n, beam_search, speculative_decode_impl):
        params = list(inspect.signature(loop).parameters.values())
        assert params[0].name == "engine" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, loop
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), loop
