"""Weight-only quantization: the arithmetic, the layers, quantizing while loading (HF folders, orbax, into shardings),
the stored quantized copy, and the config key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hf_models import qwen2_config, save_causal_lm, save_skywork_prm
from rsd_jax.convert import main as convert_main
from rsd_jax.errors import CheckpointError, ConfigError
from rsd_jax.models import Model, ModelConfig
from rsd_jax.models.model import full_forward
from rsd_jax.models.quantize import QuantizedLinear, dequantize, group_size, quantize_columns, quantize_rows
from rsd_jax.weights import load_hf_model, load_model, restore_model, save_model

TINY = ModelConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                   num_kv_heads=2, head_dim=8, qkv_bias=True)


@pytest.fixture(scope="module")
def hf_lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant") / "lm"
    save_causal_lm(qwen2_config(tie_word_embeddings=False), folder, seed=5)
    return folder


@pytest.fixture(scope="module")
def hf_prm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant") / "prm"
    save_skywork_prm(folder, seed=6)
    return folder


def _tokens(vocab: int, shape=(2, 12), seed=0) -> jax.Array:
    return jnp.asarray(np.random.RandomState(seed).randint(0, vocab, shape), jnp.int32)


@pytest.mark.parametrize("mode, qmax", [("int8", 127), ("int4", 7)])
def test_quantize_columns_is_round_to_nearest_on_a_per_group_grid(mode, qmax):
    w = np.random.RandomState(0).randn(3, 256, 24).astype(np.float32)
    w[:, :, 5] = 0.0  # an all-zero column keeps a finite scale
    q, scale = quantize_columns(w, mode)
    g = group_size(256, mode)
    assert q.dtype.name == mode and scale.shape == (3, 256 // g, 24)
    assert np.abs(q.astype(np.int32)).max() == qmax  # each group's largest magnitude lands on the grid's end
    back = np.asarray(dequantize(jnp.asarray(q), jnp.asarray(scale), jnp.float32))
    step = np.repeat(scale, g, axis=1)
    assert np.all(np.abs(back - w) <= step / 2 * (1 + 1e-6))  # rounding to the nearest grid point
    assert np.all(back[:, :, 5] == 0.0) and np.all(np.isfinite(scale))


def test_group_sizes():
    assert group_size(3584, "int8") == 3584 and group_size(3584, "int4") == 128
    assert group_size(18944, "int4") == 128 and group_size(192, "int4") == 96 and group_size(7, "int4") == 7


def test_quantize_rows_scales_each_embedding_row():
    table = np.random.RandomState(1).randn(10, 16).astype(np.float32)
    q, scale = quantize_rows(table, "int8")
    assert q.shape == (10, 16) and scale.shape == (10, 1)
    np.testing.assert_allclose(scale[:, 0], np.abs(table).max(axis=1) / 127, rtol=1e-6)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_linear_is_the_matmul_with_the_dequantized_kernel(mode):
    from flax import nnx

    layer = QuantizedLinear(256, 8, bias=True, mode=mode, dtype=jnp.float32, rngs=nnx.Rngs(0), axes=(None, None))
    layer.bias[...] = jnp.arange(8, dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(1), (3, 256))
    want = x @ dequantize(layer.kernel[...], layer.scale[...], jnp.float32) + layer.bias[...]
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_bad_quantize_values_are_one_line_errors():
    with pytest.raises(ConfigError, match="quantize 'int3' is not one of none, int8, int4"):
        TINY.replace(quantize="int3")
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import load_config

    with pytest.raises(ConfigError, match="models.target.quantize"):
        load_config(RunConfig, "configs/arith_tiny.yaml", ["models.target.quantize=int3"])


def _flat(model: Model) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(model.pure_dict())}


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_loading_quantizes_exactly_what_the_float_weights_give(hf_lm, mode):
    """Every quantized leaf loaded from the safetensors equals quantize_columns / quantize_rows of the float
    model's weights; everything else is the float weight itself."""
    floats = load_hf_model(hf_lm)
    quant = load_hf_model(hf_lm, quantize=mode)
    f = floats.pure_dict()
    q = quant.pure_dict()
    kq, ks = quantize_columns(np.asarray(f["layers"]["mlp"]["down_proj"]["kernel"]), mode)
    np.testing.assert_array_equal(np.asarray(q["layers"]["mlp"]["down_proj"]["kernel"]), kq)
    np.testing.assert_array_equal(np.asarray(q["layers"]["mlp"]["down_proj"]["scale"]), ks)
    head_q, head_s = quantize_columns(np.asarray(f["lm_head"]["kernel"]), "int8")  # the LM head is int8 in both
    np.testing.assert_array_equal(np.asarray(q["lm_head"]["kernel"]), head_q)
    np.testing.assert_array_equal(np.asarray(q["lm_head"]["scale"]), head_s)
    eq, es = quantize_rows(np.asarray(f["embed_tokens"]["embedding"]), "int8")
    np.testing.assert_array_equal(np.asarray(q["embed_tokens"]["embedding"]), eq)
    np.testing.assert_array_equal(np.asarray(q["embed_tokens"]["scale"]), es)
    np.testing.assert_array_equal(np.asarray(q["norm"]["weight"]), np.asarray(f["norm"]["weight"]))
    np.testing.assert_array_equal(np.asarray(q["layers"]["self_attn"]["q_proj"]["bias"]),
                                  np.asarray(f["layers"]["self_attn"]["q_proj"]["bias"]))


def test_int8_logits_stay_close_to_float(hf_lm):
    floats, quant = load_hf_model(hf_lm), load_hf_model(hf_lm, quantize="int8")
    tokens = _tokens(floats.config.vocab_size)
    lf, _ = full_forward(floats, tokens)
    lq, _ = full_forward(quant, tokens)
    assert float(jnp.abs(lf - lq).max()) < 0.05 * float(jnp.abs(lf).max())
    assert float(jnp.mean(lf.argmax(-1) == lq.argmax(-1))) >= 0.9


def test_a_sharded_load_equals_the_single_device_one(hf_lm):
    """Shards cut along the quantized axis (o_proj's and down_proj's input rows over "model") still get the scales
    of whole columns: the sharded int4 model is the unsharded one, leaf for leaf."""
    from rsd_jax import sharding

    config = load_hf_model(hf_lm, quantize="int4").config
    mesh = sharding.make_mesh(data=1, model=2, devices=jax.devices()[:2], kv_heads=(config.num_kv_heads,))
    sharded = load_hf_model(hf_lm, config=config, shardings=sharding.param_shardings(config, mesh))
    single = load_hf_model(hf_lm, config=config)
    spec = sharded.pure_dict()["layers"]["mlp"]["down_proj"]["kernel"].sharding.spec
    assert any(axis is not None for axis in spec), spec  # really cut
    a, b = _flat(sharded), _flat(single)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_prm_rewards_stay_close_and_the_value_head_stays_float(hf_prm):
    floats, quant = load_hf_model(hf_prm), load_hf_model(hf_prm, quantize="int8")
    assert quant.pure_dict()["v_head"]["summary"]["kernel"].dtype == jnp.float32
    tokens = _tokens(floats.config.vocab_size)
    _, hf = full_forward(floats, tokens)
    _, hq = full_forward(quant, tokens)
    rf, rq = floats.rewards(hf), quant.rewards(hq)
    assert float(jnp.abs(rf - rq).max()) < 0.02


def test_a_float_orbax_checkpoint_is_quantized_as_it_restores(hf_lm, tmp_path):
    save_model(load_hf_model(hf_lm), tmp_path / "float")
    restored = load_model(tmp_path / "float", quantize="int8")
    direct = load_hf_model(hf_lm, quantize="int8")
    assert restored.config == direct.config
    a, b = _flat(restored), _flat(direct)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_convert_stores_a_quantized_copy_that_restores_as_it_is(hf_lm, tmp_path, mode):
    assert convert_main([str(hf_lm), str(tmp_path / "q"), "--dtype", "float32", "--quantize", mode]) == 0
    back = load_model(tmp_path / "q")
    assert back.config.quantize == mode
    assert back.pure_dict()["layers"]["mlp"]["up_proj"]["kernel"].dtype.name == mode
    direct = _flat(load_hf_model(hf_lm, quantize=mode))
    for key, value in _flat(back).items():
        np.testing.assert_array_equal(value, direct[key], err_msg=key)
    with pytest.raises(CheckpointError, match=f"holds {mode}-quantized weights and the run asks for quantize='none'"):
        restore_model(tmp_path / "q", config=back.config.replace(quantize="none"))


def test_random_quantized_models_init_and_compile_abstractly():
    model = Model.init(TINY.replace(quantize="int8"), seed=1)
    logits, _ = full_forward(model, _tokens(TINY.vocab_size))
    assert logits.shape == (2, 12, TINY.vocab_size) and bool(jnp.all(jnp.isfinite(logits)))
    abstract = Model.abstract(TINY.replace(quantize="int4"))
    assert abstract.pure_dict()["layers"]["self_attn"]["o_proj"]["kernel"].dtype.name == "int4"


def test_the_single_chip_paper_config_decodes_the_paper_models_as_transformers_does(tmp_path):
    """configs/paper/..._v5e1.yaml (bfloat16, int8 quantized as the weights load) on the hub-layout paper models, every
    draft step kept (δ = 0): the tokens are transformers' bfloat16 greedy decoding of the float draft (the cycle
    models' margins survive int8) and the int8 PRM's rewards are the official protocol's float ones within 0.01."""
    import json

    import paper_models
    from test_paper_setting import NEW_TOKENS, hf_greedy, official_rewards
    from rsd_jax import decode
    from rsd_jax.data.datasets import dataset_rows
    from rsd_jax.data.templates import QWEN25_MATH_COT
    from rsd_jax.qwen_vocabulary import qwen_tokenizer

    tok = qwen_tokenizer()
    paths = {"draft": paper_models.cycle_lm("Qwen2.5-Math-1.5B-Instruct", tmp_path / "draft",
                                            paper_models.DRAFT_CYCLE, tok),
             "target": paper_models.cycle_lm("Qwen2.5-Math-7B-Instruct", tmp_path / "target",
                                             paper_models.TARGET_CYCLE, tok),
             "prm": paper_models.skywork_prm(tmp_path / "prm")}
    question = dataset_rows("math500")[0]["problem"]
    budget = len(tok.encode(QWEN25_MATH_COT.replace("{question}", question))) + NEW_TOKENS
    args = ["--config", "configs/paper/qwen25_math_1.5b_7b_skywork1.5b_v5e1.yaml", "data.n=1", "rsd.delta=0.0",
            *(f"models.{k}.path={v}" for k, v in paths.items()), f"decoding.max_new_tokens={budget}",
            "decoding.patience=0", "--out", str(tmp_path / "run"), "--quiet"]
    assert decode.main(args) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert record["token_ids"] == hf_greedy(paths["draft"], question)
    steps = [step["text"].split("\n\n")[0] for step in record["steps"]]
    np.testing.assert_allclose([step["reward"] for step in record["steps"]],
                               official_rewards(paths["prm"], question, steps), atol=1e-2)
