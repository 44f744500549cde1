"""`in_place.when` / `in_place.switch` compute what `lax.cond` / `lax.switch` compute, and a model pass inside
them updates the KV cache in place: the compiled loop holds no copy of the cache (under `lax.switch` it does)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsd_jax.decoding import in_place
from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model

CFG = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8)
BATCH, CAPACITY = 6, 40


def _double(x):
    return {"a": x["a"] * 2, "b": x["b"] + 1}


def _negate(x):
    return {"a": -x["a"], "b": x["b"] - 1}


@pytest.mark.parametrize("pred", [True, False])
def test_when_is_cond(pred):
    x = {"a": jnp.arange(4.0), "b": jnp.int32(3)}
    got = jax.jit(lambda p, x: in_place.when(p, _double, x))(pred, x)
    want = jax.lax.cond(pred, _double, lambda x: x, x)
    jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_switch_is_lax_switch(index):
    x = {"a": jnp.arange(4.0), "b": jnp.int32(3)}
    branches = [_double, _negate, lambda x: x]
    got = jax.jit(lambda i, x: in_place.switch(i, branches, x))(index, x)
    want = jax.lax.switch(index, branches, x)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def _cache_copies(switch) -> int:
    """Copies of a whole key or value cache in the compiled loop of 5 ticks, each a 1-token pass over the first 2 or
    4 rows of 6 (by the tick), chosen by `switch` (a function of index, branches, operand like lax.switch)."""
    model = Model.init(CFG, seed=0)
    cache = model.init_cache(BATCH, CAPACITY)

    def loop(cache):
        def tick(i, cache):
            def run(size, cache):
                rows = jnp.arange(size, dtype=jnp.int32)
                return model.backbone(jnp.full((size, 1), 3, jnp.int32), cache.lengths[rows], cache,
                                      jnp.ones((size,), jnp.int32), rows=rows).cache
            return switch(i % 2, [lambda c: run(2, c), lambda c: run(4, c)], cache)
        return jax.lax.fori_loop(0, 5, tick, cache)

    text = jax.jit(loop, donate_argnums=0).lower(cache).compile().as_text()
    shape = "f32[" + ",".join(map(str, cache.k.shape)) + "]"
    return sum(1 for line in text.splitlines() if " copy(" in line and shape in line.split("copy(")[0])


def test_a_pass_inside_in_place_switch_copies_no_cache():
    assert _cache_copies(in_place.switch) == 0


def test_the_same_pass_inside_lax_switch_copies_the_cache():  # what in_place is for: the check above can fail
    assert _cache_copies(jax.lax.switch) > 0
