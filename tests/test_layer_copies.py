"""Per-layer weight copies (`Model.with_layer_copies`, a CPU's fast decode): the same values as the stacked layers,
the same HF parity, dropped where they would go stale, and given by `Engine.create` on a CPU without a mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from engine_world import config, random_model
from rsd_jax.engine import Engine
from rsd_jax.errors import InputError
from rsd_jax.models import full_forward
from test_models import _pair, greedy_generate, hf_logits, rel_err

PARITY = ("qwen2_gqa_bias_tied", "llama_gqa_untied")  # tied and untied heads, with and without biases


@pytest.fixture(params=PARITY)
def copied_pair(request, tmp_path_factory):
    hf, model = _pair(request.param, str(tmp_path_factory.getbasetemp()))
    return hf, model.with_layer_copies()


def test_layer_copies_match_transformers(copied_pair):
    hf, model = copied_pair
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(2, 24))
    logits, _ = jax.jit(full_forward)(model, jnp.asarray(ids))
    assert rel_err(logits, hf_logits(hf, ids)) < 1e-5
    prompt = np.random.default_rng(2).integers(0, model.config.vocab_size, size=(1, 7))
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt), max_new_tokens=32, do_sample=False, eos_token_id=None,
                          pad_token_id=0, min_new_tokens=32)[0, 7:].numpy()
    np.testing.assert_array_equal(greedy_generate(model, jnp.asarray(prompt), jnp.array([7]), 32)[0], ref)


def test_layer_copies_are_the_stacked_rows_and_never_go_stale():
    model = random_model(config(layers=3, hidden=16), seed=0)
    copied = model.with_layer_copies()
    assert copied.with_layer_copies() is copied
    stacked = jax.tree.leaves(model.module().layers)
    assert len(copied.layer_copies) == 3
    for i, layer in enumerate(copied.layer_copies):
        assert type(layer) is dict  # plain dicts: a jitted call flattens them in C++, not in Python as nnx.State
        rows = jax.tree.leaves(layer)
        assert len(rows) == len(stacked)
        for row, stack in zip(rows, stacked):
            np.testing.assert_array_equal(row, stack[i])
    assert copied.without_layer_copies().layer_copies is None
    assert copied.num_params() == model.num_params()  # the copies are not parameters


def test_engine_create_refuses_layer_copies_on_a_mesh_before_any_work():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(InputError, match="layer_copies=True is for one device"):
        Engine.create(None, mesh=mesh, layer_copies=True)  # models are never read


def test_engine_on_a_cpu_gets_layer_copies_and_the_rsd_loop_runs_on_the_stacked_layers():
    """Engine.create gives a CPU the copies; rsd_decode drops them (the RSD loop is faster stacked on a CPU), so an
    engine with copies reuses the stacked engine's compiled loop; forced onto the copies, the loop writes the same."""
    from pathlib import Path

    from rsd_jax.api import encode_prompts
    from rsd_jax.compilations import compilations
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import load_config
    from rsd_jax.data import arith
    from rsd_jax.decoding.rsd import _rsd_loop, rsd_decode
    from rsd_jax.decoding.rsd_state import Knobs, new_caches
    from rsd_jax.decoding.spec import DecodeSpec
    from rsd_jax.loading import load_engine

    config = Path(__file__).resolve().parent.parent / "configs" / "arith_tiny.yaml"
    cfg = load_config(RunConfig, str(config))
    engine = load_engine(cfg, str(config))
    assert all(getattr(engine, role).layer_copies is not None for role in ("draft", "target", "prm"))
    stacked = engine.stacked()
    assert all(getattr(stacked, role).layer_copies is None for role in ("draft", "target", "prm"))
    assert stacked.stacked() is stacked and stacked.with_layer_copies().target.layer_copies is not None
    spec = DecodeSpec(max_new_tokens=48, max_steps=6, max_step_tokens=16, chunk=16)
    problems = arith.generate_problems(4, seed=5)
    prompts = encode_prompts(engine.models, [arith.format_prompt(p) for p in problems],
                             [p.question for p in problems], spec)
    knobs, key = Knobs.create(delta=cfg.rsd.delta), jax.random.key(0)
    first = rsd_decode(stacked, prompts=prompts, knobs=knobs, key=key, spec=spec)
    with compilations() as count:
        again = rsd_decode(engine, prompts=prompts, knobs=knobs, key=key, spec=spec)
    assert count() == 0  # the same (stacked) program: the copies were dropped before the jit
    forced, _ = _rsd_loop(engine, prompts=prompts, knobs=knobs, key=key, caches=new_caches(engine, prompts), spec=spec)
    for run in (again, forced):
        np.testing.assert_array_equal(first.tokens, run.tokens)
        np.testing.assert_array_equal(first.length, run.length)
        np.testing.assert_array_equal(first.n_steps, run.n_steps)
