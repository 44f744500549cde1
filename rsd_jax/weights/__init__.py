"""Weights on disk: HF safetensors snapshots and orbax checkpoints."""

from rsd_jax.weights.hf import load_hf_model
from rsd_jax.weights.orbax_io import load_model, model_config, restore_model, save_model

__all__ = ["load_hf_model", "load_model", "model_config", "restore_model", "save_model"]
