"""Decode problems with RSD (or another method): `python -m rsd_jax.decode --config FILE [key=value ...] [--out DIR]`.

Prints each problem with its steps marked by source (draft or target) and the PRM's reward, then a summary;
with --out, writes DIR/results.jsonl (one record per problem, flushed as each batch finishes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

from rsd_jax.config import RunConfig
from rsd_jax.configlib import describe, load_config, to_yaml
from rsd_jax.data.problems import Item, load_items
from rsd_jax.errors import RSDError
from rsd_jax.loading import load_models, load_tokenizers, start_devices
from rsd_jax.methods import run_method, summarize

_COLORS = {"draft": "\033[32m", "target": "\033[35m"}
_RESET = "\033[0m"


def format_record(record: dict, color: bool) -> str:
    lines = [f"── {record['uid']}: {record['question']}"]
    for step in record["steps"]:
        source = step["source"]
        tag = f"[{source:6s} r={step['reward']:.2f}]" if step["reward"] == step["reward"] else f"[{source:6s}]"
        text = step["text"].rstrip("\n").replace("\n", "\n" + " " * 17)
        lines.append(f"  {_COLORS.get(source, '') if color else ''}{tag}{_RESET if color else ''} {text}")
    verdict = {True: "correct", False: "wrong", None: "ungraded"}[record.get("correct")]
    lines.append(f"  → {verdict}" + (f" (reference {record['answer']})" if record.get("answer") else ""))
    if record.get("error"):
        lines.append(f"  ! {record['error']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.decode", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config (configs/*.yaml)")
    parser.add_argument("--out", help="write DIR/results.jsonl")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--describe", action="store_true", help="list every config key with its doc and exit")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.describe:
        print(describe(RunConfig))
        return 0
    try:
        cfg = load_config(RunConfig, args.config, args.overrides)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        mesh = start_devices(cfg.mesh)  # multi-host: joins the other processes before anything else uses JAX
        tokenizers = load_tokenizers(cfg, args.config)
        items: list[Item] = load_items(cfg.data, args.config, tokenizers[0])
        models = load_models(cfg, args.config, mesh, tokenizers)  # weights straight into their shardings
        lead = jax.process_index() == 0  # multi-host: every process decodes the same batches, the first one reports
        out_dir = Path(args.out or cfg.output) if (args.out or cfg.output) else None
        sink = None
        if out_dir is not None and lead:
            out_dir.mkdir(parents=True, exist_ok=True)
            sink = (out_dir / "results.jsonl").open("a", encoding="utf-8")
        color = sys.stdout.isatty()
        start = time.time()
        records = []
        for batch_records in run_method(models, items, cfg.rsd.method, cfg, mesh=mesh):
            for record in batch_records:
                if not args.quiet and lead:
                    print(format_record(record, color), flush=True)
                if sink is not None:
                    sink.write(json.dumps(record) + "\n")
            if sink is not None:
                sink.flush()
            records += batch_records
        summary = summarize(records, wall_seconds=time.time() - start)
        if sink is not None:
            sink.close()
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        print("\n" + " | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
