"""Linear merge of two hub-layout checkpoints into a hub-layout folder, tensor by tensor (paper Table 4).

    merge_hub_folders(a, b, weight, out)   # w·A + (1 − w)·B, written to the (empty, staged) folder out

The inputs are folders as the hub's snapshots lay them out (config.json, *.safetensors with an optional
model.safetensors.index.json, tokenizer files): an LM (Qwen2ForCausalLM, LlamaForCausalLM) or a value-head PRM
(the Skywork layout). Their architectures must agree (rsd_jax.weights.merging.merged_config names the first field
that differs) and so must their vocabularies (tokenizer.json's tokens and added tokens: an id must mean one token).
Tensors are matched by name (a `pretrained_model.` / `base_model.` prefix dropped, as the loader drops it); one both
sides have is w·a + (1 − w)·b computed in float32 and stored in A's dtype; one only a side has (the PRM's
`v_head.summary.*`, an untied `lm_head.weight`) is copied. Only two tensors and one output shard are in memory at
a time, so merging 7B models needs a few GB, not the models.

What the folder holds:
- the safetensors shards (at most `shard_bytes` each) and model.safetensors.index.json;
- config.json and generation_config.json of the side that writes (the one with an LM head; A on a tie), so the
  merged model keeps that side's special tokens: the Qwen2.5-Math LMs' eos_token_id 151645 (<|im_end|>), not the
  Skywork PRM's 151643; the ids are vocabulary positions, not weights, and the vocabularies are checked equal.
  An LM merged with a value-head PRM is an "lm+value" model: its `architectures` entry becomes
  `Qwen2ForCausalLMWithValueHead` (`LlamaForCausalLMWithValueHead`), which rsd_jax's loaders read as both heads
  and transformers' AutoModelForCausalLM still reads as the LM (by `model_type`; it ignores `v_head`);
- the writing side's tokenizer files beside the model (the draft or target reads them), and the PRM side's in
  `prm_tokenizer/`: the official PRM protocol puts the PRM tokenizer's BOS first, which the Qwen2.5-Math tokenizer
  does not have; a config uses it with `models.prm_tokenizer: <out>/prm_tokenizer`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from rsd_jax.errors import CheckpointError, InputError
from rsd_jax.models import architectures
from rsd_jax.models.architectures import CHECKPOINT_PREFIXES
from rsd_jax.weights.hf import TensorInfo, read_headers, safetensors_files
from rsd_jax.weights.merging import merged_config, writer

GiB = 2**30
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt")
PRM_TOKENIZER_DIR = "prm_tokenizer"


def is_hub_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (any(folder.glob("*.safetensors"))
                                                   or (folder / "model.safetensors.index.json").is_file())


def canonical(name: str) -> str:
    """A tensor's name without the prefix some PRM checkpoints carry (`pretrained_model.`, `base_model.`)."""
    for prefix in CHECKPOINT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _vocabulary(folder: Path) -> Any:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data.get("model", {}).get("vocab"), sorted((t["id"], t["content"]) for t in data.get("added_tokens", []))


def check_vocabularies(a: Path, b: Path) -> None:
    """Both tokenizer.json files (where both have one) map every id to the same token; else an InputError."""
    va, vb = _vocabulary(a), _vocabulary(b)
    if va is not None and vb is not None and va != vb:
        raise InputError(f"cannot merge: the tokenizers of A ({a}) and B ({b}) map ids to different tokens, so the "
                         "merged model's ids would mean two things: merge models of one vocabulary")


def _tensors(folder: Path) -> dict[str, TensorInfo]:
    return {canonical(name): info for name, info in read_headers(safetensors_files(folder)).items()}


def _read(info: TensorInfo) -> jnp.ndarray:
    from safetensors import safe_open

    with safe_open(str(info.file), framework="flax") as handle:
        return handle.get_tensor(info.name)


def merged_tensors(a: Path, b: Path, weight: float):
    """(name, array) of every tensor of the merge, A's order first then B's own; shapes checked before any read."""
    ta, tb = _tensors(a), _tensors(b)
    for name in sorted(set(ta) & set(tb)):
        if ta[name].shape != tb[name].shape:
            raise InputError(f"cannot merge: tensor {name} has shape {ta[name].shape} in A and {tb[name].shape} in B")
    for name in list(ta) + [n for n in tb if n not in ta]:
        if name in ta and name in tb:
            x, y = _read(ta[name]), _read(tb[name])
            yield name, (weight * x.astype(jnp.float32) + (1.0 - weight) * y.astype(jnp.float32)).astype(x.dtype)
        else:
            yield name, _read(ta[name] if name in ta else tb[name])


def write_shards(tensors, out: Path, shard_bytes: int) -> int:
    """Writes (name, array) pairs as safetensors shards of at most shard_bytes and their index; the tensor count."""
    from safetensors.flax import save_file

    shards: list[dict[str, Any]] = [{}]
    size, total, files, count = 0, 0, [], 0

    def flush() -> None:
        file = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shards[-1], str(out / file), metadata={"format": "pt"})
        files.append((file, list(shards[-1])))
        shards[-1] = {}

    for name, array in tensors:
        nbytes = int(np.prod(array.shape)) * array.dtype.itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            flush()
            size = 0
        shards[-1][name] = array
        size += nbytes
        total += nbytes
        count += 1
    if shards[-1]:
        flush()
    weight_map = {}
    for k, (file, members) in enumerate(files):  # the hub's names: model-0000k-of-0000n.safetensors
        final = f"model-{k + 1:05d}-of-{len(files):05d}.safetensors"
        (out / file).rename(out / final)
        weight_map.update({name: final for name in members})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return count


def merge_hub_folders(a: Path, b: Path, weight: float, out: Path, *, shard_bytes: int = 2 * GiB) -> dict:
    """Writes the merge of hub folders a and b into the existing empty folder out (see the module doc); returns
    what was merged: the head, the side whose config and special tokens were kept, the tensor count."""
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"merge weight must be in [0, 1], got {weight}")
    cfg_a, cfg_b = architectures.config_from_folder(a), architectures.config_from_folder(b)
    merged = merged_config(cfg_a, cfg_b)
    check_vocabularies(a, b)
    side = writer(cfg_a, cfg_b)
    src, other = (a, b) if side == "a" else (b, a)
    count = write_shards(merged_tensors(a, b, weight), out, shard_bytes)
    hf = json.loads((src / "config.json").read_text())
    if merged.head == "lm+value":
        entry = architectures.with_value_head(hf.get("model_type"))
        if entry is None:
            known = ", ".join(a.model_type for a in architectures.ARCHITECTURES.values())
            raise CheckpointError(f"{src}/config.json: model_type {hf.get('model_type')!r} has no LM-with-value-head "
                                  f"architecture (known: {known})")
        hf["architectures"] = [entry]
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    for name in ("generation_config.json",) + TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    other_cfg = cfg_b if side == "a" else cfg_a
    if merged.has_value_head and other_cfg.has_value_head and (other / "tokenizer.json").is_file():
        (out / PRM_TOKENIZER_DIR).mkdir()
        for name in TOKENIZER_FILES:
            if (other / name).is_file():
                shutil.copy2(other / name, out / PRM_TOKENIZER_DIR / name)
    return {"head": merged.head, "config_from": side, "tensors": count,
            "eos_token_id": list(merged.eos_token_id), "bos_token_id": merged.bos_token_id}
