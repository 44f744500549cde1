"""Projected wall-clock of RSD on accelerators (a projection, not a measurement): the pass traces of the
synchronous and asynchronous schedules and of target-only decoding (rsd_jax.pass_trace), replayed on MATH500's
step statistics (rsd_jax.step_statistics), each pass timed by the roofline (rsd_jax.roofline), for the paper's
settings (draft/target/PRM) on TPU v5e-8 and an 8x H100 node, in bfloat16.

Acceptance: the paper's tables (Table 2 and Table B.2, accuracy per δ) do not report the share of draft steps
accepted; the one figure that pins it is the abstract's "up to 4.4x fewer FLOPs" (Fig. 4): with every step drafted
and scored, ratio ≈ N_M / (N_m + (1 − a)·N_M + N_r), which gives a ≈ 0.88–0.90 for 7B/72B/1.5B (our derivation;
the paper names neither the setting nor its FLOPs formula). ACCEPTANCE = 0.9 is that value; `acceptance=` projects
others.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Sequence

import numpy as np

from rsd_jax import pass_trace, roofline, step_statistics
from rsd_jax.capacity import kv_bytes_per_token
from rsd_jax.errors import ConfigError
from rsd_jax.models import catalog
from rsd_jax.models.config import ModelConfig

ACCEPTANCE = 0.9  # share of draft steps accepted: from the abstract's 4.4x FLOPs (our derivation, see above)
CHUNK = 256  # catch-up tokens per pass: decoding.chunk of the paper configs (configs/paper/qwen25_math_*.yaml)
BATCHES = (1, 8, 64)
QUORUMS = (1, 4, 16)  # the asynchronous schedule's k (those <= the batch)
HARDWARE = ("v5e-8", "8x H100")


@dataclasses.dataclass(frozen=True)
class Setting:
    """A paper setting, named draft/target/PRM as the paper names them; models from rsd_jax.models.catalog."""

    name: str
    draft: str
    target: str
    prm: str

    @functools.cached_property
    def configs(self) -> dict[str, ModelConfig]:
        return {role: catalog.model_config(getattr(self, role)) for role in ("draft", "target", "prm")}


SETTINGS = {s.name: s for s in (
    Setting("1.5B/7B/1.5B", "Qwen2.5-Math-1.5B-Instruct", "Qwen2.5-Math-7B-Instruct",
            "Skywork-o1-Open-PRM-Qwen-2.5-1.5B"),
    Setting("7B/72B/7B", "Qwen2.5-Math-7B-Instruct", "Qwen2.5-Math-72B-Instruct",
            "Skywork-o1-Open-PRM-Qwen-2.5-7B"))}


def trace_seconds(trace: Sequence[pass_trace.Pass], setting: Setting, hw: roofline.Hardware) -> dict[str, float]:
    """Projected seconds of each model's passes in a trace (the models share the slice: passes run one after
    another, so a schedule's wall-clock is their sum)."""
    out = {}
    for role, cfg in setting.configs.items():
        passes = [p for p in trace if p.model == role]
        if not passes:
            out[role] = 0.0
            continue
        rows, tokens, context, heads = (np.array([getattr(p, f) for p in passes], np.float64)
                                        for f in ("rows", "tokens", "context", "head_rows"))
        out[role] = float(np.sum(roofline.pass_seconds(cfg, hw, rows=rows, tokens=tokens, context=context,
                                                       head_rows=heads)))
    return out


def fits(setting: Setting, hw: roofline.Hardware, *, batch: int, context: int) -> bool:
    """Do the three models' weights and `batch` rows of `context` tokens of KV fit the slice's HBM (per chip:
    weights split over the chips, KV heads over gcd(chips, KV heads))?"""
    per_chip = sum(roofline.resident_bytes(c) / hw.chips
                   + batch * context * kv_bytes_per_token(c) / math.gcd(hw.chips, c.num_kv_heads)
                   for c in setting.configs.values())
    return per_chip <= hw.hbm_capacity / hw.chips


@functools.lru_cache(maxsize=32)
def schedule_traces(batch: int, *, problems: int, acceptance: float, quorums: tuple[int, ...], chunk: int,
                    seed: int) -> dict[str, list[list[pass_trace.Pass]]]:
    """Schedule name -> one trace per batch of `batch` rows, over the same `problems` drawn rows."""
    rows = step_statistics.draw_rows(step_statistics.math500_solutions(), n=problems, acceptance=acceptance,
                                     seed=seed)
    batches = [rows[s:s + batch] for s in range(0, problems, batch)]
    traces = {"target_only": [pass_trace.target_only(b, chunk=chunk) for b in batches],
              "sync": [pass_trace.synchronous(b, chunk=chunk) for b in batches]}
    for k in quorums:
        if k <= batch:
            traces[f"async_k{k}"] = [pass_trace.asynchronous(b, chunk=chunk, k=k) for b in batches]
    return traces


def project(*, settings: Sequence[str] = tuple(SETTINGS), hardware: Sequence[str | roofline.Hardware] = HARDWARE,
            batches: Sequence[int] = BATCHES, quorums: Sequence[int] = QUORUMS, acceptance: float = ACCEPTANCE,
            problems: int = 128, chunk: int = CHUNK, seed: int = 0) -> dict[str, dict[str, float]]:
    """Case "SETTING HARDWARE bB" -> projected target-only seconds for the `problems` problems, RSD's speedup over
    target-only for the synchronous schedule and the asynchronous one at each k <= B, the target's passes relative
    to target-only's, and whether the setting fits the slice's HBM (1/0). Same problems and acceptance draws for
    every case. hardware: slice names, or `roofline.Hardware` values (a slice with changed figures, e.g.
    `roofline.Hardware.of_slice("8x H100", collective_latency_s=3e-6)`)."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ConfigError(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    out: dict[str, dict[str, float]] = {}
    for batch in batches:
        traces = schedule_traces(batch, problems=problems, acceptance=acceptance, quorums=tuple(quorums),
                                 chunk=chunk, seed=seed)
        longest = max(p.context + p.tokens for t in traces["target_only"] for p in t)
        for name in settings:
            setting = SETTINGS[name]
            for slice_ in hardware:
                hw = roofline.Hardware.of_slice(slice_) if isinstance(slice_, str) else slice_
                slice_name = hw.name
                seconds = {sched: sum(sum(trace_seconds(t, setting, hw).values()) for t in ts)
                           for sched, ts in traces.items()}
                base = seconds["target_only"]
                target_passes = {sched: sum(pass_trace.counts(t)["target"]["passes"] for t in ts)
                                 for sched, ts in traces.items()}
                case = {"fits": float(fits(setting, hw, batch=batch, context=int(longest))),
                        "target_only_s": base}
                for sched in traces:
                    if sched != "target_only":
                        case[f"{sched}_speedup"] = base / seconds[sched]
                        case[f"{sched}_target_passes_vs_target_only"] = target_passes[sched] / target_passes[
                            "target_only"]
                out[f"{name} {slice_name} b{batch}"] = case
    return out


def assumptions(*, acceptance: float = ACCEPTANCE, chunk: int = CHUNK, problems: int = 128,
                hardware: Sequence[str] = HARDWARE) -> dict[str, float]:
    """The numbers a projection rests on, flat (for the bench's table)."""
    stats = step_statistics.summary(step_statistics.math500_solutions())
    out = {"acceptance": acceptance, "chunk": float(chunk), "problems": float(problems),
           **{f"math500_{k}": float(v) for k, v in stats.items()}}
    for name in hardware:
        hw = roofline.Hardware.of_slice(name)
        out.update({f"{name} chips": float(hw.chips), f"{name} hbm_gb_s_per_chip": hw.hbm_bytes_per_s / 1e9,
                    f"{name} tflop_s_per_chip": hw.flops_per_s / 1e12,
                    f"{name} link_gb_s_per_chip": hw.link_bytes_per_s / 1e9,
                    f"{name} collective_latency_us": hw.collective_latency_s * 1e6})
    return out


def table(cases: Mapping[str, Mapping[str, float]]) -> str:
    """The projection as a markdown table: one line per setting, slice and batch."""
    scheds = sorted({k.removesuffix("_speedup") for c in cases.values() for k in c if k.endswith("_speedup")},
                    key=lambda s: (s != "sync", len(s), s))
    lines = ["| setting | slice | batch | fits HBM | target-only s | " + " | ".join(
        f"{s} speedup" for s in scheds) + " |", "|" + "---|" * (5 + len(scheds))]
    for name, c in cases.items():
        setting, rest = name.split(" ", 1)
        slice_name, batch = rest.rsplit(" ", 1)
        lines.append(f"| {setting} | {slice_name} | {batch[1:]} | {'yes' if c['fits'] else 'no'} | "
                     f"{c['target_only_s']:.2f} | " + " | ".join(
                         f"{c[f'{s}_speedup']:.2f}" if f"{s}_speedup" in c else "–" for s in scheds) + " |")
    return "\n".join(lines)
