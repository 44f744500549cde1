"""Sharded RSD and target-only decoding on 8 fake CPU devices equal the single-device results."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine_world as world
from rsd_jax import sharding as sh
from rsd_jax.compilations import compilations
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import Knobs
from rsd_jax.decoding.single import single_decode
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.parallel import lay_out_engine

SPEC = DecodeSpec(max_new_tokens=24, max_steps=24, max_step_tokens=8, chunk=8)


def _models():
    # 8 query heads so the model axis can split them; the target keeps 2 KV heads (replicated on model=8)
    draft = world.random_model(world.config(1, 32).replace(num_heads=8, head_dim=4, num_kv_heads=8), seed=1)
    target = world.random_model(world.config(2, 64).replace(num_heads=8, head_dim=8, num_kv_heads=2), seed=2)
    prm = world.random_model(world.config(1, 32, head="value").replace(num_heads=8, head_dim=4), seed=3)
    return draft, target, prm


def _engine() -> Engine:
    draft, target, prm = _models()
    tables, prm_tables, _ = world.tables()
    return Engine(draft=draft, target=target, prm=prm, tables=tables, prm_view=prm_tables)


def _rsd(engine: Engine, batch):
    return rsd_decode(engine, prompts=batch, knobs=Knobs.create(delta=0.5, histogram_bins=SPEC.histogram_bins),
                      key=jax.random.key(0), spec=SPEC)


@pytest.fixture(scope="module")
def setup():
    engine = _engine()
    batch, _, _ = world.prompts([5, 9, 7, 4, 8, 6, 10, 3], t_cap=16 + SPEC.max_new_tokens, tp_cap=160)
    reference = jax.device_get(_rsd(engine, batch))
    single = jax.device_get(single_decode(engine, role="target", prompts=batch, key=jax.random.key(0), spec=SPEC))
    return engine, batch, reference, single


@pytest.mark.parametrize("shape", [(8, 1), (1, 8), (2, 4), (4, 2), (2, 4, "kv")])
def test_sharded_equals_single_device(setup, shape):
    engine, batch, reference, single = setup
    kv_heads = [m.config.num_kv_heads for m in (engine.draft, engine.target, engine.prm)] if "kv" in shape else ()
    mesh = sh.make_mesh(*shape[:2], kv_heads=kv_heads)  # "kv": model 4 = 2 x 2, the 2 KV heads split over 2
    on_mesh = engine.on_mesh(mesh)
    out = _rsd(on_mesh, batch)
    assert out.tokens.sharding.is_equivalent_to(jax.NamedSharding(mesh, jax.P("data", None)), 2)
    got = jax.device_get(out)
    np.testing.assert_array_equal(got.tokens, reference.tokens)
    np.testing.assert_array_equal(got.trace.source, reference.trace.source)
    np.testing.assert_allclose(got.trace.reward, reference.trace.reward, atol=1e-5)
    target_only = jax.device_get(single_decode(on_mesh, role="target", prompts=batch, key=jax.random.key(0),
                                               spec=SPEC))
    np.testing.assert_array_equal(target_only.tokens, single.tokens)


def test_weights_laid_out_by_the_compiler_decode_the_same(setup):
    engine, batch, reference, _ = setup
    mesh = sh.make_mesh(2, 4)
    laid_out = lay_out_engine(engine.on_mesh(mesh), SPEC, batch)
    got = jax.device_get(_rsd(laid_out, batch))
    np.testing.assert_array_equal(got.tokens, reference.tokens)
    np.testing.assert_allclose(got.trace.reward, reference.trace.reward, atol=1e-5)


def test_weights_are_sharded_as_declared():
    mesh = sh.make_mesh(2, 4)
    placed = _engine().on_mesh(mesh).target.pure_dict()
    layer = placed["layers"]  # stacked over a leading, replicated layer axis
    assert layer["self_attn"]["q_proj"]["kernel"].sharding.spec == jax.P(None, None, "model")
    assert layer["self_attn"]["o_proj"]["kernel"].sharding.spec == jax.P(None, "model", None)
    assert layer["mlp"]["down_proj"]["kernel"].sharding.spec == jax.P(None, "model", None)
    # 2 KV heads on a 4-way model axis: replicated, never split mid-head (the cache it fills keeps whole heads)
    assert layer["self_attn"]["k_proj"]["kernel"].sharding.spec == jax.P(None, None, None)
    assert layer["input_layernorm"]["weight"].sharding.spec == jax.P(None, None)
    assert placed["norm"]["weight"].sharding.spec == jax.P(None)


def test_same_bucket_prompts_do_not_recompile(setup):
    engine, batch, _, _ = setup
    on_mesh = engine.on_mesh(sh.make_mesh(4, 2))
    jax.block_until_ready(_rsd(on_mesh, batch))
    other, _, _ = world.prompts([6, 3, 9, 9, 2, 7, 5, 8], t_cap=16 + SPEC.max_new_tokens, tp_cap=160, seed=9)
    with compilations() as count:  # as JAX itself reports them
        jax.block_until_ready(_rsd(on_mesh, other))
    assert count() == 0


def test_batch_must_split_over_data(setup):
    engine, _, _, _ = setup
    from rsd_jax.errors import ConfigError

    batch, _, _ = world.prompts([5, 6, 7], t_cap=40, tp_cap=160)
    with pytest.raises(ConfigError, match="not a multiple of mesh.data=8"):
        _rsd(engine.on_mesh(sh.make_mesh(8, 1)), batch)


def test_the_tensor_parallel_width_is_factored_by_the_kv_heads():
    # the paper's 1.5B models have 2 KV heads, the 7B 4: over model=4, the 1.5B caches split 2 ways, not replicated
    mesh = sh.make_mesh(2, 4, kv_heads=(2, 4, 2))
    assert dict(mesh.shape) == {"data": 2, "model": 2, "tensor": 2}
    from rsd_jax.cache import KVCache

    assert KVCache.specs(2, mesh).k == jax.P(None, "data", "model", None, None)
    assert KVCache.specs(4, mesh).k == jax.P(None, "data", ("model", "tensor"), None, None)
    draft = world.config(1, 32).replace(num_heads=8, head_dim=4, num_kv_heads=2)
    specs = sh.param_specs(draft, mesh)["layers"]
    assert specs["self_attn"]["q_proj"]["kernel"] == jax.P(None, None, ("model", "tensor"))
    assert specs["self_attn"]["k_proj"]["kernel"] == jax.P(None, None, "model")
    assert dict(sh.make_mesh(1, 8).shape) == {"data": 1, "model": 8, "tensor": 1}


def test_every_parameter_declares_its_axes_and_an_undeclared_one_is_refused():
    from flax import nnx

    from rsd_jax.errors import ConfigError

    _, target, _ = _models()
    declared = sh.param_axes(target.config)
    is_axes = lambda x: isinstance(x, tuple)  # noqa: E731
    assert len(jax.tree.leaves(declared, is_leaf=is_axes)) == len(jax.tree.leaves(target.params))
    assert all(a[0] == "layers" for a in jax.tree.leaves(declared["layers"], is_leaf=is_axes))

    class Bare(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((2, 3)))

    with pytest.raises(ConfigError, match="declares no logical axes"):
        sh.declared_axes(nnx.state(Bare()))
    # a vocabulary of 97 does not split over 4 devices: replicated, never padded
    odd = world.config(1, 32).replace(vocab_size=97)
    assert sh.param_specs(odd, sh.make_mesh(2, 4))["embed_tokens"]["embedding"] == jax.P(None, None)


def test_scored_samples_on_a_mesh_equal_one_device(setup):
    """Best-of-N and majority voting sample through the RSD loop (every step kept): on a mesh too."""
    from rsd_jax.decoding.best_of_n import best_of_n

    engine, batch, _, _ = setup
    spec = SPEC.replace(sampling=SPEC.sampling.__class__(temperature=0.8))
    alone = jax.device_get(best_of_n(engine, prompts=batch, key=jax.random.key(1), spec=spec, n=2))
    sharded = jax.device_get(best_of_n(engine.on_mesh(sh.make_mesh(4, 2)), prompts=batch, key=jax.random.key(1),
                                       spec=spec, n=2))
    np.testing.assert_array_equal(sharded.samples.tokens, alone.samples.tokens)
    np.testing.assert_allclose(sharded.scores, alone.scores, atol=1e-5)
    np.testing.assert_array_equal(sharded.chosen, alone.chosen)


def test_the_asynchronous_schedule_on_a_mesh_equals_the_synchronous_one(setup):
    """decoding.schedule async on a 4x2 mesh (passes over the whole batch, masked): the single-device sync results."""
    engine, batch, reference, _ = setup
    mesh = sh.make_mesh(4, 2)
    spec = SPEC.replace(schedule="async", quorum=3)
    knobs = Knobs.create(delta=0.5, histogram_bins=spec.histogram_bins)
    out = rsd_decode(engine.on_mesh(mesh), prompts=batch, knobs=knobs, key=jax.random.key(0), spec=spec)
    assert out.tokens.sharding.is_equivalent_to(jax.NamedSharding(mesh, jax.P("data", None)), 2)
    got = jax.device_get(out)
    np.testing.assert_array_equal(got.tokens, reference.tokens)
    np.testing.assert_array_equal(got.trace.source, reference.trace.source)
    np.testing.assert_allclose(got.trace.reward, reference.trace.reward, atol=1e-5)
