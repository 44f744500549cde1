"""Params trees as flat {path: leaf} maps and back: how the loaders address one parameter at a time."""

from __future__ import annotations

from typing import Any, Iterator

Path_ = tuple[str, ...]  # a parameter's path in the params tree, e.g. ("layers", "mlp", "up_proj", "kernel")


def leaves(tree: Any, prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """(path, leaf) for each leaf of a nested dict."""
    if not isinstance(tree, dict):
        yield prefix, tree
        return
    for key, value in tree.items():
        yield from leaves(value, prefix + (key,))


def nest(flat: dict[Path_, Any]) -> dict:
    """{path: leaf} -> the nested dict (the inverse of `leaves`)."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree
