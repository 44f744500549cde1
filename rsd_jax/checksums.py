"""Check or write a model folder's checksums: `python -m rsd_jax.checksums [--write] DIR ...`.

The loaders check every file listed in `DIR/checksums.sha256` before reading a weight (rsd_jax.weights.integrity);
save_model, convert, merge and train write that file. This command checks a folder by hand (as
`sha256sum -c checksums.sha256` would), or writes the file for a checkpoint saved before rsd_jax wrote one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rsd_jax import exits
from rsd_jax.errors import CheckpointError
from rsd_jax.weights.integrity import CHECKSUM_FILE, listed_checksums, verify_files, write_checksums


def main(argv: list[str] | None = None) -> int:
    """Checks each folder against its checksums.sha256, hashing every file (one line per folder), or with --write
    writes one over every file it holds (for a checkpoint saved before rsd_jax wrote them: a copy you trust)."""
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.checksums", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--write", action="store_true", help="write DIR/checksums.sha256 over every file of DIR")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        return exits.error(f"not a folder: {', '.join(missing)}")
    try:
        for folder in args.folders:
            if args.write:
                print(f"{write_checksums(folder)}: {len(listed_checksums(folder))} files")
            elif not (folder / CHECKSUM_FILE).is_file():
                return exits.error(f"{folder} has no {CHECKSUM_FILE}: write one with --write (for a copy you trust)")
            else:
                print(f"{folder}: {verify_files(folder, use_memo=False)} files match {CHECKSUM_FILE}")
    except CheckpointError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
