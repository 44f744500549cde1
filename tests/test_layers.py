"""The import graph of rsd_jax, read statically from the source: no cycles, and the layers point down.

Every `import` and `from ... import` counts, at module level or inside a function (a deferred import is still a
dependency). An import names the most specific rsd_jax module it reaches (`from rsd_jax.data import arith` is an
arrow to rsd_jax.data.arith; a name that is not a module is an arrow to the module it comes from); the packages
above a module, which Python initialises on the way, are not arrows of their own.

The layers below the commands (data, models, weights, training, decoding, theory) do not import the config schema
(rsd_jax.config, rsd_jax.configlib) or a command (a module run with `python -m`), nor reach one through other
modules: the commands read the config and hand its values down.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rsd_jax"
LOWER_LAYERS = ("rsd_jax.data", "rsd_jax.models", "rsd_jax.weights", "rsd_jax.training", "rsd_jax.decoding",
                "rsd_jax.theory")
SCHEMA = ("rsd_jax.config", "rsd_jax.configlib")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_modules(root: Path) -> dict[str, tuple[ast.Module, bool]]:
    """Module name -> (its syntax tree, whether it is a package's __init__)."""
    return {module_name(p, root): (ast.parse(p.read_text(encoding="utf-8"), str(p)), p.name == "__init__.py")
            for p in sorted(root.rglob("*.py"))}


def imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The known modules one import statement of `module` names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    targets = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        targets.add(sub if sub in known else base)
    return targets & known


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the rsd_jax modules it imports (anywhere in its source)."""
    modules = read_modules(root)
    known = set(modules)
    graph = {}
    for name, (tree, is_package) in modules.items():
        arrows = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                arrows |= imported(node, name, is_package, known)
        graph[name] = arrows - {name}
    return graph


def commands(root: Path = PACKAGE) -> set[str]:
    """The modules run with `python -m`: a package's __main__, or a module with an `if __name__ == "__main__"`."""
    def is_main_guard(node: ast.stmt) -> bool:
        test = getattr(node, "test", None)
        return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                and test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                       for c in test.comparators))

    return {name for name, (tree, _) in read_modules(root).items()
            if name.endswith(".__main__") or any(is_main_guard(node) for node in tree.body)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def path_to(graph: dict[str, set[str]], start: str, targets: set[str]) -> list[str] | None:
    """The shortest import chain from `start` to any of `targets` (breadth-first), or None."""
    previous = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target in previous:
                    continue
                previous[target] = node
                if target in targets:
                    chain = [target]
                    while previous[chain[-1]] is not None:
                        chain.append(previous[chain[-1]])
                    return chain[::-1]
                following.append(target)
        frontier = following
    return None


def in_lower_layer(module: str, entry_points: set[str]) -> bool:
    return module.startswith(tuple(p + "." for p in LOWER_LAYERS) + LOWER_LAYERS) and module not in entry_points


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(graph):
    assert "rsd_jax.data.arith" in graph["rsd_jax.data.problems"]  # from rsd_jax.data import arith
    assert "rsd_jax.errors" in graph["rsd_jax.data.problems"]  # from rsd_jax.errors import InputError
    assert "rsd_jax.loading" in graph["rsd_jax.theory.__main__"]  # an import inside a function
    assert {"rsd_jax.decode", "rsd_jax.train", "rsd_jax.theory.__main__"} <= commands()


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_lower_layers_do_not_import_the_schema_or_a_command(graph):
    entry_points = commands()
    forbidden = set(SCHEMA) | entry_points
    direct = [f"{m} -> {t}" for m in sorted(graph) if in_lower_layer(m, entry_points)
              for t in sorted(graph[m] & forbidden)]
    assert not direct, "lower layers import the schema or a command: " + "; ".join(direct)
    reached = [" -> ".join(chain) for m in sorted(graph) if in_lower_layer(m, entry_points)
               if (chain := path_to(graph, m, forbidden))]
    assert not reached, "lower layers reach the schema or a command: " + "; ".join(reached)


def test_the_checks_can_fail(tmp_path):
    """A package with a cycle and a lower layer that imports the schema, written out: both are found."""
    root = tmp_path / "rsd_jax"
    for name, text in {"__init__.py": "", "config.py": "", "loading.py": "from rsd_jax import config\n",
                       "data/__init__.py": "", "data/a.py": "from rsd_jax.data import b\n",
                       "data/b.py": "def f():\n    from . import a\n",
                       "data/c.py": "import rsd_jax.loading\n",
                       "cli.py": "if __name__ == '__main__':\n    pass\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    fake = import_graph(root)
    assert find_cycle(fake) == ["rsd_jax.data.a", "rsd_jax.data.b", "rsd_jax.data.a"]
    assert path_to(fake, "rsd_jax.data.c", set(SCHEMA)) == ["rsd_jax.data.c", "rsd_jax.loading", "rsd_jax.config"]
    assert commands(root) == {"rsd_jax.cli"}
