"""The architecture seam: one registry, keyed by the `architectures` entry of a hub snapshot's config.json, of
everything the library needs to know about a decoder family.

Per architecture (`Architecture`): the nnx module that computes it, how its config.json sets the attention's
options, the map from its checkpoint's tensor names to our parameter paths, the layout of its KV cache and the
FLOPs of one token's matrix products. `ModelConfig.architecture` names the entry a model was built from, so every
consumer (the model, the loaders, the cache, the FLOPs accounting, the capacity tables) asks `of(config)`.

Adding an architecture is one entry in `ARCHITECTURES` plus, where its layers differ, its module (as Qwen3 in
rsd_jax.models.qwen3). Each LM entry NAME also accepts `NAMEWithValueHead` (an LM merged with a value-head PRM,
rsd_jax.weights.hub_merge); `PRM_ENTRIES` names the value-head PRMs of a family (the Skywork-o1-Open-PRM layout).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable

from rsd_jax.errors import ConfigError
from rsd_jax.models.config import HeadKind, ModelConfig, RopeConfig
from rsd_jax.models.decoder import Decoder
from rsd_jax.models.qwen3 import Qwen3Decoder

Path_ = tuple[str, ...]  # a parameter's path in the params tree, e.g. ("layers", "mlp", "up_proj", "kernel")
WITH_VALUE_HEAD = "WithValueHead"  # suffix of an LM entry merged with a value head


@dataclasses.dataclass(frozen=True)
class HFName:
    """Where a checkpoint tensor goes: the parameter path, the layer (stacked parameters) and whether it is
    transposed (HF Linear weights are [out, in], our kernels [in, out])."""

    path: Path_
    layer: int | None
    transpose: bool


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One decoder family as a hub snapshot names it.

    name: config.json's `architectures` entry of the LM (and `ModelConfig.architecture`); model_type: its
    `model_type`. module(config, rngs=) builds the nnx decoder. attention(hf) -> the ModelConfig fields its
    config.json sets beyond the shared ones (biases). weight_names(name) -> HFName, or None for a tensor we do not
    use. cache_layout(config) -> (layers, kv heads, head dim): a KV cache is k, v [L, B, KVH, S, D].
    matmul_flops(config) -> FLOPs of one token's projections and MLP through all layers (rsd_jax.flops adds
    attention and the head).
    """

    name: str
    model_type: str
    module: Callable[..., Decoder]
    attention: Callable[[dict[str, Any]], dict[str, Any]]
    weight_names: Callable[[str], HFName | None]
    cache_layout: Callable[[ModelConfig], tuple[int, int, int]]
    matmul_flops: Callable[[ModelConfig], float]


# ------------------------------------------------------------------------------------------ shared by the families
CHECKPOINT_PREFIXES = ("pretrained_model.", "base_model.")  # wrappers some checkpoints put before the names
DECODER_LAYER_MODULES = frozenset({
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm",
})
QK_NORM_MODULES = frozenset({"self_attn.q_norm", "self_attn.k_norm"})


def decoder_weight_names(layer_modules: frozenset[str]) -> Callable[[str], HFName | None]:
    """The transformers naming of a decoder whose layers hold `layer_modules` (`model.layers.{i}.{module}.weight`,
    norms ending in `norm`), plus `model.embed_tokens`, `model.norm`, `lm_head` and a PRM's `v_head.summary`."""

    def weight_name(name: str) -> HFName | None:
        for prefix in CHECKPOINT_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name.startswith("v_head.summary."):
            leaf = name.rsplit(".", 1)[1]
            return HFName(("v_head", "summary", "kernel" if leaf == "weight" else "bias"), None, leaf == "weight")
        if name == "lm_head.weight":
            return HFName(("lm_head", "kernel"), None, True)
        name = name.removeprefix("model.")
        if name == "embed_tokens.weight":
            return HFName(("embed_tokens", "embedding"), None, False)
        if name == "norm.weight":
            return HFName(("norm", "weight"), None, False)
        m = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", name)
        if m is None or m.group(2) not in layer_modules:
            return None
        module, leaf = m.group(2), m.group(3)
        if module.endswith("norm"):
            return HFName(("layers", *module.split("."), "weight"), int(m.group(1)), False) if leaf == "weight" \
                else None
        return HFName(("layers", *module.split("."), "kernel" if leaf == "weight" else "bias"), int(m.group(1)),
                      leaf == "weight")

    return weight_name


def transformers_name(path: Path_, layer: int | None) -> tuple[str, HFName]:
    """The inverse of `decoder_weight_names`: (checkpoint name, its HFName) of parameter `path` (of layer `layer` for
    a stacked one), as transformers names it; hub_layout writes snapshots with it."""
    leaf = "weight" if path[-1] in ("kernel", "weight", "embedding") else "bias"
    place = HFName(path, layer, path[-1] == "kernel")
    if path[0] == "layers":
        return f"model.layers.{layer}.{'.'.join(path[1:-1])}.{leaf}", place
    if path[0] in ("embed_tokens", "norm"):
        return f"model.{path[0]}.{leaf}", place
    return f"{'.'.join(path[:-1])}.{leaf}", place  # lm_head, v_head.summary


def dense_cache_layout(cfg: ModelConfig) -> tuple[int, int, int]:
    """One K and one V entry per layer, KV head and token, head_dim wide."""
    return cfg.num_layers, cfg.num_kv_heads, cfg.head_dim


def dense_matmul_flops(cfg: ModelConfig) -> float:
    """2 · L · (E·H·D + 2·E·K·D + H·D·E + 3·E·F): the q, k, v and o projections and the SwiGLU MLP (a multiply-add
    is 2 FLOPs)."""
    e, d, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    attn_proj = e * cfg.num_heads * d * 2 + 2 * e * cfg.num_kv_heads * d
    return float(2 * cfg.num_layers * (attn_proj + 3 * e * f))


def qwen2_attention(hf: dict[str, Any]) -> dict[str, Any]:
    """Qwen2 always has q/k/v biases and none on o_proj."""
    return {"qkv_bias": True, "out_bias": False}


def attention_bias(hf: dict[str, Any]) -> dict[str, Any]:
    """Llama and Qwen3: `attention_bias` covers q, k, v and o alike (default none)."""
    bias = bool(hf.get("attention_bias", False))
    return {"qkv_bias": bias, "out_bias": bias}


def qwen3_attention(hf: dict[str, Any]) -> dict[str, Any]:
    """Qwen3: as Llama; its sliding-window layers are not implemented, so a snapshot using them is refused."""
    if hf.get("use_sliding_window"):
        raise ConfigError("Qwen3ForCausalLM with use_sliding_window: true is not supported (every layer here "
                          "attends to the whole context); set use_sliding_window to false in its config.json")
    return attention_bias(hf)


# ------------------------------------------------------------------------------------------------ the registry
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("Qwen2ForCausalLM", "qwen2", Decoder, qwen2_attention, decoder_weight_names(DECODER_LAYER_MODULES),
                 dense_cache_layout, dense_matmul_flops),
    Architecture("LlamaForCausalLM", "llama", Decoder, attention_bias, decoder_weight_names(DECODER_LAYER_MODULES),
                 dense_cache_layout, dense_matmul_flops),
    Architecture("Qwen3ForCausalLM", "qwen3", Qwen3Decoder, qwen3_attention,
                 decoder_weight_names(DECODER_LAYER_MODULES | QK_NORM_MODULES), dense_cache_layout,
                 dense_matmul_flops),
)}

#: value-head PRMs (the Skywork-o1-Open-PRM layout and its aliases): entry -> the LM entry of their backbone
PRM_ENTRIES = {"Qwen2ForPrmModel": "Qwen2ForCausalLM", "Qwen2ForRewardModel": "Qwen2ForCausalLM",
               "Qwen2ForProcessRewardModel": "Qwen2ForCausalLM"}


def entries() -> dict[str, tuple[Architecture, HeadKind]]:
    """Every `architectures` entry we load -> (its architecture, the head it implies)."""
    found: dict[str, tuple[Architecture, HeadKind]] = {}
    for name, arch in ARCHITECTURES.items():
        found[name] = (arch, "lm")
        found[name + WITH_VALUE_HEAD] = (arch, "lm+value")
    for name, backbone in PRM_ENTRIES.items():
        found[name] = (ARCHITECTURES[backbone], "value")
    return found


def resolve(entry: str | None) -> tuple[Architecture, HeadKind]:
    """(architecture, head) of a config.json's `architectures` entry; a clear error for one we do not know."""
    known = entries()
    if entry not in known:
        raise ConfigError(f"unknown architecture {entry!r}; supported: {', '.join(sorted(known))}")
    return known[entry]


def of(config: ModelConfig) -> Architecture:
    """The architecture a ModelConfig was built from."""
    if config.architecture not in ARCHITECTURES:
        raise ConfigError(f"model config: architecture {config.architecture!r} is not one of "
                          f"{', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[config.architecture]


def with_value_head(model_type: str | None) -> str | None:
    """The `architectures` entry of an LM of this model_type merged with a value head (None: not an LM we know)."""
    return next((a.name + WITH_VALUE_HEAD for a in ARCHITECTURES.values() if a.model_type == model_type), None)


# ------------------------------------------------------------------------------------------ config.json -> config
def config_from_hf(hf: dict[str, Any], *, dtype: str = "float32", head: HeadKind | None = None,
                   **overrides: Any) -> ModelConfig:
    """Reads an HF `config.json` dict (transformers 4.x `rope_theta` or 5.x `rope_parameters`); `head` replaces the
    head the architecture implies; `overrides` replace fields (e.g. good_token_id / bad_token_id of a token-logit
    PRM)."""
    entry = (hf.get("architectures") or [None])[0]
    if entry is None:  # a bare config (e.g. from transformers' to_dict): the LM of its model_type
        entry = next((a.name for a in ARCHITECTURES.values() if a.model_type == hf.get("model_type")), None)
    arch, implied = resolve(entry)
    try:
        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        eos = hf.get("eos_token_id")
        fields = dict(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(hf.get("head_dim") or hidden // num_heads),
            rope=_rope_from_hf(hf),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            mlp_bias=bool(hf.get("mlp_bias", False)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            head=head or implied,
            dtype=dtype,
            max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),)),
            architecture=arch.name,
            **arch.attention(hf),
        )
    except KeyError as e:
        raise ConfigError(f"config.json lacks the key {e.args[0]!r}") from None
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise ConfigError(f"unknown model config field(s): {', '.join(sorted(unknown))}")
    return ModelConfig(**{**fields, **overrides})


def config_from_folder(folder: str | Path, **kw: Any) -> ModelConfig:
    """`config_from_hf` of a snapshot folder's config.json."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(f"no config.json in {folder}")
    return config_from_hf(json.loads(path.read_text()), **kw)


def _rope_from_hf(hf: dict[str, Any]) -> RopeConfig:
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    spec = {**scaling, **params}
    kind = spec.get("rope_type", spec.get("type", "default")) or "default"
    if kind not in ("default", "llama3", "linear"):
        raise ConfigError(f"rope type {kind!r} is not supported (default, llama3, linear)")
    return RopeConfig(
        theta=float(theta),
        kind=kind,
        factor=float(spec.get("factor", 1.0)),
        low_freq_factor=float(spec.get("low_freq_factor", 1.0)),
        high_freq_factor=float(spec.get("high_freq_factor", 4.0)),
        original_max_position=int(spec.get("original_max_position_embeddings", 8192)),
    )

