"""A forward over some rows of a batch (`rows=`) computes, writes and reads only those rows, and equals the same
rows of a whole-batch forward."""

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model

CFG = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8)


def _prefilled(model, batch, capacity, lengths, seed=0):
    tokens = jax.random.randint(jax.random.key(seed), (batch, capacity), 0, CFG.vocab_size)
    out = model.backbone(tokens, jnp.zeros((batch,), jnp.int32), model.init_cache(batch, capacity),
                         jnp.asarray(lengths, jnp.int32))
    return out.cache


def test_gathered_rows_equal_the_whole_batch_and_leave_other_rows_alone():
    model = Model.init(CFG, seed=1)
    batch, capacity, chunk = 6, 40, 3
    lengths = jnp.asarray([5, 9, 0, 12, 7, 3], jnp.int32)
    cache = _prefilled(model, batch, capacity, lengths)
    new = jax.random.randint(jax.random.key(2), (batch, chunk), 0, CFG.vocab_size)
    n = jnp.asarray([3, 1, 2, 0, 3, 2], jnp.int32)
    full = model.backbone(new, lengths, cache, n)

    rows = jnp.asarray([4, 0, 1], jnp.int32)
    part = model.backbone(new[rows], lengths[rows], cache, n[rows], rows=rows)
    for g, b in enumerate(np.asarray(rows)):
        k = int(n[b])
        np.testing.assert_allclose(part.hidden[g, :k], full.hidden[b, :k], rtol=1e-5, atol=1e-5)
        end = int(lengths[b] + n[b])
        np.testing.assert_allclose(part.cache.k[:, b, :, :end], full.cache.k[:, b, :, :end], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(part.cache.v[:, b, :, :end], full.cache.v[:, b, :, :end], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(part.cache.lengths, jnp.asarray([8, 10, 0, 12, 10, 3]))
    untouched = np.asarray([2, 3, 5])
    np.testing.assert_array_equal(part.cache.k[:, untouched], cache.k[:, untouched])
    np.testing.assert_array_equal(part.cache.v[:, untouched], cache.v[:, untouched])


def test_a_gathered_row_with_nothing_to_feed_is_unchanged():
    model = Model.init(CFG, seed=3)
    lengths = jnp.asarray([4, 6, 2], jnp.int32)
    cache = _prefilled(model, 3, 16, lengths)
    rows = jnp.asarray([2, 1], jnp.int32)
    out = model.backbone(jnp.ones((2, 2), jnp.int32), lengths[rows], cache, jnp.asarray([0, 2], jnp.int32), rows=rows)
    np.testing.assert_array_equal(out.cache.k[:, 2], cache.k[:, 2])
    np.testing.assert_array_equal(out.cache.lengths, jnp.asarray([4, 8, 2]))
