"""Orbax round trip, and a clear error for every kind of bad checkpoint."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_models import llama_config, qwen2_config, save_causal_lm
from rsd_jax.errors import CheckpointError, ConfigError
from rsd_jax.models import Model, ModelConfig
from rsd_jax.weights import load_hf_model, load_model, restore_model, save_model

TINY = ModelConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                   num_kv_heads=2, head_dim=8, qkv_bias=True)


def test_orbax_round_trip_is_bit_exact(tmp_path):
    model = Model.init(TINY, seed=3)
    save_model(model, tmp_path / "ckpt", metadata={"note": "test"})
    back = load_model(tmp_path / "ckpt")
    assert back.config == model.config
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(back.params), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_into_given_shardings(tmp_path):
    model = Model.init(TINY)
    save_model(model, tmp_path / "ckpt")
    mesh = jax.make_mesh((8,), ("model",))
    replicated = jax.sharding.NamedSharding(mesh, jax.P())
    shardings = jax.tree.map(lambda _: replicated, model.pure_dict())
    back = restore_model(tmp_path / "ckpt", shardings=shardings)
    assert all(x.sharding == replicated for x in jax.tree.leaves(back.params))


def _hf_folder(tmp_path):
    folder = tmp_path / "hf"
    save_causal_lm(qwen2_config(), folder)
    return folder


def _edit_tensors(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


@pytest.mark.parametrize("case, message", [
    ("missing_folder", "model folder not found"),
    ("missing_config", "no config.json"),
    ("unknown_arch", "unknown architecture 'GPT2LMHeadModel'"),
    ("no_safetensors", "no *.safetensors files"),
    ("missing_tensor", "lacks 1 tensor(s) the model needs, e.g. layers.1.mlp.up_proj.kernel"),
    ("shape_mismatch", "'model.layers.0.self_attn.q_proj.weight' has shape (64, 32) in the checkpoint "
                       "but the model expects (64, 64)"),
    ("bad_dtype", "'model.norm.weight' has unsupported dtype F64"),
    ("corrupt_file", "cannot read safetensors file"),
    ("missing_shard", "names shard files that are missing"),
    ("orbax_missing_params", "has no params/ folder"),
])
def test_bad_checkpoints_raise_clear_errors(tmp_path, case, message):
    folder = _hf_folder(tmp_path)
    if case == "missing_folder":
        folder = tmp_path / "nowhere"
    elif case == "missing_config":
        (folder / "config.json").unlink()
    elif case == "unknown_arch":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["architectures"] = ["GPT2LMHeadModel"]
        (folder / "config.json").write_text(json.dumps(cfg))
    elif case == "no_safetensors":
        (folder / "model.safetensors").unlink()
    elif case == "missing_tensor":
        _edit_tensors(folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    elif case == "shape_mismatch":
        _edit_tensors(folder, lambda t: t.update({"model.layers.0.self_attn.q_proj.weight":
                                                  torch.zeros(64, 32)}))
    elif case == "bad_dtype":
        _edit_tensors(folder, lambda t: t.update({"model.norm.weight": torch.ones(64, dtype=torch.float64)}))
    elif case == "corrupt_file":
        (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00not a header at all")
    elif case == "missing_shard":
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}))
    elif case == "orbax_missing_params":
        save_model(Model.init(TINY), tmp_path / "ckpt")
        import shutil

        shutil.rmtree(tmp_path / "ckpt" / "params")
        folder = tmp_path / "ckpt"
    with pytest.raises((CheckpointError, ConfigError)) as info:
        load_model(folder)
    assert message in str(info.value)


def test_llama_config_fields(tmp_path):
    save_causal_lm(llama_config(attention_bias=True), tmp_path)
    cfg = load_hf_model(tmp_path).config
    assert cfg.qkv_bias and cfg.out_bias and cfg.num_kv_heads == 1 and cfg.rope.theta == 500_000.0
