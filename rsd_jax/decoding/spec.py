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


SCHEDULES = ("sync", "async")


#: The catch-up chunk of gathered passes (DecodeSpec.catch_up_chunk).
GATHERED_CHUNK = 8


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
    schedule: "async" (each row has its own phase and the models run token by token for the rows in theirs:
    rsd_jax.decoding.rsd) or "sync" (the lock-step setting of the same loop: rows held at step boundaries, the PRM
    and the target for the whole batch, as the official code's loop). quorum (async): the target runs when this many
    rows wait for it, or nothing else can advance (0: a quarter of the batch). pass_rows: the target's and the PRM's
    passes carry at most this many rows, gathered (0: the whole batch, the others masked); the draft's, any number of
    rows. pass_sizes: how many sizes a gathered pass may take (1, 2, 3, 4 or 6, 0: chosen from the batch:
    rsd_jax.decoding.passes.pass_sizes);
    each is a compiled copy of the model.
    stop_on_split_delimiter: a step also ends where its last two tokens write the delimiter across their boundary
    ("\\n" then "\\n"), as the official code's stop string does; off: only a token whose text contains it ends a step.
    patience: the official code's batch-wide cut-off: once `patience - 1` consecutive rounds have passed in which
    no row of the batch finished, every row still running writes one more step and is cut off (0: off). It counts
    the lock-step setting's rounds, so it implies it (`rounds`).
    record_target_reward: the RSD loop also scores each step the target wrote with the PRM, in its context, into
    Trace.target_reward (for the theory experiments; one more PRM catch-up over the target's step for rejected rows
    in each iteration that rejects, left out of every FLOPs count; the committed tokens, rewards and accounting are
    those of the loop without it).
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
    schedule: str = "async"
    quorum: int = 0
    pass_rows: int = 16
    pass_sizes: int = 0
    stop_on_split_delimiter: bool = False
    patience: int = 0
    record_target_reward: bool = False

    def __post_init__(self) -> None:
        if self.speculative_gamma < 0:
            raise ConfigError(f"rsd.speculative_gamma must be >= 0, got {self.speculative_gamma}")
        if self.patience < 0:
            raise ConfigError(f"decoding.patience must be >= 0 (0: off), got {self.patience}")
        for name in ("max_new_tokens", "max_steps", "max_step_tokens", "chunk", "histogram_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"decoding.{name} must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"decoding.schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        for name in ("quorum", "pass_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"decoding.{name} must be >= 0, got {getattr(self, name)}")
        if self.pass_sizes not in (0, 1, 2, 3, 4, 6):
            raise ConfigError(f"decoding.pass_sizes must be 1, 2, 3, 4 or 6 (0: chosen from the batch), got "
                              f"{self.pass_sizes}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"rsd.weighting {self.weighting!r} is not one of {', '.join(WEIGHTINGS)}")

    @property
    def rounds(self) -> bool:
        """The loop runs in lock-step rounds (rows held at step boundaries): schedule "sync", or patience on."""
        return self.schedule == "sync" or self.patience > 0

    @property
    def budget_mode(self) -> str:
        """How the loop decides (acceptance.decide): "none" (ω), "calibrated" or "online"."""
        return "online" if self.online_budget else "calibrated" if self.budget else "none"

    @property
    def catch_up_chunk(self) -> int:
        """Tokens per forward when the RSD loop's caches catch up (a row starting a step, the PRM's pass): chunk,
        at most GATHERED_CHUNK when the passes are gathered (pass_rows > 0: such a pass pads every row it carries to
        the chunk, and a step's catch-up is a few tokens; whole-batch passes, pass_rows 0, keep chunk)."""
        return min(self.chunk, GATHERED_CHUNK) if self.pass_rows else self.chunk

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
