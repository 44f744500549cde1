"""Writes the notebooks' set-up cell (colab/setup_cell.py) into every notebook, as their first code cell.

    python colab/set_repo.py                                  # after editing setup_cell.py
    python colab/set_repo.py https://github.com/USER/rsd_jax  # a fork: its address, in setup_cell.py and notebooks

The repository's address is set in one place, setup_cell.py's REPO_URL line; tests/test_notebooks.py checks that
every notebook's set-up cell is that file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

COLAB = Path(__file__).resolve().parent
SETUP = COLAB / "setup_cell.py"
URL_LINE = re.compile(r'^REPO_URL = ".*"$', re.MULTILINE)


def set_url(url: str) -> None:
    """Puts `url` on setup_cell.py's REPO_URL line."""
    if not re.fullmatch(r"(https://|git@)\S+", url):
        raise SystemExit(f"set_repo: {url!r} is not a repository address (https://github.com/USER/rsd_jax)")
    SETUP.write_text(URL_LINE.sub(f'REPO_URL = "{url}"', SETUP.read_text(), count=1))


def write_notebooks() -> list[Path]:
    """Replaces the first code cell of every colab/*.ipynb with setup_cell.py; returns the notebooks changed."""
    source = SETUP.read_text().rstrip("\n")
    changed = []
    for path in sorted(COLAB.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        lines = source.splitlines(keepends=True)
        if cell["source"] != lines:
            cell["source"] = lines
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) > 2:
        raise SystemExit("usage: python colab/set_repo.py [REPO_URL]")
    if len(sys.argv) == 2:
        set_url(sys.argv[1])
    for path in write_notebooks():
        print(f"wrote the set-up cell into {path.name}")
