"""Load HF snapshot folders (`config.json` + `*.safetensors`) into a `Model`.

Architectures: Qwen2ForCausalLM, LlamaForCausalLM, and the Skywork-o1-Open-PRM layout (a Qwen2 backbone
plus `v_head.summary.{weight,bias}`). Tensors are read with the safetensors library (no torch, no
pickle, no remote code), one at a time, converted to the model's dtype and, when `shardings` is given,
placed straight into their sharding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open

from rsd_jax.errors import CheckpointError
from rsd_jax.models.config import HeadKind, ModelConfig
from rsd_jax.models.model import Model

_SUPPORTED_DTYPES = {"F32", "F16", "BF16"}
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")
_PREFIXES = ("pretrained_model.", "base_model.")

# HF name (without the "model." prefix) -> (params path, transpose?)
_LAYER_LINEARS = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
}


def hf_name_to_path(name: str) -> tuple[tuple[Any, ...], bool] | None:
    """Maps an HF tensor name to (path in our params tree, transpose). None: not a tensor we use."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.startswith("v_head.summary."):
        leaf = name.rsplit(".", 1)[1]
        return ("v_head", "summary", "kernel" if leaf == "weight" else "bias"), leaf == "weight"
    if name == "lm_head.weight":
        return ("lm_head", "kernel"), True
    if name.startswith("model."):
        name = name[len("model."):]
    if name == "embed_tokens.weight":
        return ("embed_tokens", "embedding"), False
    if name == "norm.weight":
        return ("norm", "weight"), False
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if m is None:
        return None
    layer, module, leaf = int(m.group(1)), m.group(2), m.group(3)
    parts = tuple(module.split("."))
    if module in _LAYER_LINEARS:
        return ("layers", layer, *parts, "kernel" if leaf == "weight" else "bias"), leaf == "weight"
    if module in ("input_layernorm", "post_attention_layernorm") and leaf == "weight":
        return ("layers", layer, module, "weight"), False
    return None


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's files: those named by `model.safetensors.index.json`, else every *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files = [folder / f for f in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} names shard files that are missing: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files in {folder}")
    return files


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, str, Callable[[], np.ndarray]]]:
    """Yields (name, safetensors dtype, loader) for every tensor, reading nothing until loader() is called."""
    cpu = jax.devices("cpu")[0]
    for path in files:
        try:
            handle = safe_open(str(path), framework="flax")
            names = list(handle.keys())
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None
        for name in names:
            dtype = handle.get_slice(name).get_dtype()

            def load(handle=handle, name=name, path=path) -> np.ndarray:
                try:
                    with jax.default_device(cpu):
                        return np.asarray(handle.get_tensor(name))
                except (SafetensorError, OSError, ValueError) as e:
                    raise CheckpointError(f"{path}: tensor {name!r} cannot be read ({e})") from None

            yield name, dtype, load


def load_hf_model(folder: str | Path, *, dtype: str = "float32", head: HeadKind | None = None,
                  shardings: Any = None, **config_overrides: Any) -> Model:
    """Loads an HF snapshot folder as a `Model`.

    dtype: parameter dtype ("float32" on CPU, "bfloat16" on accelerators). head: override the head the
    architecture implies (e.g. "token_logit" with good/bad ids in config_overrides). shardings: an
    optional params-shaped tree of `jax.sharding.Sharding` to place each tensor into.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    config = ModelConfig.from_hf_folder(folder, dtype=dtype, head=head, **config_overrides)
    abstract = Model.abstract(config)
    targets = nnx.to_pure_dict(abstract.params)
    target_shardings = nnx.to_pure_dict(shardings) if isinstance(shardings, nnx.State) else shardings
    filled: dict[tuple[Any, ...], jax.Array] = {}
    for name, st_dtype, load in iter_tensors(safetensors_files(folder)):
        mapped = hf_name_to_path(name)
        if mapped is None:
            continue
        path, transpose = mapped
        target = _lookup(targets, path)
        if target is None:  # e.g. lm_head of a value-head PRM, or a tied head stored anyway
            continue
        if st_dtype not in _SUPPORTED_DTYPES:
            raise CheckpointError(f"tensor {name!r} has unsupported dtype {st_dtype} "
                                  f"(supported: {', '.join(sorted(_SUPPORTED_DTYPES))})")
        array = load()
        expected = tuple(reversed(target.shape)) if transpose else tuple(target.shape)  # HF layout
        if array.shape != expected:
            raise CheckpointError(f"tensor {name!r} has shape {tuple(array.shape)} in the checkpoint "
                                  f"but the model expects {expected}")
        if transpose:
            array = array.T
        sharding = _lookup(target_shardings, path) if target_shardings is not None else None
        value = jnp.asarray(array, dtype=target.dtype)
        filled[path] = jax.device_put(value, sharding) if sharding is not None else value
    missing = [".".join(map(str, p)) for p in _leaf_paths(targets) if p not in filled]
    if missing:
        raise CheckpointError(f"{folder}: checkpoint lacks {len(missing)} tensor(s) the model needs, "
                              f"e.g. {', '.join(missing[:4])}")
    return Model.from_pure_dict(config, _build(targets, filled))


def _lookup(tree: Any, path: tuple[Any, ...]) -> Any:
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _leaf_paths(tree: dict, prefix: tuple = ()) -> Iterator[tuple[Any, ...]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, prefix + (key,))
        else:
            yield prefix + (key,)


def _build(tree: dict, filled: dict, prefix: tuple = ()) -> dict:
    return {k: _build(v, filled, prefix + (k,)) if isinstance(v, dict) else filled[prefix + (k,)]
            for k, v in tree.items()}
