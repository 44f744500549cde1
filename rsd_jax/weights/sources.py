"""Where a model's files are: a local folder, or a Hugging Face hub id resolved to a folder of the hub's cache.

`model_folder("Qwen/Qwen2.5-Math-7B-Instruct")` returns the cached snapshot folder (downloading only the files
rsd_jax reads, `MODEL_FILES`, when online); `model_folder("models/draft")` returns the local folder when it exists.

Which strings are paths and which are hub ids, in this order:
1. a string that exists on disk (absolute, `~`-expanded, or relative resolved as `rsd_jax.paths.resolve_path`
   does: against the repository root, the config's folder, then the current directory) is a path;
2. a string that starts with `/`, `~` or `.` (`./x`, `../x`), or holds a backslash, is a path;
3. a string whose part before the first `@` has no `/` or more than one (`draft`, `x/y/z`, `org/name/`) is a path;
4. `org/name` or `org/name@revision` is a hub id when `org` and `name` are valid hub names (letters, digits, `_`,
   `-`, `.`; starting and ending with a letter, digit or `_`; no `--` or `..`; `name` not ending in `.git`, at most
   96 characters); the revision (branch, tag or commit hash; it may hold `/`, e.g. `refs/pr/1`) is everything after
   the first `@`. Otherwise, without an `@` it is a path; with one it is a malformed hub id (ConfigError).
A path that does not exist is returned as is, so its loader says "model folder not found: ...".

The cache is huggingface_hub's: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, else its default
(`~/.cache/huggingface/hub`), read when a model is resolved (huggingface_hub itself reads them once, at import).
With `HF_HUB_OFFLINE=1` (or `TRANSFORMERS_OFFLINE=1`) nothing is downloaded: a hub id must already be cached.
Online, an unreachable hub falls back to the cache as huggingface_hub does. Every failure is one `CheckpointError`
line that names the id and the way out.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path

from rsd_jax.errors import CheckpointError, ConfigError
from rsd_jax.paths import resolve_path

#: What rsd_jax reads of a model repository: HF safetensors snapshots (single or sharded), their configs and
#: tokenizer files, and an rsd_jax orbax checkpoint (model_config.json, params/, char_tokenizer.json).
MODEL_FILES = ("*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
               "model_config.json", "params/*", "char_tokenizer.json", "checksums.sha256")
#: What a tokenizer reads (config.json and generation_config.json name EOS ids): no weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "config.json", "generation_config.json", "char_tokenizer.json")

_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_REPO = re.compile(rf"{_NAME}/{_NAME}", re.ASCII)
_TRUE = {"1", "on", "yes", "true"}


@dataclasses.dataclass(frozen=True)
class HubId:
    """A model repository on the Hugging Face hub and an optional revision (None: the default branch)."""

    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "")


def _valid_repo(repo: str) -> bool:
    name = repo.split("/")[1]
    return (_REPO.fullmatch(repo) is not None and "--" not in repo and ".." not in repo
            and not name.endswith(".git") and len(name) <= 96)


def parse_source(raw: str, config_file: str | Path | None = None, revision: str | None = None) -> Path | HubId:
    """A model reference -> a local `Path` (that may not exist) or a `HubId`, by the rules in the module doc.

    revision: an explicit revision (e.g. `models.draft.revision`); it must agree with an `@revision` in `raw`,
    and a local folder takes none.
    """
    local = resolve_path(raw, config_file)
    if local.exists() or raw.startswith(("/", "~", ".")) or "\\" in raw:
        if revision is not None and local.exists():
            raise ConfigError(f"revision {revision!r} was given for the local path {local}: a revision is only "
                              f"for hub ids (org/name); drop it or give the hub id")
        return local
    repo, at, rev = raw.partition("@")
    if repo.count("/") != 1:
        return local
    if not _valid_repo(repo):
        if at:
            raise ConfigError(f"{raw!r} is not a valid hub id (org/name or org/name@revision; names of letters, "
                              f"digits, '_', '-', '.') and no local folder {local} exists")
        return local
    if at and not rev.strip():
        raise ConfigError(f"hub id {raw!r} has an empty revision after '@': give org/name or org/name@revision")
    if at and revision is not None and rev != revision:
        raise ConfigError(f"hub id {raw!r} names revision {rev!r} but the revision given is {revision!r}: "
                          f"give one of them")
    return HubId(repo, rev or revision)


def model_folder(raw: str, config_file: str | Path | None = None, revision: str | None = None, *,
                 files: tuple[str, ...] = MODEL_FILES) -> Path:
    """The local folder of a model reference: the path itself, or the hub snapshot folder of a hub id (only the
    `files` patterns are downloaded). Raises ConfigError for a malformed id, CheckpointError when a hub id
    cannot be had (not cached while offline, unknown repository or revision, gated, network down)."""
    source = parse_source(raw, config_file, revision)
    if isinstance(source, Path):
        return source
    return _snapshot(source, tuple(files), _cache_dir(), _offline(), resolve_path(raw, config_file))


def _offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it at import."""
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if env.strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir() -> str | None:
    """The hub cache folder as the environment names it now (None: huggingface_hub's default)."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return os.path.expandvars(os.path.expanduser(os.environ[key]))
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"])), "hub")
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


@functools.lru_cache(maxsize=64)
def _snapshot(hub: HubId, files: tuple[str, ...], cache_dir: str | None, offline: bool, local: Path) -> Path:
    """snapshot_download with huggingface_hub's errors turned into one line each (memoised: the draft's folder
    is asked for by its loader and by its tokenizer)."""
    try:
        from huggingface_hub import constants, errors, snapshot_download
    except ImportError:
        raise ConfigError(f"{str(hub)!r} is a hub id, which needs huggingface_hub (pip install huggingface_hub); "
                          f"or give a local folder (there is none at {local})") from None
    cache = cache_dir or constants.HF_HUB_CACHE
    name = f"hub model {hub.repo!r}"
    rev = f"revision {hub.revision!r} of " if hub.revision else ""
    try:
        folder = snapshot_download(hub.repo, revision=hub.revision, cache_dir=cache_dir, local_files_only=offline,
                                   allow_patterns=list(files))
    except errors.GatedRepoError:
        raise CheckpointError(f"{name} is gated: accept its terms on https://huggingface.co/{hub.repo} and log in "
                              f"(hf auth login, or HF_TOKEN)") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(f"{name} was not found on the Hugging Face hub and there is no local folder {local}: "
                              f"check the id (a private one needs hf auth login, or HF_TOKEN), or give a local "
                              f"folder") from None
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"revision {hub.revision!r} does not exist in {name} on the Hugging Face hub: give "
                              f"one of its branches, tags or commit hashes") from None
    except errors.LocalEntryNotFoundError as e:  # not cached, and offline or the hub unreachable
        if type(e).__name__ == "IncompleteSnapshotError":
            raise CheckpointError(f"the cached snapshot of {rev}{name} in {cache} is incomplete and the hub cannot "
                                  f"be reached: download it again online, or give a local folder") from None
        if offline:
            raise CheckpointError(_not_cached(hub, cache, local)) from None
        cause = f" ({_first_line(e.__cause__)})" if e.__cause__ is not None else ""
        raise CheckpointError(f"cannot get {rev}{name} from the Hugging Face hub{cause} and it is not in the "
                              f"cache {cache}: check the network, or give a local folder") from None
    except errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        login = "; log in (hf auth login, or HF_TOKEN)" if status in (401, 403) else ""
        raise CheckpointError(f"the Hugging Face hub refused {rev}{name} ({_first_line(e)}){login}") from None
    except errors.HFValidationError as e:
        raise ConfigError(f"{str(hub)!r} is not a valid hub id ({_first_line(e)})") from None
    except Exception as e:  # the HTTP client's own errors (proxy, TLS, ...): still one line
        raise CheckpointError(f"cannot download {rev}{name} from the Hugging Face hub ({_first_line(e)}): check "
                              f"the network, or give a local folder") from None
    return Path(folder)


def _not_cached(hub: HubId, cache: str, local: Path) -> str:
    """The offline message: the repository is not cached at all, or not at that revision (naming those cached)."""
    repo_dir = Path(cache) / ("models--" + hub.repo.replace("/", "--"))
    way_out = "download it once online, or give a local folder"
    if not repo_dir.is_dir():
        return (f"hub model {hub.repo!r} is not in the Hugging Face cache (HF_HUB_OFFLINE=1; cache {cache}) and "
                f"there is no local folder {local}: {way_out}")
    refs = sorted(str(p.relative_to(repo_dir / "refs")) for p in (repo_dir / "refs").rglob("*") if p.is_file())
    snaps = sorted(p.name[:12] for p in (repo_dir / "snapshots").glob("*") if p.is_dir())
    have = ", ".join(refs + snaps) or "none"
    return (f"revision {hub.revision or 'main'!r} of hub model {hub.repo!r} is not in the Hugging Face cache "
            f"(HF_HUB_OFFLINE=1; cache {cache}; cached revisions: {have}): {way_out}")
