"""Memory, communication and roofline arithmetic for the paper's settings on TPU and GPU meshes.

`python -m rsd_jax.capacity` prints the tables of docs/sharding.md. Everything is analytic: parameter counts
from the models' configs (the Qwen2.5-Math and Skywork PRM architectures), bf16 weights and KV cache,
tensor parallelism over the "model" axis as rsd_jax.sharding lays it out (a dimension that does not split
evenly is replicated), and the published peak numbers of each chip.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from rsd_jax import flops
from rsd_jax.models.config import ModelConfig, RopeConfig

BYTES = 2  # bfloat16


def _qwen(hidden, layers, heads, kv, ff, vocab, tied) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ff, num_layers=layers, num_heads=heads,
                       num_kv_heads=kv, head_dim=128, rope=RopeConfig(theta=10000.0), qkv_bias=True,
                       tie_word_embeddings=tied, dtype="bfloat16")


MODELS = {
    "Qwen2.5-Math-1.5B": _qwen(1536, 28, 12, 2, 8960, 151936, True),
    "Qwen2.5-Math-7B": _qwen(3584, 28, 28, 4, 18944, 152064, False),
    "Qwen2.5-Math-72B": _qwen(8192, 80, 64, 8, 29568, 152064, False),
}
SETTINGS = {  # draft / target / PRM (Skywork PRMs share the Qwen2.5-Math architectures)
    "1.5B/7B/1.5B": ("Qwen2.5-Math-1.5B", "Qwen2.5-Math-7B", "Qwen2.5-Math-1.5B"),
    "7B/72B/7B": ("Qwen2.5-Math-7B", "Qwen2.5-Math-72B", "Qwen2.5-Math-7B"),
}


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    devices: int
    hbm_gb: float
    hbm_gbps: float
    tflops: float  # dense bf16
    link_gbps: float  # per-device interconnect bandwidth used for all-reduces (GB/s)


CHIPS = (Chip("TPU v5e-8", 8, 16, 819, 197, 100), Chip("TPU v5e-16", 16, 16, 819, 197, 100),
         Chip("8x H100 SXM", 8, 80, 3350, 989, 450))


def params(cfg: ModelConfig) -> int:
    e, d = cfg.hidden_size, cfg.head_dim
    layer = e * d * (2 * cfg.num_heads + 2 * cfg.num_kv_heads) + 3 * e * cfg.intermediate_size
    embed = cfg.vocab_size * e * (1 if cfg.tie_word_embeddings else 2)
    return cfg.num_layers * layer + embed


def sharded_fraction(cfg: ModelConfig, tp: int) -> float:
    """Fraction of the weights each device holds under the sharding rules with `tp` model-axis devices."""
    e, d, L = cfg.hidden_size, cfg.head_dim, cfg.num_layers
    split = lambda n: 1 / tp if n % tp == 0 else 1.0  # noqa: E731
    attn = L * e * d * (2 * cfg.num_heads * split(cfg.num_heads) + 2 * cfg.num_kv_heads * split(cfg.num_kv_heads))
    mlp = L * 3 * e * cfg.intermediate_size * split(cfg.intermediate_size)
    embed = cfg.vocab_size * e * (1 if cfg.tie_word_embeddings else 2) * split(cfg.vocab_size)
    return (attn + mlp + embed) / params(cfg)


def kv_bytes_per_token(cfg: ModelConfig) -> int:
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * BYTES


def allreduce_bytes_per_token(cfg: ModelConfig, tp: int) -> float:
    """Tensor parallelism all-reduces the [hidden] activation twice per layer; a ring sends 2(n-1)/n of it."""
    return 0.0 if tp == 1 else 2 * cfg.num_layers * cfg.hidden_size * BYTES * 2 * (tp - 1) / tp


def critical_batch(cfg: ModelConfig, chip: Chip, context: int) -> float:
    """Rows per decode step above which the model is compute- rather than memory-bound (one replica):
    B · flops(token) / peak_flops = (weight bytes + B · context · kv bytes) / bandwidth."""
    f = flops.flops_per_token(cfg, context)
    w = params(cfg) * BYTES
    t_flop, t_byte = f / (chip.tflops * 1e12), context * kv_bytes_per_token(cfg) / (chip.hbm_gbps * 1e9)
    if t_flop <= t_byte:
        return float("inf")  # attention over the cache keeps it memory-bound at any batch
    return (w / (chip.hbm_gbps * 1e9)) / (t_flop - t_byte)


def _tp(setting: str, chip: Chip) -> int:
    """Model-axis size: the 72B target needs all devices of a v5e-16 to fit; 7B targets use 4."""
    return min(16 if "72B" in setting else 4, chip.devices)


def _cell(x: float) -> str:
    return "never (KV-bound)" if x == float("inf") else f"{x:.0f}"


def report(context: int = 4096 + 256, short: int = 512, batch: int = 32) -> str:
    lines = [f"bf16 weights and cache; {batch} rows per replica with a {context}-token context (prompt + the paper's "
             f"4096-token budget); compute-bound batch also at {short} tokens of context.", ""]
    for setting, names in SETTINGS.items():
        lines += [f"### RSD {setting} (draft / target / PRM)", "",
                  "| chip | mesh data x model | model | weights / device GB | KV cache / device GB | "
                  f"all-reduce / token KB | compute-bound from batch ({short} / {context} ctx) |",
                  "|---|---|---|---|---|---|---|"]
        for chip in CHIPS:
            tp = _tp(setting, chip)
            total = 0.0
            for role, name in zip(("draft", "target", "PRM"), names):
                cfg = MODELS[name]
                w = params(cfg) * BYTES * sharded_fraction(cfg, tp) / 1e9
                kv = batch * context * kv_bytes_per_token(cfg) / (tp if cfg.num_kv_heads % tp == 0 else 1) / 1e9
                total += w + kv
                lines.append(f"| {chip.name} | {chip.devices // tp} x {tp} | {role} {name} | {w:.2f} | {kv:.2f} | "
                             f"{allreduce_bytes_per_token(cfg, tp) / 1e3:.0f} | "
                             f"{_cell(critical_batch(cfg, chip, short))} / {_cell(critical_batch(cfg, chip, context))} |")
            verdict = "fits" if total <= chip.hbm_gb * 0.9 else "does NOT fit (int8 weights, a smaller batch or more devices)"
            lines.append(f"| {chip.name} | | **all three** | **{total:.1f} of {chip.hbm_gb:.0f} GB: {verdict}** | | | |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Prints the tables; any argument is refused (argparse: usage and one error line, exit 2)."""
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.capacity", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
