"""The shipped paper configs' decode loops, at the real architectures' sizes (1.5B, 7B, 72B) with abstract weights:
each traces and lowers on the mesh its config names, and the main one compiles (nothing is allocated)."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import pytest

from rsd_jax import abstract_run, sharding as sh
from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config

CONFIGS = [Path(__file__).resolve().parents[1] / "configs" / "paper" / f"{name}.yaml" for name in
           ("qwen25_math_1.5b_7b_skywork1.5b", "qwen25_math_1.5b_7b_skywork7b", "qwen25_math_7b_72b_skywork7b")]


def _program(path: Path):
    cfg = load_config(RunConfig, str(path))
    inputs = abstract_run.abstract_inputs(cfg, cfg.decoding.batch_size)
    mesh = sh.make_mesh(-1, cfg.mesh.width(jax.device_count()))
    return inputs, mesh, *abstract_run.program(inputs, mesh)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_the_paper_loops_trace_at_real_size(path):
    inputs, mesh, program, args = _program(path)
    sizes = [sum(x.size for x in jax.tree.leaves(m.params)) for m in inputs.models]
    assert min(sizes) > 1.5e9 and max(sizes) > (7e10 if "72b" in path.stem else 7e9)
    with jax.set_mesh(mesh):
        lowered = program.jit().lower(*args)
    assert "while" in lowered.as_text()[:2_000_000]


def test_the_main_paper_loop_compiles_at_real_size():
    inputs, mesh, program, args = _program(CONFIGS[0])
    assert CONFIGS[0].stem == "qwen25_math_1.5b_7b_skywork1.5b"
    start = time.process_time()
    with jax.set_mesh(mesh):
        compiled = program.jit().lower(*args).compile()
    assert compiled.memory_analysis().argument_size_in_bytes > 4 * 2**30  # a quarter of 20 GB of bf16 weights
    assert time.process_time() - start < 600
