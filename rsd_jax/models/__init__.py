"""Decoder models (the architectures of rsd_jax.models.architectures: Qwen2, Llama, Qwen3) and PRM heads."""

from rsd_jax.models.config import ModelConfig, RopeConfig
from rsd_jax.models.decoder import Decoder
from rsd_jax.models.model import Model, forward, full_forward

__all__ = ["ModelConfig", "RopeConfig", "Decoder", "Model", "forward", "full_forward"]
