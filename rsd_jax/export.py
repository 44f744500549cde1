"""Write an evaluate run's records in the official harness's layout:
`python -m rsd_jax.export RUN_DIR --format qwen-harness [--out DIR] [--method KEY ...]`.

For each method and set: DIR/<method>/<set>/test_qwen25-math-cot_-1_seed0_t0.0_s0_e-1.jsonl (one problem per line,
the harness's fields in its order, by idx: rsd_jax.harness) and its `..._qwen25-math-cot_metrics.json` (acc, the
sample counts, time, and the official RSD code's token counts), as the Qwen2.5-Math harness's math_eval.py lays
out its output folder; its evaluate.py re-grades such a file. DIR defaults to RUN_DIR/qwen-harness.

A run folder is a multi-set run (RUN_DIR/<set>/<method>.jsonl, rsd_jax.evaluate_sets) or a one-set run
(RUN_DIR/<method>.jsonl, its set named by RUN_DIR/config.yaml's data.source).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rsd_jax import exits
from rsd_jax.errors import InputError, RSDError
from rsd_jax.harness import PROMPT_TYPE, metrics, output_name, to_harness
from rsd_jax.outputs import write_text_atomic
from rsd_jax.records import read_records

FORMATS = ("qwen-harness",)


def run_files(run_dir: Path) -> dict[str, dict[str, Path]]:
    """set -> method key -> its record file, in a run folder of either layout (see the module docstring)."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run folder not found: {run_dir}")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise InputError(f"{run_dir} has no config.yaml: not an evaluate run's folder")
    data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    files = {}
    if data.get("sources"):
        for entry in data["sources"]:
            name = str(entry).partition("=")[0].strip()
            found = {p.stem: p for p in sorted((run_dir / name).glob("*.jsonl"))}
            if found:
                files[name] = found
    else:
        found = {p.stem: p for p in sorted(run_dir.glob("*.jsonl"))}
        if found:
            files[data.get("source", "arith")] = found
    if not files:
        raise InputError(f"{run_dir} holds no records yet")
    return files


def harness_records(path: Path) -> list[dict]:
    """The records of one file in the harness's layout, by idx; records without the harness's fields (written by
    an older rsd_jax) are an InputError naming the file."""
    records = read_records(path)
    if any("pred" not in r or r.get("idx") is None for r in records):
        raise InputError(f"{path} holds records without the harness's fields (idx, pred, score): they were written "
                         "before rsd_jax recorded them, or from prompts without a set; decode them again")
    return sorted((to_harness(r) for r in records), key=lambda r: r["idx"])


def export(run_dir: Path, out: Path, methods: list[str] | None = None) -> list[Path]:
    """Writes every (method, set) of the run in the harness's layout under `out`; returns the JSONL files."""
    files = run_files(run_dir)
    known = sorted({key for by_key in files.values() for key in by_key})
    for key in methods or ():
        if key not in known:
            raise InputError(f"the run has no method {key!r}; it has {', '.join(known)}")
    written = []
    for name, by_key in files.items():
        for key, path in by_key.items():
            if methods and key not in methods:
                continue
            raw = read_records(path)
            records = harness_records(path)
            target = out / key / name / output_name(None)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            seconds = sum(r.get("wall_seconds", 0.0) for r in raw)
            write_text_atomic(target.with_name(target.stem + f"_{PROMPT_TYPE}_metrics.json"),
                              json.dumps(metrics(records, seconds), indent=4) + "\n")
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="an evaluate run's folder")
    parser.add_argument("--format", required=True, choices=FORMATS, help="qwen-harness: the Qwen2.5-Math harness's "
                                                                         "JSONL and metrics files")
    parser.add_argument("--out", help="where to write (default: RUN_DIR/qwen-harness)")
    parser.add_argument("--method", action="append", help="only these methods' records (default: all)")
    args = parser.parse_args(argv)
    try:
        out = Path(args.out) if args.out else Path(args.run_dir) / "qwen-harness"
        written = export(Path(args.run_dir), out, args.method)
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
