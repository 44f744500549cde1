"""Where the paper's nine evaluation sets come from: a registry by name, and the search for a readable copy.

`data.source: NAME` is read from the first of (`dataset_bytes`):
1. `data.path`, when given: any JSONL file in the set's published format, read as is;
2. `$RSD_DATA_DIR/NAME.jsonl`, when the variable is set and the file exists, read as is;
3. the copy shipped inside the package (MATH500 and GSM8K, both MIT: `rsd_jax/data/sets/`, see NOTICE there);
4. the download cache, `$RSD_CACHE_DIR/datasets` or `~/.cache/rsd_jax/datasets` (checksum verified);
5. a download on first use into that cache, unless `HF_HUB_OFFLINE=1` or `RSD_OFFLINE=1`; the checksum is checked
   before anything is written, and the file is written to a temporary name and renamed into place.

The remote copies are the ones vendored by the official RSD code (the Qwen2.5-Math evaluation harness's data) at a
pinned commit, fetched with plain urllib: no copy on the Hugging Face hub is known to hold these exact bytes, so no
hub copy could be checked against the hashes below. Each SHA-256 was computed from the harness's files, which are
byte-identical to the copies at that commit. GPQA is never stored in the repository in plain text (its
authors ask that its examples not be published that way): it only ever lands in the user's cache.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

from rsd_jax.errors import InputError

#: The official RSD code's commit whose vendored copies the downloads read.
COMMIT = "933d8e579f9c3387c04dd9c8fa3c7fd42a30c97e"
URL = ("https://raw.githubusercontent.com/BaohaoLiao/RSD/" + COMMIT
       + "/external/qwen25_math_evaluation/data/{name}/test.jsonl")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "RSD_OFFLINE")
DOWNLOAD_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class Source:
    """One evaluation set: its name, the SHA-256 of its JSONL bytes, whether the package ships it, where it is
    downloaded from."""

    name: str
    sha256: str
    shipped: bool
    url: str


def _source(name: str, sha256: str, shipped: bool = False) -> Source:
    return Source(name, sha256, shipped, URL.format(name=name))


SOURCES: dict[str, Source] = {s.name: s for s in (
    _source("math500", "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132", shipped=True),
    _source("gsm8k", "9f098df7ff4522078d6ccec27a5c38a454790fdb51131bedfaa0e490070d5394", shipped=True),
    _source("gaokao2023en", "654d8f49bdb86f578c171dbc0dd8f4d9f1bf3d7a7438f60359fda7d643df4951"),
    _source("olympiadbench", "bb8c1e38a16ea9eacb77530315a674d883f267fbff79183effc53681b4fcc416"),
    _source("minerva_math", "0e656b430d3a0a1dab6aa853f453ba3805e28e2cabe4fc72486a897cc09d8ba2"),
    _source("gpqa", "b42baaf56325ee8b06cf438465c1779a57affd8e971e2298e7751827d66dbc39"),
    _source("mmlu_stem", "fd7c16f96067d285638abb5aaef9cd8a063b11454e14cb64df93141a58691478"),
    # Table B.1's sets (draft stronger than target); byte-identical in the Qwen2.5-Math repository's evaluation/data
    _source("cn_middle_school", "d768b866b72ecd1ddcaa84acb56d7bd70d759fbb2cdb0c2bc63f1e5befdb58d6"),
    _source("college_math", "91131bc4a355b884fc63ef7c4f048c35adb030004a4cb07b1475698f120aa4a6"),
)}
#: The names `data.source` accepts for the paper's sets (Table 2's, Table 3's Minerva Math, Table B.1's two; the
#: config layer reads this tuple).
NAMES = tuple(SOURCES)


def source_of(name: str) -> Source:
    """The registry entry of a set; an unknown name is an InputError listing the known ones."""
    if name not in SOURCES:
        raise InputError(f"unknown dataset {name!r}; known datasets: {', '.join(SOURCES)}")
    return SOURCES[name]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_dir() -> Path:
    """Where downloaded sets are kept: `$RSD_CACHE_DIR/datasets`, else `~/.cache/rsd_jax/datasets`."""
    root = os.environ.get("RSD_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "rsd_jax") / "datasets"


def cached_path(source: Source) -> Path:
    """The cache file of a set; its name carries the hash, so a registry update never reads a stale copy."""
    return cache_dir() / f"{source.name}-{source.sha256[:16]}.jsonl"


def offline_variable() -> str | None:
    """The variable (HF_HUB_OFFLINE or RSD_OFFLINE) that turns downloads off, if one is set to a true value."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def data_dir_path(name: str) -> Path | None:
    """`$RSD_DATA_DIR/NAME.jsonl` when the variable is set and that file exists. A variable naming no folder is
    an InputError (it was silently passed over, and the set read from elsewhere)."""
    root = os.environ.get("RSD_DATA_DIR")
    if not root:
        return None
    folder = Path(root).expanduser()
    if not folder.is_dir():
        what = "a file" if folder.exists() else "missing"
        raise InputError(f"RSD_DATA_DIR={root} is {what}, not a folder: point it to the folder holding "
                         f"{name}.jsonl, or unset it")
    path = folder / f"{name}.jsonl"
    return path if path.is_file() else None


def local_copy(name: str) -> str | None:
    """Where the set can be read without the network (RSD_DATA_DIR, the shipped copy, the cache), or None."""
    source = source_of(name)
    path = data_dir_path(name)
    if path is not None:
        return str(path)
    if source.shipped:
        return f"the shipped {name}.jsonl.gz"
    cached = cached_path(source)
    return str(cached) if cached.is_file() else None


def read_file(path: Path) -> bytes:
    """A dataset file's bytes; a missing or unreadable file is an InputError naming it."""
    if not path.is_file():
        raise InputError(f"dataset file not found: {path}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path} ({e.strerror or e})") from None


def verified(data: bytes, source: Source, where: str, remedy: str) -> bytes:
    """data, when its SHA-256 is the registered one; else an InputError naming where it came from and both hashes."""
    got = sha256_of(data)
    if got != source.sha256:
        raise InputError(f"{where}: SHA-256 {got} does not match the expected {source.sha256} of {source.name}; "
                         f"{remedy}")
    return data


def shipped_bytes(source: Source) -> bytes:
    """The JSONL bytes of a set shipped inside the package (gzip-compressed there)."""
    resource = resources.files("rsd_jax.data").joinpath("sets", f"{source.name}.jsonl.gz")
    try:
        data = gzip.decompress(resource.read_bytes())
    except (OSError, EOFError) as e:
        raise InputError(f"the shipped {source.name}.jsonl.gz cannot be read ({e}): reinstall rsd_jax") from None
    return verified(data, source, f"the shipped {source.name}.jsonl.gz", "reinstall rsd_jax")


def write_atomically(path: Path, data: bytes) -> None:
    """Writes data to a temporary file beside path, then renames it into place (readers never see a part)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise InputError(f"cannot write the dataset cache {path.parent} ({e.strerror or e}): set RSD_CACHE_DIR to "
                         "a writable folder") from None


def way_out(name: str) -> str:
    return f"set RSD_DATA_DIR to a folder with {name}.jsonl, or data.path"


def download(source: Source, path: Path) -> bytes:
    """Fetches a set into the cache file path (checksum checked first) and returns its bytes; refuses offline."""
    flag = offline_variable()
    if flag is not None:
        root = os.environ.get("RSD_DATA_DIR")
        missing = f" (RSD_DATA_DIR={root} has no {source.name}.jsonl)" if root else ""
        raise InputError(f"{source.name} is not shipped with rsd_jax and not cached in {path.parent}, and downloads "
                         f"are off ({flag}={os.environ[flag]}){missing}: {way_out(source.name)}")
    print(f"rsd_jax: downloading {source.name} from {source.url} into {path.parent}", file=sys.stderr)
    try:
        with urllib.request.urlopen(source.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except urllib.error.HTTPError as e:
        raise InputError(f"could not download {source.name} from {source.url} (HTTP {e.code} {e.reason}): "
                         f"{way_out(source.name)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:  # no network, cut, bad URL
        reason = getattr(e, "reason", None) or e
        raise InputError(f"could not download {source.name} from {source.url} ({reason}): check the network, "
                         f"or {way_out(source.name)}") from None
    verified(data, source, f"the download from {source.url}", "nothing was written to the cache")
    write_atomically(path, data)
    return data


def dataset_bytes(name: str, path: Path | None = None) -> tuple[bytes, str]:
    """(the JSONL bytes of set `name`, where they were read): path if given, else RSD_DATA_DIR, the shipped copy,
    the cache, a download (see the module's docstring). An unknown name is an InputError even with a path."""
    source = source_of(name)
    if path is not None:
        return read_file(path), str(path)
    local = data_dir_path(name)
    if local is not None:
        return read_file(local), str(local)
    if source.shipped:
        return shipped_bytes(source), f"the shipped {name}.jsonl.gz"
    cached = cached_path(source)
    if cached.is_file():
        return verified(read_file(cached), source, str(cached), "delete the file to download it again"), str(cached)
    return download(source, cached), str(cached)
