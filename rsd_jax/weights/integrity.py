"""Are a model folder's files the bytes that were published? SHA-256 checks before any weight is used.

Two sources of expected digests, each used where it exists:
  * the Hugging Face cache: a snapshot's large files are symlinks to `blobs/<sha256 of the content>` (the LFS
    object id huggingface_hub stored them under), so a file reached through such a link is checked against its
    blob's name;
  * `checksums.sha256` in the folder (`sha256sum` format: `<hex>  <relative path>` a line): every orbax
    checkpoint gets one when it is saved (`save_model`: its config and every file of its params), and
    `python -m rsd_jax.convert`, `merge` and `train` write one over everything they publish; check one by
    hand with `sha256sum -c checksums.sha256`, or write one for an older folder with
    `python -m rsd_jax.checksums --write DIR`.
A file whose digest differs is one CheckpointError line naming it and what to do. A folder with neither source
(a hand-made HF snapshot) is read unchecked; an orbax checkpoint saved before checksums existed loads with a
one-line notice saying how to add them (rsd_jax.weights.orbax_io).

Hashing 15 GB takes seconds to a minute, so a file that passed is remembered (its real path, size, mtime and
inode) in `$XDG_CACHE_HOME/rsd_jax/verified-sha256.json` (RSD_VERIFIED_CACHE overrides the path; an empty value
turns the memo off) and not hashed again until it changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from rsd_jax.errors import CheckpointError

CHECKSUM_FILE = "checksums.sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 16 * 2**20


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(folder: Path, files: list[Path] | None = None) -> Path:
    """Writes `folder/checksums.sha256` (whole or not at all) over `files` (default: every other file under
    `folder`), sorted, as paths relative to `folder`."""
    from rsd_jax.outputs import write_text_atomic

    folder = Path(folder)
    files = sorted(folder.rglob("*")) if files is None else sorted(Path(f) for f in files)
    lines = [f"{sha256_of(p)}  {p.relative_to(folder).as_posix()}\n"
             for p in files if p.is_file() and p.name != CHECKSUM_FILE]
    return write_text_atomic(folder / CHECKSUM_FILE, "".join(lines))


def listed_checksums(folder: Path) -> dict[Path, str]:
    """{file: expected hex digest} from `folder/checksums.sha256` (empty without one); a malformed line is a
    CheckpointError."""
    path = Path(folder) / CHECKSUM_FILE
    if not path.is_file():
        return {}
    expected = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if not line.strip():
            continue
        if not _HEX64.fullmatch(digest) or not name or name.startswith("/") or ".." in Path(name).parts:
            raise CheckpointError(f"{path} line {n} is not '<sha256>  <file>': restore the file, or delete it to "
                                  f"load {folder} unchecked")
        expected[Path(folder) / name.lstrip("*")] = digest
    return expected


def hub_checksum(path: Path) -> str | None:
    """The digest a Hugging Face cache file must have: the name of the blob its snapshot symlink points to, when
    that is a 64-hex-digit LFS object id."""
    if not path.is_symlink():
        return None
    target = Path(os.readlink(path))
    name = target.name
    return name if target.parent.name == "blobs" and _HEX64.fullmatch(name) else None


def _memo_path() -> Path | None:
    raw = os.environ.get("RSD_VERIFIED_CACHE")
    if raw is not None:
        return Path(raw).expanduser() if raw else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rsd_jax" / "verified-sha256.json"


def _stamp(path: Path, digest: str) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{digest}"


def _read_memo(memo: Path | None) -> set[str]:
    if memo is None or not memo.is_file():
        return set()
    try:
        data = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return set()
    return set(data) if isinstance(data, list) else set()


def _write_memo(memo: Path | None, stamps: set[str]) -> None:
    """Best effort (a read-only home only means hashing again next time); written to a temporary sibling and
    renamed, so two loads never leave half a file."""
    if memo is None:
        return
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sorted(stamps)[-4096:]), encoding="utf-8")
        os.replace(tmp, memo)
    except OSError:
        pass


def verify_files(folder: Path, files: list[Path] | None = None, use_memo: bool = True) -> int:
    """Checks `files` (default: every file listed in the folder's checksums.sha256) against their expected
    digests (the checksum file, else the hub blob name); returns how many were checked. use_memo=False hashes every
    file, even one remembered as checked. CheckpointError naming the
    first file whose bytes differ, or a listed file that is missing."""
    folder = Path(folder)
    listed = listed_checksums(folder)
    candidates = list(listed) if files is None else [Path(f) for f in files]
    if files is not None:
        candidates += [p for p in listed if p not in candidates and p.suffix == ".safetensors"]
    memo_path = _memo_path() if use_memo else None
    memo, checked, new = _read_memo(memo_path), 0, False
    for path in candidates:
        expected = listed.get(path) or hub_checksum(path)
        if expected is None:
            continue
        if not path.is_file():
            raise CheckpointError(f"{path} is listed in {folder / CHECKSUM_FILE} but missing: the checkpoint is "
                                  f"incomplete; copy or convert it again")
        checked += 1
        stamp = _stamp(path, expected)
        if stamp in memo:
            continue
        actual = sha256_of(path)
        if actual != expected:
            where = "the Hugging Face cache's blob name" if path not in listed else folder / CHECKSUM_FILE
            raise CheckpointError(f"{path} is corrupt: its SHA-256 is {actual[:12]}..., {where} says "
                                  f"{expected[:12]}...; download or convert it again")
        memo.add(stamp)
        new = True
    if new:
        _write_memo(memo_path, memo)
    return checked

