"""Where the commands write: output locations checked before any work, files replaced atomically, and model
folders published whole.

Every command calls `check_output_dir` (or `check_output_file`) on its output location right after reading its
config and before loading a model or timing anything, so that a bad location costs nothing: a file where a
folder is expected, a folder under a file, a read-only or otherwise unwritable place are each one `OutputError`
line. Small result files (config.yaml, run.json, summary.json, a benchmark's JSON) are written to a temporary
sibling, fsynced and renamed over the old one (`write_text_atomic`), so a reader never sees half a file. A model
folder is built in a temporary sibling and renamed into place (`staged_folder`), so a destination never holds a
model next to a manifest that is not its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from rsd_jax.errors import OutputError
from rsd_jax.signals import writing


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def _probe_write(folder: Path) -> None:
    """Creates and removes a file in `folder` (OSError when it cannot): the one test a root user, a read-only
    mount and a full quota all answer truthfully."""
    fd, name = tempfile.mkstemp(prefix=".rsd_jax-write-test-", dir=folder)
    os.close(fd)
    os.unlink(name)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | Path, what: str = "--out", *, create: bool = True) -> Path:
    """`path` as a folder the command can write into (created with its parents unless create=False, in which
    case its nearest existing ancestor must be writable); OutputError naming `what` otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    anchor = _nearest_existing(path.absolute())
    if not anchor.is_dir():
        raise OutputError(f"{what} {path} cannot be created: {anchor} is a file, not a folder")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{what} {path} cannot be created: {_reason(e)}") from None
    target = path if create else anchor
    try:
        _probe_write(target)
    except OSError as e:
        raise OutputError(f"{what} {path} is not writable: {_reason(e)} ({target})") from None
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """`path` as a file the command can write at the end (its folder is created; the file is not)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder, not a file")
    check_output_dir(path.parent, f"{what} {path}: the folder")
    return path


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc), else by setting it back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: Path, folder: bool = False) -> None:
    """Gives a file made by `tempfile` (0600; a folder 0700) the mode a plain open or mkdir would: 0666 (0777)
    less the umask, so a result shared through a group or a world-readable folder stays readable."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def _write_file(f, text: str) -> None:
    """Writes and fsyncs an open file (a seam: the tests make it fail as a full disk would)."""
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def write_text_atomic(path: str | Path, text: str | bytes) -> Path:
    """Replaces `path` by `text` (str, or bytes written as they are) in one step: a temporary sibling, fsynced,
    renamed over it, inside `signals.writing()` (a SIGINT / SIGTERM waits for the rename: no temporary file is
    left). On failure (a full disk) the old file is untouched and the temporary one removed: OutputError."""
    path = Path(path)
    tmp = None
    try:
        with writing():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with (os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as f:
                _write_file(f, text)
            honour_umask(Path(tmp))
            os.replace(tmp, path)
            tmp = None
            fsync_dir(path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_reason(e)}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """A matplotlib figure as a PNG at `path`, rendered in memory and then written whole (write_text_atomic)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return write_text_atomic(path, buffer.getvalue())


def fsync_dir(folder: Path) -> None:
    """Makes a rename or a new file in `folder` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_destination(path: str | Path, what: str, overwrite: bool, flag: str) -> Path:
    """A folder a command will replace as a whole (convert's DST, train's out): refused when it already holds
    something and `overwrite` is off (OutputError naming `flag`); its parent must be writable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    if is_nonempty_dir(path) and not overwrite:
        raise OutputError(f"{what} {path} already exists and is not empty; pass {flag} to replace it, "
                          f"or choose another folder")
    check_output_dir(path.parent, f"{what} {path}: the folder", create=False)
    return path


@contextlib.contextmanager
def staged_folder(dst: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty temporary sibling of `dst` to build a folder in; on success renames it to `dst` (an old
    `dst` is moved aside first, then deleted, only with `overwrite`); on any failure removes it, leaving `dst`
    as it was."""
    dst = Path(dst).absolute()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        yield tmp
        _honour_umask_below(tmp)
        publish_folder(tmp, dst, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _honour_umask_below(folder: Path) -> None:
    """`honour_umask` on a staged folder and everything in it that only its owner can read (what tempfile or a
    library made private by default); modes set on purpose to something else are left as they are."""
    honour_umask(folder, folder=True)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        if mode in (0o600, 0o700):
            honour_umask(path, folder=path.is_dir() or bool(mode & 0o100))
    fsync_dir(folder)


def publish_folder(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Renames the finished folder `tmp` to `dst` (see staged_folder)."""
    old = None
    if dst.exists():
        if is_nonempty_dir(dst) and not overwrite:
            raise OutputError(f"{dst} appeared while it was being written; it was left as it is")
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    try:
        os.replace(tmp, dst)
    except OSError as e:
        if old is not None:
            os.replace(old, dst)
        raise OutputError(f"cannot move the new {dst.name} into place: {_reason(e)}") from None
    fsync_dir(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
