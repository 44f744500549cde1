"""Static description of one decoder (an architecture of rsd_jax.models.architectures), optionally with a PRM head.

`ModelConfig` is a frozen, hashable dataclass: it is safe as a static argument of `jax.jit`, and two
equal configs hash equally, so they share compiled code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax.numpy as jnp

from rsd_jax.errors import ConfigError

HeadKind = Literal["lm", "value", "token_logit", "lm+value"]

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
    architecture: str = "Qwen2ForCausalLM"  # its entry of rsd_jax.models.architectures (module, weights, cache, FLOPs)

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

    # ---------------------------------------------------------------- our own json
    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (what model_config.json stores); quantize only when the weights are quantized and
        architecture only when not Qwen2, so float Qwen2 checkpoints keep the record they always had."""
        d = dataclasses.asdict(self)
        if d["quantize"] == "none":
            del d["quantize"]
        if d["architecture"] == "Qwen2ForCausalLM":
            del d["architecture"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        d["rope"] = RopeConfig(**d.get("rope", {}))
        d["eos_token_id"] = tuple(d.get("eos_token_id", ()))
        return cls(**d)

