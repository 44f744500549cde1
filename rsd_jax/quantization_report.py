"""How much quantized weights change what the models do: measured, never assumed.

    # 1. the decoded runs: accuracy and RSD's FLOPs of float and quantized runs of the same problems
    python -m rsd_jax.quantization_report runs float=runs/q_none int8=runs/q_int8 int4=runs/q_int4
    # 2. the models themselves: logits (LM heads) and step rewards (PRM heads), quantized against float
    python -m rsd_jax.quantization_report models FOLDER [FOLDER ...] [--modes int8,int4] [--tokens 64]

`runs` reads the per-problem records (METHOD.jsonl) that `python -m rsd_jax.evaluate --out DIR` writes, for every
method the first folder holds, and prints per method and run: accuracy with its 95% Wilson interval, the paired
difference to the first run on the same problems (95% bootstrap interval over problems), and useful FLOPs relative
to target-only decoding (95% bootstrap interval over problems, rsd_jax.theory.bootstrap).

`models` loads each folder (an HF snapshot or an orbax checkpoint) in float32 and quantized, runs the same random
tokens [2, --tokens] through both and prints the largest and the mean absolute difference of the logits (and how
often the greedy token is the same) and of the rewards a PRM head gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from rsd_jax.errors import ConfigError, RSDError
from rsd_jax.summary import wilson_interval
from rsd_jax.theory import bootstrap


# ------------------------------------------------------------------------------------------------ runs
def read_records(folder: Path, method: str) -> dict[str, dict]:
    """uid -> record of `method` in an evaluate folder."""
    path = folder / f"{method}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} not found: give folders written by python -m rsd_jax.evaluate --out DIR")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["uid"]: r for r in records}


def compare_runs(runs: dict[str, Path]) -> list[dict]:
    """One row per (method, run): accuracy [Wilson 95%], paired difference to the first run [bootstrap 95%],
    useful FLOPs / target-only FLOPs [bootstrap 95%]."""
    labels = list(runs)
    methods = sorted(p.stem for p in runs[labels[0]].glob("*.jsonl"))
    rows = []
    for method in methods:
        base = read_records(runs[labels[0]], method)
        for label in labels:
            records = read_records(runs[label], method)
            if set(records) != set(base):
                raise ConfigError(f"{runs[label]}/{method}.jsonl does not hold the same problems as "
                                  f"{runs[labels[0]]}/{method}.jsonl")
            uids = sorted(base)
            correct = np.array([bool(records[u]["correct"]) for u in uids], np.float64)
            diff = bootstrap.mean(correct - np.array([bool(base[u]["correct"]) for u in uids], np.float64))
            flops = bootstrap.pooled([records[u]["accounting"]["useful_flops_total"] for u in uids],
                                     [records[u]["accounting"]["target_only_flops"] for u in uids])
            rows.append({"method": method, "run": label, "n": len(uids), "accuracy": float(correct.mean()),
                         "accuracy_ci95": wilson_interval(int(correct.sum()), len(uids)),
                         "difference": diff.as_dict(), "flops_vs_target_only": flops.as_dict()})
    return rows


def runs_table(rows: Sequence[dict]) -> str:
    lines = ["| method | weights | accuracy % [95%] | vs the first run, points [95%, paired] "
             "| FLOPs vs target-only [95%] | n |", "|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["accuracy_ci95"]
        d, f = r["difference"], r["flops_vs_target_only"]
        lines.append(f"| {r['method']} | {r['run']} | {100 * r['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | "
                     f"{100 * d['value']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] | "
                     f"{f['value']:.3f} [{f['low']:.3f}, {f['high']:.3f}] | {r['n']} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ models
def compare_model(folder: Path, modes: Sequence[str], n_tokens: int, seed: int = 0) -> list[dict]:
    """One row per mode: logits and rewards of the quantized model against the float32 one on random tokens."""
    import jax.numpy as jnp

    from rsd_jax.models.model import full_forward
    from rsd_jax.weights import load_model

    floats = load_model(folder, dtype="float32", quantize="none")
    cfg = floats.config
    tokens = jnp.asarray(np.random.default_rng(seed).integers(0, cfg.vocab_size, (2, n_tokens)), jnp.int32)
    logits_f, hidden_f = full_forward(floats, tokens)
    rows = []
    for mode in modes:
        quant = load_model(folder, dtype="float32", quantize=mode)
        logits_q, hidden_q = full_forward(quant, tokens)
        row = {"model": folder.name, "mode": mode, "tokens": int(tokens.size)}
        if cfg.has_lm_head:
            delta = np.abs(np.asarray(logits_q - logits_f))
            row.update(logit_max=float(delta.max()), logit_mean=float(delta.mean()),
                       logit_scale=float(np.abs(np.asarray(logits_f)).mean()),
                       greedy_agree=float(np.mean(np.asarray(logits_q.argmax(-1) == logits_f.argmax(-1)))))
        if cfg.scores_steps:
            delta = np.abs(np.asarray(quant.rewards(hidden_q) - floats.rewards(hidden_f)))
            row.update(reward_max=float(delta.max()), reward_mean=float(delta.mean()))
        rows.append(row)
    return rows


def models_table(rows: Sequence[dict]) -> str:
    lines = ["| model | weights | tokens | max abs logit diff | mean abs logit diff (mean abs logit) | same greedy "
             "token | max abs reward diff | mean abs reward diff |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lm = (f"{r['logit_max']:.4f} | {r['logit_mean']:.4f} ({r['logit_scale']:.3f}) | "
              f"{100 * r['greedy_agree']:.1f}%") if "logit_max" in r else "– | – | –"
        prm = f"{r['reward_max']:.4f} | {r['reward_mean']:.4f}" if "reward_max" in r else "– | –"
        lines.append(f"| {r['model']} | {r['mode']} | {r['tokens']} | {lm} | {prm} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.quantization_report", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    runs = sub.add_parser("runs", help="float and quantized evaluate runs of the same problems")
    runs.add_argument("runs", nargs="+", help="LABEL=FOLDER, the first the baseline (e.g. float=runs/q_none)")
    models = sub.add_parser("models", help="logits and rewards of quantized models against float")
    models.add_argument("folders", nargs="+", type=Path, help="HF snapshot folders or orbax checkpoints")
    models.add_argument("--modes", default="int8,int4", help="comma-separated: int8, int4")
    models.add_argument("--tokens", type=int, default=64, help="random tokens per row (2 rows)")
    args = parser.parse_args(argv)
    try:
        if args.what == "runs":
            pairs = [item.partition("=") for item in args.runs]
            bad = [item for item, (_, eq, _) in zip(args.runs, pairs) if not eq]
            if bad:
                raise ConfigError(f"runs are LABEL=FOLDER, got {bad[0]!r}")
            print(runs_table(compare_runs({label: Path(path) for label, _, path in pairs})))
        else:
            modes = [m.strip() for m in args.modes.split(",") if m.strip()]
            unknown = [m for m in modes if m not in ("int8", "int4")]
            if unknown or not modes:
                raise ConfigError(f"--modes takes int8 and/or int4, got {args.modes!r}")
            rows = [row for folder in args.folders for row in compare_model(folder, modes, args.tokens)]
            print(models_table(rows))
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
