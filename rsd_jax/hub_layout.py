"""Write a model folder laid out exactly like a hub snapshot of the paper's models, with random weights.

config.json and generation_config.json as the snapshot has them, tokenizer files of the real Qwen2.5 vocabulary
(tokenizer.json, tokenizer_config.json with the chat template and special tokens), and bfloat16 safetensors split
into shards of at most `shard_bytes` with a `model.safetensors.index.json`. Tensor names follow transformers'
(`model.layers.{i}.self_attn.q_proj.weight` [out, in], ...); a Skywork PRM adds `v_head.summary.{weight,bias}`.

Used where no real checkpoint can be: the rehearsal at real size (`python -m rsd_jax.rehearse`), the paper-config
tests at tiny size, and notebook 03 offline. Tensors are written one shard at a time, so writing a model needs
about one shard of memory.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rsd_jax.models import catalog

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Layout:
    """What to write: a catalogued architecture, optionally narrowed (tests) or made shallower (rehearsal)."""

    name: str  # a key of rsd_jax.models.catalog.HF_CONFIGS
    overrides: tuple[tuple[str, Any], ...] = ()  # config.json keys replaced, e.g. (("num_hidden_layers", 8),)

    def hf_config(self) -> dict[str, Any]:
        return {**catalog.HF_CONFIGS[self.name], **dict(self.overrides)}


def tensor_shapes(config: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of a transformers Qwen2 checkpoint of this config, in file order."""
    e, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    d = e // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    yield "model.embed_tokens.weight", (v, e)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (e,)
        for name, out in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            yield p + f"self_attn.{name}.weight", (out, e)
            yield p + f"self_attn.{name}.bias", (out,)
        yield p + "self_attn.o_proj.weight", (e, q)
        yield p + "post_attention_layernorm.weight", (e,)
        yield p + "mlp.gate_proj.weight", (f, e)
        yield p + "mlp.up_proj.weight", (f, e)
        yield p + "mlp.down_proj.weight", (e, f)
    yield "model.norm.weight", (e,)
    if not config["tie_word_embeddings"] and config["architectures"][0] == "Qwen2ForCausalLM":
        yield "lm_head.weight", (v, e)
    if config["architectures"][0] == "Qwen2ForPrmModel":
        yield "v_head.summary.weight", (1, e)
        yield "v_head.summary.bias", (1,)


def random_tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Norm weights near 1, everything else N(0, scale²) (float32; written as bfloat16)."""
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape, np.float32)).astype(np.float32)
    return (scale * rng.standard_normal(shape, np.float32)).astype(np.float32)


def write_snapshot(layout: Layout, folder: str | Path, *, seed: int = 0, scale: float = 0.02,
                   shard_bytes: int = 2 * GiB, bos_token: str | None = None) -> Path:
    """Writes the model folder; returns it. bos_token: the tokenizer's BOS (Skywork's PRM tokenizer has one, the
    Qwen2.5-Math tokenizers none)."""
    from safetensors.flax import save_file

    import jax.numpy as jnp

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = layout.hf_config()
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if not catalog.is_prm(layout.name):
        (folder / "generation_config.json").write_text(json.dumps(catalog.QWEN_GENERATION_CONFIG, indent=2) + "\n")
    write_tokenizer(folder, bos_token=bos_token)
    rng = np.random.default_rng(seed)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensor_shapes(config):
        nbytes = 2 * int(np.prod(shape))
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: jnp.asarray(random_tensor(name, shape, rng, scale), jnp.bfloat16) for name, shape in shard}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        total += sum(2 * int(np.prod(t.shape)) for t in tensors.values())
        weight_map.update({name: file for name, _ in shard})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def write_tokenizer(folder: Path, *, bos_token: str | None = None) -> None:
    """tokenizer.json of the real Qwen2.5 vocabulary and a tokenizer_config.json as the snapshots have it."""
    from rsd_jax.qwen_vocabulary import qwen_tokenizer

    qwen_tokenizer().save(folder)  # tokenizer.json (and a minimal tokenizer_config.json, replaced below)
    config = {"bos_token": bos_token, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
              "chat_template": catalog.QWEN25_MATH_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
              "errors": "replace", "model_max_length": 131072, "split_special_tokens": False,
              "tokenizer_class": "Qwen2Tokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
