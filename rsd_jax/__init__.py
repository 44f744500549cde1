"""rsd_jax: Reward-Guided Speculative Decoding in JAX/Flax.

The public entry points (importing the package loads none of JAX; each name loads its module when first used):

    import rsd_jax
    records, summary = rsd_jax.run("configs/arith_tiny.yaml", ["data.n=16"])   # decode a config's problems
    loaded = rsd_jax.load("configs/arith_tiny.yaml")     # its engine and problems, to run again (`loaded.run`)
    summary = rsd_jax.experiment("configs/theory_empirical.yaml", out="runs/theory")  # a theory experiment
    plan = rsd_jax.paper_plan()   # which config of the paper's setting fits the devices JAX finds
    rsd_jax.generate(engine, prompts, method=rsd_jax.methods.RSD(delta=0.9))  # lower down: prompts to results
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it (rsd_jax.entry: run, load; rsd_jax.runtime: the devices and the plan)
_LAZY = {
    "run": "rsd_jax.entry", "load": "rsd_jax.entry", "experiment": "rsd_jax.entry", "Loaded": "rsd_jax.entry",
    "Run": "rsd_jax.entry", "paper_plan": "rsd_jax.runtime", "devices_found": "rsd_jax.runtime",
    "Devices": "rsd_jax.runtime", "Plan": "rsd_jax.runtime", "generate": "rsd_jax.api",
}
_SUBMODULES = ("methods", "theory")
__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"rsd_jax.{name}")
    else:
        raise AttributeError(f"module 'rsd_jax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
