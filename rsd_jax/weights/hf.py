"""Load HF snapshot folders (`config.json` + `*.safetensors`) into a `Model`, straight into its shardings.

Architectures: those of rsd_jax.models.architectures (Qwen2ForCausalLM, LlamaForCausalLM, Qwen3ForCausalLM, and the
Skywork-o1-Open-PRM layout: a Qwen2 backbone plus `v_head.summary.{weight,bias}`), each tensor placed by its
architecture's weight-name map. Tensors are read with the safetensors library (no torch, no pickle, no remote
code). Loading happens in two passes:
  1. the headers of every file name each tensor, its dtype and shape; each parameter of the model is matched to
     its tensors (one per layer for the stacked layer parameters) and every mismatch is reported before any data
     is read;
  2. each parameter is built with `jax.make_array_from_callback`: every device receives only its own slice, read
     from the file as that slice (`get_slice`), so no whole model, and no whole sharded tensor, ever sits on one
     device or in host memory. Files are opened per read, so their memory maps do not stay resident.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open

from rsd_jax.errors import CheckpointError
from rsd_jax.models import architectures
from rsd_jax.models.config import HeadKind, ModelConfig
from rsd_jax.models.model import Model
from rsd_jax.weights.integrity import verify_files
from rsd_jax.weights.param_paths import Path_, leaves, nest

_SUPPORTED_DTYPES = {"F32", "F16", "BF16"}


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


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint, from its file's header."""

    file: Path
    name: str
    dtype: str  # safetensors dtype, e.g. "BF16"
    shape: tuple[int, ...]


def read_headers(files: list[Path]) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint by name (headers only; no tensor data is read)."""
    tensors = {}
    for path in files:
        try:
            with safe_open(str(path), framework="flax") as handle:
                for name in handle.keys():
                    piece = handle.get_slice(name)
                    tensors[name] = TensorInfo(path, name, piece.get_dtype(), tuple(piece.get_shape()))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None
    return tensors


@dataclasses.dataclass(frozen=True)
class Source:
    """The tensors one parameter is read from: one, or one per layer in order (a stacked parameter)."""

    tensors: tuple[TensorInfo, ...]
    transpose: bool
    stacked: bool


def plan_sources(tensors: dict[str, TensorInfo], targets: dict[Path_, Any], config: ModelConfig,
                 folder: Path) -> dict[Path_, Source]:
    """Matches every parameter (targets: path -> ShapeDtypeStruct) to its tensors by the weight-name map of the
    config's architecture; reports what is missing, the wrong shapes and the unsupported dtypes before anything is
    read."""
    weight_names, num_layers = architectures.of(config).weight_names, config.num_layers
    found: dict[Path_, dict[int | None, tuple[TensorInfo, bool]]] = {}
    for info in tensors.values():
        mapped = weight_names(info.name)
        if mapped is None or mapped.path not in targets:  # e.g. lm_head of a value-head PRM, a tied head stored
            continue
        if info.dtype not in _SUPPORTED_DTYPES:
            raise CheckpointError(f"tensor {info.name!r} has unsupported dtype {info.dtype} "
                                  f"(supported: {', '.join(sorted(_SUPPORTED_DTYPES))})")
        shape = targets[mapped.path].shape[1:] if mapped.layer is not None else targets[mapped.path].shape
        expected = tuple(reversed(shape)) if mapped.transpose else tuple(shape)  # the HF layout
        if info.shape != expected:
            raise CheckpointError(f"tensor {info.name!r} has shape {info.shape} in the checkpoint but the model "
                                  f"expects {expected}")
        found.setdefault(mapped.path, {})[mapped.layer] = (info, mapped.transpose)
    missing, sources = [], {}
    for path in targets:
        layers = range(num_layers) if path[0] == "layers" else [None]
        pieces = found.get(path, {})
        absent = [i for i in layers if i not in pieces]
        missing += [".".join((path[0], str(i), *path[1:])) if i is not None else ".".join(path) for i in absent]
        if not absent:
            sources[path] = Source(tuple(pieces[i][0] for i in layers), pieces[layers[0]][1], path[0] == "layers")
    if missing:
        raise CheckpointError(f"{folder}: checkpoint lacks {len(missing)} tensor(s) the model needs, "
                              f"e.g. {', '.join(missing[:4])}")
    return sources


def read_block(source: Source, index: tuple[slice, ...], dtype: Any) -> np.ndarray:
    """The block `index` of a parameter (a device's shard), read slice by slice from the files."""
    def piece(info: TensorInfo, idx: tuple[slice, ...]) -> np.ndarray:
        hf_index = tuple(reversed(idx)) if source.transpose else idx
        try:
            with jax.default_device(jax.devices("cpu")[0]), safe_open(str(info.file), framework="flax") as handle:
                block = np.asarray(handle.get_slice(info.name)[hf_index])
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{info.file}: tensor {info.name!r} cannot be read ({e})") from None
        return np.ascontiguousarray(block.T if source.transpose else block).astype(dtype, copy=False)

    if not source.stacked:
        return piece(source.tensors[0], index)
    return np.stack([piece(info, index[1:]) for info in source.tensors[index[0]]])


def load_hf_model(folder: str | Path, *, dtype: str = "float32", head: HeadKind | None = None,
                  shardings: Any = None, config: ModelConfig | None = None, **config_overrides: Any) -> Model:
    """Loads an HF snapshot folder as a `Model`.

    dtype: parameter dtype ("float32" on CPU, "bfloat16" on accelerators); a config with `quantize` int8 / int4
    has its matmul weights quantized shard by shard as they are read (rsd_jax.weights.quantized). head: override the head the
    architecture implies (e.g. "token_logit" with good/bad ids in config_overrides). config: the model's config
    when already read (`rsd_jax.weights.model_config`; then dtype, head and the overrides are not used).
    shardings: a params-shaped tree (pure dict or nnx.State) of `jax.sharding.Sharding` each parameter is built in
    (default: the first device).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    if config is None:
        config = architectures.config_from_folder(folder, dtype=dtype, head=head, **config_overrides)
    targets = dict(leaves(nnx.to_pure_dict(Model.abstract(config.replace(quantize="none")).params)))
    files = safetensors_files(folder)
    verify_files(folder, files)  # SHA-256 against the hub cache or checksums.sha256, where known
    sources = plan_sources(read_headers(files), targets, config, folder)
    placement = dict(leaves(nnx.to_pure_dict(shardings) if isinstance(shardings, nnx.State) else shardings or {}))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    if config.quantize != "none":  # each shard quantized on the host as it is read (rsd_jax.weights.quantized)
        from rsd_jax.weights.quantized import quantized_params

        def read(path: Path_, index: tuple[slice, ...]) -> np.ndarray:
            return read_block(sources[path], index, np.float32)

        return Model.from_pure_dict(config, quantized_params(config, read, placement, device))
    arrays = {}
    for path, target in targets.items():
        source = sources[path]
        arrays[path] = jax.make_array_from_callback(
            target.shape, placement.get(path, device),
            lambda index, source=source, dtype=target.dtype: read_block(source, index, dtype))
    return Model.from_pure_dict(config, nest(arrays))

