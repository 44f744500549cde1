"""Where training starts: a seeded fresh init, or the arrays of an LM checkpoint (init_from)."""

from __future__ import annotations

from pathlib import Path

import jax

from rsd_jax.errors import RSDError
from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model
from rsd_jax.weights import restore_model


def merge_backbone(init: dict, base: dict) -> dict:
    """init with every array that `base` has at the same path and shape (the LM head and value head differ)."""
    def merge(a, b):
        if isinstance(a, dict):
            return {k: merge(v, b.get(k)) if isinstance(b, dict) else v for k, v in a.items()}
        return b if b is not None and getattr(b, "shape", None) == a.shape else a

    return merge(init, base)


def initial_params(config: ModelConfig, seed: int, init_from: Path | None = None) -> dict:
    """The parameters (a pure dict) training starts from: a fresh init from `seed`, or with `init_from` the LM
    checkpoint's arrays (all of them for an LM that continues it; all but the value head, which starts fresh, for a
    PRM). A checkpoint of another architecture is an RSDError naming the arrays it lacks."""
    init = Model.init(config, seed).pure_dict()
    if init_from is None:
        return init
    merged = merge_backbone(init, restore_model(init_from).pure_dict())
    fresh = [jax.tree_util.keystr(path)  # the arrays init_from did not supply
             for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(merged), jax.tree_util.tree_leaves(init))
             if a is b]
    if any("v_head" not in name for name in fresh):
        raise RSDError(f"init_from {init_from}: its arrays do not match the model's architecture (no array "
                       f"of the same shape for {', '.join(n for n in fresh if 'v_head' not in n)})")
    return merged
