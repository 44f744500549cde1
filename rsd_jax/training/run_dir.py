"""A training run's identity and its work folder: the resumable checkpoints in a work folder are resumed only by
the run that wrote them.

A run is its settings (the config as a plain dict, less what may change between an interruption and its resume),
the training data's version and a digest of every checkpoint it reads, so that a retrained draft makes a different
PRM run. The work folder records the identity in run.json beside the checkpoints (one numbered folder per step).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rsd_jax.data import arith
from rsd_jax.errors import ConfigError
from rsd_jax.outputs import write_text_atomic

RUN_FILE = "run.json"  # in the work folder: what run its checkpoints belong to
CHECKSUM_FILE = "checksums.sha256"  # rsd_jax.weights.integrity's: not part of a source's identity (see runs.model_digest)


def folder_digest(path: Path) -> str | None:
    """SHA-256 over the relative names and bytes of every file under `path` (None: no files, or not a folder)."""
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.name != CHECKSUM_FILE) if path.is_dir() else []
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest() if files else None


def run_identity(settings: dict, sources: dict[str, Path]) -> dict:
    """The identity of a run with `settings` that reads the checkpoints `sources` (as named in the settings ->
    their folder): the settings, the data version and each source's folder digest."""
    return {**settings, "data_version": arith.DATA_VERSION,
            "sources": {name: folder_digest(path) for name, path in sources.items()}}


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}.{key}" if prefix else key).items()}


def checkpoint_steps(work: Path) -> list[int]:
    """The steps of the checkpoints in the work folder, ascending."""
    return sorted(int(p.name) for p in work.iterdir() if p.name.isdigit()) if work.is_dir() else []


def claim_work_dir(work: Path, identity: dict) -> None:
    """Records the run in the work folder, or checks that the checkpoints already there are this run's; a different
    run's checkpoints would otherwise be resumed silently (ConfigError naming the keys that differ)."""
    record = work / RUN_FILE
    if checkpoint_steps(work):
        if not record.is_file():
            raise ConfigError(f"work_dir {work} holds training checkpoints but no {RUN_FILE}, so it cannot tell "
                              f"whose run they are; delete it or pass another work_dir=... to start afresh")
        try:
            old = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{record} is unreadable ({e}); delete {work} to start afresh") from e
        was, now = _flat(old), _flat(json.loads(json.dumps(identity)))
        diffs = [f"{k}: {was.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(was) | set(now))
                 if was.get(k) != now.get(k)]
        if diffs:
            raise ConfigError(f"work_dir {work} holds the checkpoints of a different run ({'; '.join(diffs[:4])}"
                              f"{'; ...' if len(diffs) > 4 else ''}); resuming it would mix two runs. Delete it or "
                              f"pass another work_dir=... to start afresh")
        return
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps(identity, indent=2) + "\n")  # whole or not at all
