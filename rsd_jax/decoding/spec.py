"""The static part of a decoding run: budgets, chunk sizes, sampling and the weighting family.

`DecodeSpec` is frozen and hashable and is the only static argument of the jitted loops; everything that
may change between calls without recompiling (thresholds, budgets, prompts) is a traced array.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.decoding.acceptance import WEIGHTINGS
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """max_new_tokens: response token budget per row (with budget_includes_prompt: the budget of prompt +
    response, as the official RSD code counts its 4096 tokens). max_steps: reasoning-step budget per row.
    max_step_tokens: cap on one step's tokens. chunk: tokens per forward when a cache catches up.
    weighting: the ω family of the acceptance criterion. budget: the budget mode, the randomised threshold (δ, q)
    of acceptance.threshold_rule in place of ω (calibrated on the host and passed as knobs). online_budget: that
    rule set inside the loop from a running histogram of the draft's rewards (implies the budget mode).
    speculative_gamma: when > 0, the target writes its steps by token-level speculative decoding with the
    draft proposing this many tokens per round (greedy output unchanged, fewer target forwards).
    target_rows: the target writes the rejected rows' step this many rows at a time, gathered (one compiled copy,
    a loop over the groups; 0: over the whole batch, rows that accepted masked).
    """

    max_new_tokens: int = 512
    budget_includes_prompt: bool = False
    max_steps: int = 100
    max_step_tokens: int = 256
    chunk: int = 32
    sampling: Sampling = Sampling()
    weighting: str = "binary"
    budget: bool = False
    online_budget: bool = False
    histogram_bins: int = 256
    speculative_gamma: int = 0
    target_rows: int = 0

    def __post_init__(self) -> None:
        if self.speculative_gamma < 0:
            raise ConfigError(f"rsd.speculative_gamma must be >= 0, got {self.speculative_gamma}")
        for name in ("max_new_tokens", "max_steps", "max_step_tokens", "chunk", "histogram_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"decoding.{name} must be >= 1, got {getattr(self, name)}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"rsd.weighting {self.weighting!r} is not one of {', '.join(WEIGHTINGS)}")

    @property
    def budget_mode(self) -> str:
        """How the loop decides (acceptance.decide): "none" (ω), "calibrated" or "online"."""
        return "online" if self.online_budget else "calibrated" if self.budget else "none"

    @property
    def step_tokens(self) -> int:
        """Width of one step's buffer: no step can be longer than the whole budget."""
        return min(self.max_step_tokens, self.max_new_tokens)

    def end_of(self, prompt_length: jax.Array) -> jax.Array:
        """The committed length [B] at which each row's token budget is spent."""
        if self.budget_includes_prompt:
            return jnp.full_like(prompt_length, self.max_new_tokens)
        return prompt_length + self.max_new_tokens

    def replace(self, **changes) -> "DecodeSpec":
        return dataclasses.replace(self, **changes)
