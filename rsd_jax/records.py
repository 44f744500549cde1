"""Result records on disk: one JSON object per line, appended batch by batch, never lost and never doubled.

A `RecordLog` is one JSONL file of records unique by uid. Each batch is appended with one write and fsynced,
inside `signals.writing()` so that SIGINT / SIGTERM wait for it. An interruption at any byte (SIGKILL, a crash,
a power cut) can only leave an incomplete last line; opening the log again cuts that torn tail off (the records
before it are intact, and the cut batch is decoded again). A failed write (a full disk) is undone at once by
truncating the file back to its last complete record, and reported as one OutputError line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from rsd_jax.errors import InputError, OutputError
from rsd_jax.signals import writing


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a seam: the tests make it fail as a full disk would)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def encode(records: Iterable[dict]) -> bytes:
    """Records as JSONL bytes (NaN and inf stay as JSON's common extensions NaN / Infinity, which json reads)."""
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """The records of a JSONL log, in file order, the first of each uid. A last line that is incomplete or not
    JSON (an interrupted write) is dropped, and with `repair` cut off the file; a bad line before the last one
    means the file was edited or damaged: InputError naming the line."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]  # what follows the last newline is incomplete: a torn tail when not empty
    records, seen, good_end = [], set(), 0  # good_end: the bytes up to the last complete record
    for number, line in enumerate(lines, 1):
        record = _parse(line)
        if record is None and line.strip():
            if number < len(lines):
                raise InputError(f"{path} line {number} is not a JSON record with a uid (the file was edited or "
                                 f"damaged); remove that line, or move the file away to start over")
            break  # the last line cut inside a write: a torn tail
        good_end += len(line) + 1
        if record is not None and record["uid"] not in seen:
            seen.add(record["uid"])
            records.append(record)
    if repair and good_end < len(data):
        cut(path, good_end)
    return records


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "uid" in record else None


def cut(path: Path, size: int) -> None:
    """Truncates `path` to `size` bytes, durably."""
    try:
        with writing():
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot repair the torn last line of {path}: {e.strerror or e}") from None


class RecordLog:
    """One JSONL file of records unique by uid: what is on disk (`records`), and `append` for new ones."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records = read_records(self.path, repair=True)
        self.uids = {r["uid"] for r in self.records}

    def append(self, records: Sequence[dict]) -> list[dict]:
        """Appends the records whose uid is not in the log yet (returned), as one fsynced write. On a failed
        write the file is cut back to where it was: OutputError, the earlier records kept."""
        new, uids = [], set()
        for r in records:
            if r["uid"] not in self.uids and r["uid"] not in uids:
                new.append(r)
                uids.add(r["uid"])
        if not new:
            return []
        data = encode(new)
        with writing():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
            try:
                size = os.fstat(fd).st_size
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except OSError as e:
                    try:
                        os.ftruncate(fd, size)
                    except OSError:
                        pass  # the torn tail is cut when the log is opened again
                    raise OutputError(f"cannot write {self.path}: {e.strerror or e}; the {len(self.records)} "
                                      f"records written before are kept") from None
            finally:
                os.close(fd)
        self.records += new
        self.uids |= uids
        return new
