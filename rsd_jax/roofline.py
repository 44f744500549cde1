"""A roofline cost model of one forward pass of a decoder, tensor-parallel over the chips of a slice.

    time(pass) = max(bytes read / (chips · HBM bandwidth), FLOPs / (chips · peak FLOP/s)) + collectives + overhead

for a pass over R rows, t tokens per row, mean context c (keys each token attends to), in bfloat16:
- bytes read: every weight the pass multiplies by (all layers' projections and MLP, and the LM head when the model
  has one: a tied embedding is read as the head; an embedding lookup reads only its R·t rows, ignored), plus the
  KV cache the rows attend to, R·c·kv_bytes_per_token, plus the R·t new KV entries written. Under tensor
  parallelism the weights split over the chips; the KV heads split over at most gcd(chips, KV heads) chips and are
  replicated across the rest (as rsd_jax.sharding lays them out), so the per-chip KV traffic is
  R·c·kv / gcd(chips, kv_heads) while the weights are weights / chips.
- FLOPs: rsd_jax.flops per token at context c (matmuls + attention over c keys), times R·t, plus the LM head on the
  one token per row that is sampled (a write pass), or nothing (a catch-up or a PRM pass: the value head is a dot).
- collectives: the two all-reduces of the residual stream per layer of Megatron-style tensor parallelism (after
  attention, after the MLP), each `collective_latency_s` plus a ring's 2(n−1)/n · R·t·E·2 bytes over the chip's
  link bandwidth. Their latency is the fixed per-pass cost that dominates small models at batch 1.
- overhead: a fixed `pass_overhead_s` per pass (default 0: the loops are one jitted program, no host dispatch).

Chip figures (per chip, dense bf16, vendor sheets): TPU v5e 819 GB/s HBM, 197 TFLOP/s, ICI 1,600 Gbps per chip
(Cloud TPU v5e documentation), taken as 100 GB/s each way for a ring; H100 SXM 80 GB 3.35 TB/s HBM3, 989 TFLOP/s
(NVIDIA H100 datasheet, dense, no sparsity), NVLink 4 900 GB/s per GPU, 450 GB/s each way. HBM bandwidth and
peaks come from rsd_jax.capacity.SLICES, HBM capacity from rsd_jax.aot.CHIPS. The all-reduce latency (10 µs by
default: the order of NCCL's small-message all-reduce within an NVLink node, assumed the same on ICI) is a named
parameter, as is the fraction of peak bandwidth and FLOPs a real kernel reaches (1.0: the roofline itself).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from rsd_jax import flops
from rsd_jax.capacity import SLICES, kv_bytes_per_token
from rsd_jax.errors import ConfigError
from rsd_jax.models.config import ModelConfig

BYTES = 2  # bfloat16 weights and KV cache

#: chip -> link bandwidth one way per chip, bytes/s (see the module docstring)
LINK_BYTES_PER_S = {"v5e": 100e9, "v5p": 300e9, "v6e": 200e9, "h100": 450e9, "a100": 300e9}


@dataclasses.dataclass(frozen=True)
class Hardware:
    """A slice of `chips` chips running every model tensor-parallel over all of them."""

    name: str
    chip: str
    chips: int
    hbm_bytes_per_s: float  # per chip
    flops_per_s: float  # dense bf16 per chip
    link_bytes_per_s: float  # one way per chip
    collective_latency_s: float = 10e-6  # one all-reduce's fixed cost
    pass_overhead_s: float = 0.0  # fixed cost of any pass
    efficiency: float = 1.0  # fraction of peak bandwidth and FLOPs reached

    @classmethod
    def of_slice(cls, name: str, **overrides) -> "Hardware":
        """The hardware of a slice of rsd_jax.capacity.SLICES (e.g. "v5e-8", "8x H100")."""
        if name not in SLICES or SLICES[name].chip is None:
            raise ConfigError(f"no accelerator slice named {name!r}; known: "
                              f"{', '.join(n for n, s in SLICES.items() if s.chip)}")
        s = SLICES[name]
        return cls(name=name, chip=s.chip, chips=s.devices, hbm_bytes_per_s=s.hbm_gbps * 1e9,
                   flops_per_s=s.tflops * 1e12, link_bytes_per_s=LINK_BYTES_PER_S[s.chip], **overrides)

    @property
    def hbm_capacity(self) -> int:
        from rsd_jax.aot import CHIPS

        return self.chips * CHIPS[self.chip].hbm_bytes


def weight_bytes(cfg: ModelConfig) -> float:
    """Bytes of the weights one pass reads: layers (attention projections, MLP) and the LM head if any."""
    e, d = cfg.hidden_size, cfg.head_dim
    layer = e * d * (2 * cfg.num_heads + 2 * cfg.num_kv_heads) + 3 * e * cfg.intermediate_size
    head = cfg.vocab_size * e if cfg.has_lm_head else e
    return float((cfg.num_layers * layer + head) * BYTES)


def resident_bytes(cfg: ModelConfig) -> float:
    """Bytes the model's weights occupy (the read weights, plus an untied embedding table)."""
    untied_embedding = cfg.vocab_size * cfg.hidden_size * BYTES if not (cfg.tie_word_embeddings and
                                                                         cfg.has_lm_head) else 0
    return weight_bytes(cfg) + untied_embedding


@dataclasses.dataclass(frozen=True)
class PassCost:
    """The parts of one pass's time, seconds."""

    memory_s: Any  # float, or an array for arrays of passes
    compute_s: Any
    collective_s: Any
    overhead_s: Any

    @property
    def seconds(self) -> Any:
        return np.maximum(self.memory_s, self.compute_s) + self.collective_s + self.overhead_s

    @property
    def memory_bound(self) -> Any:
        return self.memory_s >= self.compute_s


def pass_cost(cfg: ModelConfig, hw: Hardware, *, rows: Any, tokens: Any, context: Any,
              head_rows: Any = 0.0) -> PassCost:
    """Time of one forward over `rows` rows of `tokens` tokens each (mean over the rows), attending to `context`
    keys on average; `head_rows` of the rows sample a token (the LM head runs on their last token). Floats, or
    arrays of equal shape (one element per pass)."""
    rows, tokens, context, head_rows = (np.asarray(x, np.float64) for x in (rows, tokens, context, head_rows))
    if np.any(rows < 0) or np.any(tokens < 0) or np.any(context < 0) or np.any(head_rows > rows):
        raise ConfigError(f"a pass needs rows, tokens, context >= 0 and head_rows <= rows (got {rows}, {tokens}, "
                          f"{context}, {head_rows})")
    runs = (rows * tokens > 0).astype(np.float64)  # a pass that feeds nothing costs nothing
    n = hw.chips
    kv_split = math.gcd(n, cfg.num_kv_heads)
    kv = kv_bytes_per_token(cfg)
    memory = weight_bytes(cfg) / n + rows * (context + tokens) * kv / kv_split
    work = rows * tokens * (flops.matmul_flops_per_token(cfg) + flops.attention_flops_per_key(cfg) * context)
    if cfg.has_lm_head:
        work = work + head_rows * flops.head_flops_per_token(cfg)
    ring = 2 * (n - 1) / n * rows * tokens * cfg.hidden_size * BYTES / hw.link_bytes_per_s
    collectives = 2 * cfg.num_layers * (hw.collective_latency_s + ring) if n > 1 else 0.0 * ring
    return PassCost(memory_s=runs * memory / (hw.hbm_bytes_per_s * hw.efficiency),
                    compute_s=runs * work / n / (hw.flops_per_s * hw.efficiency),
                    collective_s=runs * collectives, overhead_s=runs * hw.pass_overhead_s)


def pass_seconds(cfg: ModelConfig, hw: Hardware, *, rows: Any, tokens: Any, context: Any,
                 head_rows: Any = 0.0) -> Any:
    """Seconds of one pass (floats) or of each of many (arrays of equal shape)."""
    return pass_cost(cfg, hw, rows=rows, tokens=tokens, context=context, head_rows=head_rows).seconds
