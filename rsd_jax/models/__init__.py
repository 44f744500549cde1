"""Decoder models (Qwen2 / Llama family) and PRM heads."""

from rsd_jax.models.config import ModelConfig, RopeConfig
from rsd_jax.models.decoder import Decoder
from rsd_jax.models.model import Model, forward, full_forward

__all__ = ["ModelConfig", "RopeConfig", "Decoder", "Model", "forward", "full_forward"]
