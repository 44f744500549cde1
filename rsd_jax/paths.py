"""Paths as configs write them: absolute, or relative to the repository, the config's folder or the current one.

Below every layer that reads a path from a config (the data sets, the model references, the commands), so that none
of them needs the config schema to resolve one.
"""

from __future__ import annotations

from pathlib import Path


def resolve_path(raw: str, config_file: str | Path | None) -> Path:
    """A path from a config: absolute, or relative to the repository root (the config's parent's parent),
    the config's folder, or the current directory — the first that exists."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    candidates = []
    if config_file is not None:
        here = Path(config_file).resolve().parent
        candidates += [here.parent / path, here / path]
    candidates.append(Path.cwd() / path)
    return next((c for c in candidates if c.exists()), candidates[0])
