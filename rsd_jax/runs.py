"""What a results folder holds: a run identity, checked before a resume so that two runs never mix.

`DIR/run.json` records the run that wrote DIR's records: every config key that changes a record, and a digest
of each model folder. A later command into DIR resumes only the same run; any difference is refused with the
keys that differ (`claim_run_dir`), unless `--new-run` asks for a fresh sibling folder (DIR-2, DIR-3, ...). A
folder whose run wrote no record yet (it stopped on a bad input) is simply taken over.

Keys that do not change a record are left out (NOT_RESULT_KEYS): the output folder; data.n (more or fewer
problems of the same dataset; each record is checked against its problem by `check_records_match`); which sets
a multi-set run evaluates (data.sources: each set has its own folder and records); which
methods and extra thresholds evaluate runs (each has its own file); mesh.distributed; the models' paths (their
digests stand for them). decoding.batch_size is *kept*: it decides which problems share a batch, hence each
record's share of the executed FLOPs and, when sampling, the random draws of its batch. So are mesh.data and
mesh.model: the batch is padded to the data axis (executed FLOPs) and a sharded run's rewards differ from a
single-device run's in the last float digits (its tokens and decisions are the same). mesh.data=-1 is compared
as written: a resume on another number of devices is not detected (the device count is only known after
jax.distributed.initialize, which comes after this check).

A model digest is cheap on purpose: sha256 over every file's relative path and, for files up to 1 MiB (configs,
tokenizers, manifests, orbax metadata; all of a tiny model), the contents; for larger files (weights) the size
and modification time. Hashing 15 GB of Qwen weights at every resume would take minutes; a retrained or
replaced weight file changes its mtime (a copy that does not keep mtimes is refused too, on the safe side).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from rsd_jax.config import RunConfig
from rsd_jax.configlib import to_dict
from rsd_jax.errors import ConfigError, InputError
from rsd_jax.outputs import write_text_atomic
from rsd_jax.paths import resolve_path

RUN_FILE = "run.json"
RECORD_FORMAT = 2  # bump when a record's fields change meaning
SMALL_FILE = 2**20
NOT_RESULT_KEYS = ("output", "data.n", "data.sources", "rsd.method", "rsd.methods", "rsd.thresholds",
                   "mesh.distributed",
                   "models.draft.path", "models.target.path", "models.prm.path")
ROLES = ("draft", "target", "prm")
# keys added to the config after runs were recorded, each with the value that reproduces what an older run did: an
# older run.json without the key resumes when the key has that value now (keys whose default is None need no entry)
ADDED_KEYS = {"data.format": "auto"}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists stay values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}.{key}" if prefix else key).items()}


def _is_result_key(key: str) -> bool:
    return key not in NOT_RESULT_KEYS


# the checksum file a save adds (rsd_jax.weights.integrity.CHECKSUM_FILE) describes the weights without being part of
# them: a folder keeps its digest, and its earlier runs their identity, when `python -m rsd_jax.checksums --write` adds it
CHECKSUM_FILE = "checksums.sha256"


def model_digest(path: Path) -> str:
    """A digest of a model folder (see the module doc): 16 hex digits."""
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE):
        stat = f.stat()
        digest.update(str(f.relative_to(path)).encode() + b"\0")
        if stat.st_size <= SMALL_FILE:
            digest.update(f.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def run_identity(cfg: RunConfig, config_file: str | None) -> dict[str, Any]:
    """The keys that make two runs the same: result-changing config keys (flattened, JSON values) and one
    digest per model folder (its path when it is not a local folder)."""
    identity = {k: v for k, v in flatten(json.loads(json.dumps(to_dict(cfg)))).items() if _is_result_key(k)}
    identity.update(model_identities(cfg, config_file))
    identity["record_format"] = RECORD_FORMAT
    return identity


def model_identities(cfg: RunConfig, config_file: str | None, prefix: str = "") -> dict[str, str]:
    """{"models.<role>": "digest <hex>"} for each model folder ("path <raw>" when it is not a local folder)."""
    identity = {}
    for role in ROLES:
        raw = getattr(cfg.models, role).path
        path = resolve_path(raw, config_file) if raw else None
        identity[f"{prefix}models.{role}"] = f"digest {model_digest(path)}" if path and path.is_dir() else f"path {raw}"
    return identity


def differences(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'key: X there, Y now' for every key whose value differs."""
    was = {**{k: v for k, v in ADDED_KEYS.items() if k in now}, **was}
    return [f"{k}: {was.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(was) | set(now))
            if was.get(k) != now.get(k)]


def read_identity(folder: Path) -> dict[str, Any] | None:
    path = folder / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); move {folder} away or pass --new-run") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a run record; move {folder} away or pass --new-run")
    return data


def holds_results(folder: Path) -> bool:
    return folder.is_dir() and any(f.stat().st_size for f in folder.glob("*.jsonl"))


def fresh_sibling(folder: Path) -> Path:
    """DIR-2, DIR-3, ...: the first that does not exist or is empty."""
    for n in range(2, 10_000):
        candidate = folder.with_name(f"{folder.name}-{n}")
        if not candidate.exists() or (candidate.is_dir() and not any(candidate.iterdir())):
            return candidate
    raise ConfigError(f"no free folder beside {folder} for --new-run")


def claim_run_dir(folder: Path, identity: dict[str, Any], new_run: bool = False, flag: str = "--out",
                  holds: Callable[[Path], bool] = holds_results) -> Path:
    """The folder this run writes into, with its run.json: `folder` when it holds no records or the same run's
    (a resume); a fresh sibling with new_run when it holds records; ConfigError naming the differing keys when
    it holds another run's records. Prints where a new run goes. `holds`: does a folder hold results (default:
    a non-empty record log)."""
    was, has_records = read_identity(folder), holds(folder)
    if new_run and has_records:
        folder = fresh_sibling(folder)
        print(f"--new-run: writing into {folder}", flush=True)
        was = None
    elif has_records and was is None:
        raise ConfigError(f"{flag} {folder} holds records but no {RUN_FILE}, so what run wrote them is unknown; "
                          f"pass --new-run to write into a fresh folder beside it, or move it away")
    elif has_records and differences(was, identity):
        diffs = differences(was, identity)
        shown = "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")
        raise ConfigError(f"{flag} {folder} holds another run ({shown}); resuming it would mix results: pass "
                          f"--new-run to write into a fresh folder beside it, or choose another {flag}")
    folder.mkdir(parents=True, exist_ok=True)
    if was != identity:  # a new run, or a folder whose earlier run wrote no record
        write_text_atomic(folder / RUN_FILE, json.dumps(identity, indent=2) + "\n")
    return folder


def check_records_match(records: Sequence[dict], items: Sequence, path: Path) -> None:
    """Each record of a problem still in the run was made from the same problem (prompt and reference answer):
    a changed dataset or prompt list under the same uids is refused (InputError naming the uid)."""
    by_uid = {i.uid: i for i in items}
    for r in records:
        item = by_uid.get(r["uid"])
        if item is None:
            continue
        if r.get("prompt") != item.prompt or r.get("answer") != item.answer:
            field = "prompt" if r.get("prompt") != item.prompt else "reference answer"
            raise InputError(f"{path} holds {r['uid']} with another {field} than this run's problem; the problems "
                             f"changed under the same ids: pass --new-run to write into a fresh folder")
