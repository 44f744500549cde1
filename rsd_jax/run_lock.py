"""One writer per run folder: an advisory lock held for a run's whole life.

`claim_locked(folder, identity, new_run)` takes an exclusive `fcntl.flock` on `folder/.rsd_jax.lock` before the
folder's run identity is read or written (rsd_jax.runs.claim_run_dir), and keeps it until the returned `RunLock`
is released (the end of the command) or the process dies: the kernel drops a flock with the last descriptor
of its open file, whatever kills the process, so a lock left by a dead run never blocks a later one (the file
stays, with the dead holder's line in it, and is simply locked again). A second run into a held folder is
refused in one line naming the folder and the holder (its pid, host, start time and command, which the holder
writes into the lock file); with `--new-run` it goes on into the first sibling DIR-2, DIR-3, ... that is
neither held nor holds records, so parallel `--new-run` runs each get their own folder.

A flock is advisory (only rsd_jax's commands ask for it) and, on NFS, is only as good as the server's lock
support (Linux emulates it with POSIX byte-range locks there).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from rsd_jax.errors import ConfigError, OutputError
from rsd_jax.runs import claim_run_dir, holds_results

LOCK_FILE = ".rsd_jax.lock"
MAX_SIBLINGS = 10_000


class RunLock:
    """An exclusive flock on `folder/.rsd_jax.lock` (released by `release`, or by the OS when the process dies)."""

    def __init__(self, folder: Path, fd: int):
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder_line() -> str:
    """Who holds a lock: pid, host, start time (UTC) and command line."""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = " ".join([os.path.basename(sys.executable), *sys.argv])[:300]
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command}"


def try_lock(folder: Path) -> RunLock | None:
    """The lock on `folder` (created, with the lock file, as the umask allows), or None when another process
    holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    line = (holder_line() + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, line, 0)
    return RunLock(folder, fd)


def holder_of(folder: Path) -> str:
    """The holder's line from the lock file ("another process" while it has not written it yet)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = (folder / LOCK_FILE).read_text(encoding="utf-8").strip()
        if text:
            return text.splitlines()[0]
    return "another process"


def lock_or_refuse(folder: Path, flag: str = "--out") -> RunLock:
    """The lock on `folder`; OutputError naming the folder and its holder when another run holds it."""
    lock = try_lock(folder)
    if lock is None:
        raise OutputError(f"{flag} {folder} is in use by another run ({holder_of(folder)}); wait for it to end, "
                          f"or pass --new-run to write into a fresh folder beside it")
    return lock


def _free_sibling(folder: Path, holds: Callable[[Path], bool]) -> tuple[Path, RunLock]:
    """The first of DIR-2, DIR-3, ... that this process could lock and that holds no records, locked."""
    for n in range(2, MAX_SIBLINGS):
        candidate = folder.with_name(f"{folder.name}-{n}")
        if candidate.exists() and not candidate.is_dir():
            continue
        lock = try_lock(candidate)
        if lock is None:
            continue
        if not holds(candidate) and not _other_files(candidate):
            return candidate, lock
        lock.release()
    raise ConfigError(f"no free folder beside {folder} for --new-run")


def _other_files(folder: Path) -> bool:
    return any(p.name != LOCK_FILE for p in folder.iterdir())


def claim_locked(folder: Path, identity: dict[str, Any], new_run: bool = False, flag: str = "--out",
                 holds: Callable[[Path], bool] = holds_results) -> tuple[Path, RunLock]:
    """(the folder this run writes into, its lock): rsd_jax.runs.claim_run_dir's rules, under the folder's lock.
    Without new_run a held folder is refused (OutputError); with it, a held folder or one holding records sends
    the run to the first free sibling (printed). `holds`: does a folder hold results (default: record logs)."""
    lock = try_lock(folder) if new_run else lock_or_refuse(folder, flag)
    if new_run and (lock is None or holds(folder)):
        if lock is not None:
            lock.release()
        folder, lock = _free_sibling(folder, holds)
        print(f"--new-run: writing into {folder}", flush=True)
    try:
        return claim_run_dir(folder, identity, new_run=False, flag=flag, holds=holds), lock
    except BaseException:
        lock.release()
        raise
