"""Analytic FLOPs against a count of the decoder's matmuls."""

import jax.numpy as jnp
import numpy as np

from rsd_jax.flops import flops_per_token, matmul_flops_per_token, span_flops
from rsd_jax.models import Model, ModelConfig

CFG = ModelConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                  num_kv_heads=2, head_dim=8)


def test_matmul_flops_equal_twice_the_weight_matrix_entries():
    params = Model.init(CFG).pure_dict()
    layers = params["layers"]  # stacked: [L, ...] per parameter
    per_layer = sum(v["kernel"][0].size for m in ("self_attn", "mlp") for v in layers[m].values())
    assert matmul_flops_per_token(CFG) == 2 * CFG.num_layers * per_layer


def test_span_flops_is_the_sum_over_positions():
    total = sum(flops_per_token(CFG, p + 1) for p in range(5, 12))
    assert span_flops(CFG, 5, 7) == total
    arr = span_flops(CFG, jnp.array([5, 0]), jnp.array([7, 0]))
    np.testing.assert_allclose(arr, [total, 0])


def test_real_model_counts_trace_under_jit():
    # a Qwen2.5-Math-7B token is 1.3e10 FLOPs and the 72B head alone 2.5e9: above int32, so counts are floats
    import jax

    from rsd_jax.capacity import MODELS
    from rsd_jax.decoding.usage import Usage

    for name, cfg in MODELS.items():
        start, n = jnp.array([0, 4000], jnp.int32), jnp.array([256, 1], jnp.int32)
        usage = jax.jit(lambda w, s, k: w.add_forward(cfg, s, k, 256, 4352, 1).add_head(cfg, k > 0))(
            Usage.zeros(2), start, n)
        expected = span_flops(cfg, 4000, 1, with_head=False) + 2 * cfg.hidden_size * cfg.vocab_size
        np.testing.assert_allclose(float(usage.useful_flops[1]), expected + 2 * cfg.hidden_size * cfg.vocab_size,
                                   rtol=1e-6)
        assert float(usage.executed_flops) > 2 * 256 * matmul_flops_per_token(cfg) > 2**31, name
