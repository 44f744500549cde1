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

from rsd_jax.models import architectures, catalog

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Layout:
    """What to write: a catalogued architecture, optionally narrowed (tests) or made shallower (rehearsal)."""

    name: str  # a key of rsd_jax.models.catalog.HF_CONFIGS
    overrides: tuple[tuple[str, Any], ...] = ()  # config.json keys replaced, e.g. (("num_hidden_layers", 8),)

    def hf_config(self) -> dict[str, Any]:
        return {**catalog.HF_CONFIGS[self.name], **dict(self.overrides)}


#: the order of a layer's tensors in a transformers checkpoint file (weight before bias)
_LAYER_ORDER = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.q_norm",
                "self_attn.k_norm", "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                "mlp.down_proj")


def tensor_shapes(config: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of a transformers checkpoint of this config.json, in file order: the parameters
    of its architecture's model (rsd_jax.models.architectures), each named as the architecture's weight-name map
    reads it back (HF Linear weights [out, in])."""
    from flax import nnx

    from rsd_jax.models.model import Model
    from rsd_jax.weights.param_paths import leaves

    cfg = architectures.config_from_hf(config)
    read_back = architectures.of(cfg).weight_names
    tensors = []
    for path, target in leaves(nnx.to_pure_dict(Model.abstract(cfg).params)):
        for layer in (range(cfg.num_layers) if path[0] == "layers" else (None,)):
            name, place = architectures.transformers_name(path, layer)
            if read_back(name) != place:
                raise ValueError(f"{cfg.architecture}: parameter {'.'.join(path)} has no transformers name its "
                                 "weight-name map reads back")
            shape = tuple(target.shape[1:] if layer is not None else target.shape)
            tensors.append((_file_order(path, layer), name, tuple(reversed(shape)) if place.transpose else shape))
    yield from ((name, shape) for _, name, shape in sorted(tensors))


def _file_order(path: tuple[str, ...], layer: int | None) -> tuple:
    """Embeddings, then layer by layer (_LAYER_ORDER), then the final norm and the heads."""
    if path[0] == "layers":
        return (1, layer, _LAYER_ORDER.index(".".join(path[1:-1])), path[-1] == "bias")
    return ({"embed_tokens": 0, "norm": 2, "lm_head": 3}.get(path[0], 4), 0, 0, path[-1] == "bias")


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
