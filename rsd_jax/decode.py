"""Decode problems with RSD (or another method): `python -m rsd_jax.decode --config FILE [key=value ...] [--out DIR]`.

Prints each problem with its steps marked by source (draft or target) and the PRM's reward, then a summary, and
shows its progress over the problems on stderr (--quiet: only the summary);
with --out, writes DIR/results.jsonl (one record per problem, appended and fsynced as each batch finishes) and
DIR/run.json (what run wrote them): the same command again resumes, another run into DIR is refused
(--new-run: a fresh folder beside it). See rsd_jax.exits for the exit codes.
"""

from __future__ import annotations

if __name__ == "__main__":  # SIGINT / SIGTERM during the imports below: one line, 130 / 143
    from rsd_jax.signals import on_signals_while_starting

    on_signals_while_starting("rsd_jax.decode")

import argparse
import contextlib
import sys
import time
from pathlib import Path

import jax
from tqdm import tqdm

from rsd_jax import exits, signals
from rsd_jax.config import RunConfig
from rsd_jax.configlib import add_config_flags, describe_if_asked, print_config_if_asked
from rsd_jax.data.problems import Item
from rsd_jax.entry import Loaded, load_parts, read_config, start as start_devices
from rsd_jax.errors import RSDError
from rsd_jax.summary import health_warning, summarize
from rsd_jax.outputs import check_output_dir
from rsd_jax.records import RecordLog, read_records
from rsd_jax.run_lock import claim_locked
from rsd_jax.runs import check_records_match, run_identity
from rsd_jax.signals import Interrupted, interruptible

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
    parser.add_argument("--out", help="write DIR/results.jsonl (resumed when DIR holds the same run)")
    parser.add_argument("--new-run", action="store_true", help="DIR holds a run: write into a fresh DIR-2, ... instead")
    parser.add_argument("--strict", action="store_true",
                        help="exit 3 when a record has an error or non-finite PRM rewards")
    add_config_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    return parser.parse_intermixed_args(argv)


def open_log(out_dir: Path, items: list[Item]) -> RecordLog:
    """The results file (its torn tail cut), checked against the problems: a resume goes on from it."""
    log = RecordLog(out_dir / "results.jsonl")
    check_records_match(log.records, items, log.path)
    already = len(log.uids & {i.uid for i in items})
    if already:
        print(f"resuming: {already} of {len(items)} problems are already in {log.path}", file=sys.stderr)
    return log


class Progress:
    """A bar over the problems on stderr that appears once the first batch is done, counting it from the start: a
    run that fails before prints only its one-line error, and the rate and time left leave out the compilation.
    Off with --quiet and on every process but the first (multi-host)."""

    def __init__(self, total: int, done: int, quiet: bool):
        self.total, self.done, self.off = total, done, quiet or jax.process_index() != 0
        self.bar: tqdm | None = None

    def advance(self, n: int) -> None:
        """n more problems decoded."""
        self.done += n
        if self.off:
            return
        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=self.done, desc="decode", unit="problem", file=sys.stderr)
        else:
            self.bar.update(n)

    def printing(self) -> contextlib.AbstractContextManager:
        """While records print on stdout, the bar steps aside (on a terminal both share the screen)."""
        return tqdm.external_write_mode(file=sys.stdout) if self.bar is not None else contextlib.nullcontext()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def decode_items(loaded: Loaded, log: RecordLog | None, done: frozenset, quiet: bool) -> list[dict]:
    """Decodes the loaded problems not `done` yet, printing each record and appending each batch to `log` (the
    first process's, multi-host) as it finishes; returns this run's new records."""
    color = sys.stdout.isatty()
    records = []
    items = loaded.problems
    with Progress(len(items), sum(i.uid in done for i in items), quiet) as progress:
        for batch in loaded.batches(done):
            batch = [r for r in batch if r["uid"] not in done]
            if not quiet and jax.process_index() == 0:
                with progress.printing():
                    for record in batch:
                        print(format_record(record, color), flush=True)
            if log is not None:
                log.append(batch)
            records += batch
            progress.advance(len(batch))
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if describe_if_asked(args, RunConfig):
        return 0
    kept = "nothing was written yet"
    handling = contextlib.ExitStack()  # SIGINT / SIGTERM: one line, exit 130 / 143
    handling.enter_context(interruptible("rsd_jax.decode", lambda: kept))
    try:
        cfg = read_config(args.config, args.overrides)
        if print_config_if_asked(args, cfg):
            return 0
        # the one start-up of rsd_jax.run / rsd_jax.load (rsd_jax.entry): devices and mesh first (multi-host: joins
        # the other processes before anything else uses JAX), then the output folder, then tokenizers, problems, weights
        mesh = start_devices(cfg, args.config)
        lead = jax.process_index() == 0  # multi-host: every process decodes the same batches, the first one writes
        out_dir = Path(args.out or cfg.output) if (args.out or cfg.output) else None
        kept = "nothing was written (no --out)"
        if out_dir is not None:  # before any work: a bad folder, or another run's folder, costs nothing
            if lead:
                out_dir, lock = claim_locked(check_output_dir(out_dir), run_identity(cfg, args.config),
                                             args.new_run)  # held to the end: one writer (rsd_jax.run_lock)
                handling.enter_context(lock)
            kept = f"the records written so far are kept in {out_dir}; run the same command to resume"
        loaded = load_parts(cfg, args.config, mesh, args.overrides)  # weights straight into their shardings
        items = loaded.problems
        log = open_log(out_dir, items) if out_dir is not None and lead else None
        done = frozenset(log.uids) if log is not None else frozenset()
        if out_dir is not None and not lead:  # multi-host: every process skips the problems the folder holds
            done = frozenset(r["uid"] for r in read_records(out_dir / "results.jsonl"))
        start = time.time()
        records = decode_items(loaded, log, done, args.quiet)
        if log is not None:  # the summary of what is on disk: a resumed run counts every problem once
            uids = {i.uid for i in items}
            records = [r for r in log.records if r["uid"] in uids]
        summary = summarize(records, wall_seconds=time.time() - start)
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    except (Interrupted, KeyboardInterrupt) as e:
        return exits.interrupted("rsd_jax.decode", e, kept)
    finally:
        handling.close()
    if jax.process_index() == 0:
        print("\n" + " | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    return exits.health([w for w in [health_warning(summary)] if w], args.strict)


if __name__ == "__main__":
    signals.leave(main())  # os._exit after an interruption (rsd_jax.signals)
