"""The architecture seam (rsd_jax.models.architectures): one registry entry per hub architecture, read by the
config, the model, the loader, the cache and the FLOPs; and Qwen3 through it, as RSD's draft and target on hub
folders (its HF parity is in test_models.py)."""

from __future__ import annotations

import json

import pytest
import torch

from hf_models import qwen2_config, qwen3_config, save_causal_lm, save_skywork_prm
from rsd_jax import decode, flops, hub_layout
from rsd_jax.errors import ConfigError
from rsd_jax.models import Model, ModelConfig, architectures
from rsd_jax.models.architectures import HFName, config_from_hf
from rsd_jax.qwen_vocabulary import qwen_tokenizer

QWEN_VOCAB = 151936


def test_each_entry_names_its_architecture_and_head():
    assert architectures.resolve("Qwen3ForCausalLM") == (architectures.ARCHITECTURES["Qwen3ForCausalLM"], "lm")
    assert architectures.resolve("Qwen2ForPrmModel")[1] == "value"
    assert architectures.resolve("Qwen3ForCausalLMWithValueHead")[1] == "lm+value"
    assert architectures.with_value_head("qwen3") == "Qwen3ForCausalLMWithValueHead"
    with pytest.raises(ConfigError, match="unknown architecture 'GPT2LMHeadModel'; supported: .*Qwen3ForCausalLM"):
        config_from_hf({**qwen2_config().to_dict(), "architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(ConfigError, match="architecture 'Mamba' is not one of"):
        architectures.of(ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=1,
                                     num_kv_heads=1, head_dim=8, architecture="Mamba"))


def test_qwen3_config_weights_cache_and_flops_come_from_its_entry():
    hf = qwen3_config().to_dict()  # no `architectures`: the LM of its model_type
    cfg = config_from_hf(hf)
    assert (cfg.architecture, cfg.head_dim, cfg.qkv_bias, cfg.out_bias) == ("Qwen3ForCausalLM", 24, False, False)
    assert config_from_hf({**hf, "attention_bias": True}).out_bias  # as Llama: one flag for q, k, v and o
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and "architecture" not in config_from_hf(
        qwen2_config().to_dict()).to_dict()  # Qwen2 records stay as they were
    with pytest.raises(ConfigError, match="use_sliding_window: true is not supported"):
        config_from_hf({**hf, "use_sliding_window": True})
    names = architectures.of(cfg).weight_names
    assert names("model.layers.1.self_attn.k_norm.weight") == HFName(("layers", "self_attn", "k_norm", "weight"), 1,
                                                                      False)
    assert architectures.ARCHITECTURES["Qwen2ForCausalLM"].weight_names("model.layers.1.self_attn.k_norm.weight") \
        is None
    model = Model.abstract(cfg)
    assert model.params["layers"]["self_attn"]["q_norm"]["weight"].shape == (2, 24)
    cache = model.init_cache(3, 16)
    assert cache.k.shape == (2, 3, 2, 16, 24)  # [L, B, KVH, S, D], D the config's own head_dim
    e, d, f = 64, 24, 112
    assert flops.matmul_flops_per_token(cfg) == 2 * 2 * (e * 4 * d * 2 + 2 * e * 2 * d + 3 * e * f)


def test_hub_layouts_are_named_by_each_architectures_map():
    qwen3 = dict(hub_layout.tensor_shapes({**qwen3_config().to_dict(), "architectures": ["Qwen3ForCausalLM"]}))
    assert qwen3["model.layers.1.self_attn.q_norm.weight"] == (24,) and qwen3["lm_head.weight"] == (97, 64)
    assert qwen3["model.layers.0.self_attn.q_proj.weight"] == (4 * 24, 64)  # [out, in], head_dim 24
    assert not [n for n in qwen3 if n.endswith("proj.bias")]
    llama = dict(hub_layout.tensor_shapes(hub_layout.Layout("Llama-3.1-8B-Instruct",
                                                            (("num_hidden_layers", 1),)).hf_config()))
    assert "lm_head.weight" in llama and not [n for n in llama if n.endswith("bias")]  # untied, no biases


@pytest.fixture(scope="module")
def qwen3_folders(tmp_path_factory):
    """Hub-layout folders: a one-layer Qwen3 draft, a two-layer Qwen3 target, a Skywork-layout (Qwen2) PRM."""
    root = tmp_path_factory.mktemp("qwen3")
    small = dict(vocab_size=QWEN_VOCAB, hidden_size=32, intermediate_size=48, num_attention_heads=4, head_dim=16)
    save_causal_lm(qwen3_config(**small, num_hidden_layers=1), root / "draft", seed=1)
    target = save_causal_lm(qwen3_config(**small), root / "target", seed=2)
    save_skywork_prm(root / "prm", seed=3, **{k: v for k, v in small.items() if k != "head_dim"})
    return root, target


def test_rsd_with_a_qwen3_pair_rewriting_every_step_is_the_qwen3_target(qwen3_folders, tmp_path):
    """The draft writes and the PRM scores each step, the target rewrites it (δ above every reward): the tokens are
    transformers' greedy decoding with the Qwen3 target."""
    root, target = qwen3_folders
    question = "What is 7 times 6?"
    argv = [f"models.draft.path={root / 'draft'}", f"models.target.path={root / 'target'}",
            f"models.prm.path={root / 'prm'}", "models.tokenizer=qwen", "data.source=prompts",
            f"data.prompts=[{json.dumps(question)}]", "decoding.max_new_tokens=10", "decoding.chunk=8",
            "rsd.method=rsd", "rsd.delta=2.0", "--out", str(tmp_path / "out"), "--quiet"]
    ids = qwen_tokenizer().encode(question + "\n")
    with torch.no_grad():
        ref = target.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, eos_token_id=[151643, 151645],
                              pad_token_id=151643)[0, len(ids):].tolist()
    assert decode.main(argv) == 0
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert record["token_ids"] == ref and {s["source"] for s in record["steps"]} == {"target"}


@pytest.mark.parametrize("name, quantize", [("Qwen2.5-Math-7B-Instruct", "none"), ("Llama-3.1-8B-Instruct", "int4"),
                                            ("Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "none")])
def test_the_abstract_model_is_every_layer_built_abstractly(name, quantize):
    """Model.abstract builds one layer and repeats its shapes down the stack: the same graph, shapes, dtypes and
    metadata as tracing every layer's initialisers (which an 80-layer model took 43 s to do)."""
    import jax
    from flax import nnx

    from rsd_jax.models import catalog
    config = catalog.model_config(name).replace(num_layers=3, quantize=quantize)
    module = architectures.of(config).module
    graphdef, params = nnx.split(nnx.eval_shape(lambda: module(config, rngs=nnx.Rngs(0))))
    abstract = Model.abstract(config)
    assert abstract.graphdef == graphdef
    described = lambda v: (v.shape, v.dtype, v.get_metadata())  # noqa: E731
    is_variable = lambda v: isinstance(v, nnx.Variable)  # noqa: E731
    assert (jax.tree.leaves(jax.tree.map(described, abstract.params, is_leaf=is_variable))
            == jax.tree.leaves(jax.tree.map(described, params, is_leaf=is_variable)))
