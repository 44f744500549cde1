"""The rehearsal's measurements on small hub-layout folders (the command itself writes 9 GB of weights): each
weight lands in its sharding, a device holds its share, and the resident-memory probe sees the load."""

from __future__ import annotations

from pathlib import Path

import jax

from rsd_jax import rehearse, sharding
from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.hub_layout import Layout, write_snapshot

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "paper" / "qwen25_math_1.5b_7b_skywork1.5b.yaml")
WIDE = (("hidden_size", 256), ("intermediate_size", 512), ("num_attention_heads", 8), ("num_key_value_heads", 2),
        ("num_hidden_layers", 2))


def test_a_model_loads_into_its_shards_and_the_probe_sees_it(tmp_path):
    write_snapshot(Layout(rehearse.NAMES["draft"], WIDE), tmp_path / "draft", shard_bytes=40 * 2**20)
    assert len(list((tmp_path / "draft").glob("model-*.safetensors"))) == 2  # sharded, with an index
    cfg = load_config(RunConfig, CONFIG, [f"models.draft.path={tmp_path / 'draft'}"])
    mesh = sharding.make_mesh(1, 8, kv_heads=(2,))
    row, model = rehearse.load_one(cfg, CONFIG, mesh, "draft")
    fractions = rehearse.shard_fractions(model)
    assert fractions["['embed_tokens']['embedding']"] == 1 / 8  # the vocabulary over all 8 devices
    assert fractions["['layers']['self_attn']['k_proj']['kernel']"] == 1 / 2  # 2 KV heads: whole heads, 2 ways
    assert fractions["['norm']['weight']"] == 1.0
    assert row["max_per_device_vs_model"] < 0.2 and row["rss_growth_gib"] > 0
    assert set(rehearse.per_device_bytes(model)) == set(jax.devices()[:8])
