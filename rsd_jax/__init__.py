"""rsd_jax: Reward-Guided Speculative Decoding in JAX/Flax."""

__version__ = "0.1.0"
