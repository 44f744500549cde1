"""How the commands end: one line on stderr and an exit code that says why.

0 done; 2 refused or failed on bad input, a bad output location or a failed write (nothing that was written is
lost); 3 done, but `--strict` found records with an error or non-finite rewards; 130 / 143 interrupted by SIGINT /
SIGTERM (what was written is complete; the same command resumes). A Python traceback (exit 1) is a bug.
"""

from __future__ import annotations

import sys

from rsd_jax import signals

BAD_INPUT = 2
STRICT = 3


def error(message: object) -> int:
    """Prints `error: message` (one line) and returns the bad-input exit code."""
    lines = str(message).strip().splitlines()
    print(f"error: {lines[0] if lines else type(message).__name__}", file=sys.stderr)
    return BAD_INPUT


def os_error(e: OSError) -> int:
    """An OSError no check caught (e.g. a disk that filled up while a plot was saved), as one line."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return error(f"{e.strerror or e}{where}")


def interrupted(command: str, e: BaseException, kept: str) -> int:
    """The line for SIGINT / SIGTERM (a KeyboardInterrupt counts as SIGINT) and its exit code, 130 / 143."""
    stop = signals.interruption(e)
    print(signals.message(command, stop.signum, kept), file=sys.stderr)
    return stop.exit_code


def health(warnings: list[str], strict: bool) -> int:
    """The summaries' health warnings (records with an error or non-finite rewards): each on its own line and
    exit 0, or with --strict all of them as one error line and exit 3."""
    if not warnings:
        return 0
    if not strict:
        print("\n".join(warnings), file=sys.stderr)
        return 0
    print("error: --strict: " + " | ".join(w.removeprefix("warning: ") for w in warnings), file=sys.stderr)
    return STRICT
