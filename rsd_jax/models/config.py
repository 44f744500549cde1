"""Static description of one decoder: the Qwen2 / Llama family, optionally with a PRM head.

`ModelConfig` is a frozen, hashable dataclass: it is safe as a static argument of `jax.jit`, and two
equal configs hash equally, so they share compiled code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import jax.numpy as jnp

from rsd_jax.errors import ConfigError

HeadKind = Literal["lm", "value", "token_logit", "lm+value"]

#: HF `architectures` entries we know how to load, and the head each one implies.
SUPPORTED_ARCHITECTURES: dict[str, HeadKind] = {
    "Qwen2ForCausalLM": "lm",
    "LlamaForCausalLM": "lm",
    "Qwen2ForPrmModel": "value",
    "Qwen2ForRewardModel": "value",
    "Qwen2ForProcessRewardModel": "value",
    # an LM merged with a value-head PRM (python -m rsd_jax.merge on hub folders; rsd_jax.weights.hub_merge)
    "Qwen2ForCausalLMWithValueHead": "lm+value",
    "LlamaForCausalLMWithValueHead": "lm+value",
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding: base `theta`, plus the optional Llama-3 frequency scaling."""

    theta: float = 10000.0
    kind: Literal["default", "llama3", "linear"] = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and options of one decoder (and its head).

    head: "lm" (causal LM head), "value" (Skywork-style PRM: sigmoid of a scalar value head on the last
    hidden state), "token_logit" (PRM whose reward is p(good) / (p(good) + p(bad)) from the LM head) or "lm+value"
    (both an LM head and a value head: a self-scoring draft, or a merged draft+PRM / target+PRM).
    dtype: the parameter and activation dtype, "float32" on CPU, "bfloat16" on accelerators.
    quantize: weight-only quantization of the matmul weights (rsd_jax.models.quantize): "none", "int8", "int4".
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope: RopeConfig = RopeConfig()
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    head: HeadKind = "lm"
    good_token_id: int = -1
    bad_token_id: int = -1
    dtype: str = "float32"
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    quantize: str = "none"  # weight-only: "none", "int8" or "int4" (rsd_jax.models.quantize)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                    "num_kv_heads", "head_dim")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"model config: num_heads={self.num_heads} is not a multiple of "
                              f"num_kv_heads={self.num_kv_heads}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"model config: dtype {self.dtype!r} is not one of {sorted(_DTYPES)}")
        if self.quantize not in ("none", "int8", "int4"):
            raise ConfigError(f"model config: quantize {self.quantize!r} is not one of none, int8, int4")
        if self.head not in ("lm", "value", "token_logit", "lm+value"):
            raise ConfigError(f"model config: head {self.head!r} is not one of lm, value, token_logit, lm+value")
        if self.head == "token_logit":
            for name in ("good_token_id", "bad_token_id"):
                if not 0 <= getattr(self, name) < self.vocab_size:
                    raise ConfigError(f"model config: head='token_logit' needs {name} in [0, vocab_size)")

    @property
    def jnp_dtype(self) -> Any:
        return _DTYPES[self.dtype]

    @property
    def has_lm_head(self) -> bool:
        return self.head in ("lm", "token_logit", "lm+value")

    @property
    def has_value_head(self) -> bool:
        return self.head in ("value", "lm+value")

    @property
    def scores_steps(self) -> bool:
        """True when `rewards` is defined: a PRM head, or an LM with a value head beside it."""
        return self.head in ("value", "token_logit", "lm+value")

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- HF config.json
    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], *, dtype: str = "float32", head: HeadKind | None = None,
                     **overrides: Any) -> "ModelConfig":
        """Reads an HF `config.json` dict (transformers 4.x `rope_theta` or 5.x `rope_parameters`);
        `overrides` replace fields (e.g. good_token_id / bad_token_id of a token-logit PRM)."""
        arch = (hf.get("architectures") or [None])[0]
        if arch is None:  # a bare config (e.g. from transformers' to_dict): infer from model_type
            arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}.get(hf.get("model_type"))
        if head is None:
            if arch not in SUPPORTED_ARCHITECTURES:
                raise ConfigError(f"unknown architecture {arch!r}; supported: "
                                  f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))}")
            head = SUPPORTED_ARCHITECTURES[arch]
        try:
            num_heads = int(hf["num_attention_heads"])
            is_qwen2 = hf.get("model_type") == "qwen2" or str(arch).startswith("Qwen2")
            hidden = int(hf["hidden_size"])
            eos = hf.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
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
                # Qwen2 always has q/k/v biases and none on o_proj; Llama's `attention_bias` covers all four.
                qkv_bias=is_qwen2 or bool(hf.get("attention_bias", False)),
                out_bias=not is_qwen2 and bool(hf.get("attention_bias", False)),
                mlp_bias=bool(hf.get("mlp_bias", False)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                head=head,
                dtype=dtype,
                max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=eos_ids,
            )
        except KeyError as e:
            raise ConfigError(f"config.json lacks the key {e.args[0]!r}") from None
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown model config field(s): {', '.join(sorted(unknown))}")
        return cls(**{**fields, **overrides})

    @classmethod
    def from_hf_folder(cls, folder: str | Path, **kw: Any) -> "ModelConfig":
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise ConfigError(f"no config.json in {folder}")
        return cls.from_hf_dict(json.loads(path.read_text()), **kw)

    # ---------------------------------------------------------------- our own json
    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (what model_config.json stores); quantize only when the weights are quantized, so
        float checkpoints keep the record they always had."""
        d = dataclasses.asdict(self)
        if d["quantize"] == "none":
            del d["quantize"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        d["rope"] = RopeConfig(**d.get("rope", {}))
        d["eos_token_id"] = tuple(d.get("eos_token_id", ()))
        return cls(**d)


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
