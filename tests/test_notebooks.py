"""The Colab notebooks execute headless on CPU with small parameters (notebook 3 in its offline switch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))


def test_three_notebooks_without_stale_outputs():
    assert [n.name for n in NOTEBOOKS] == ["01_quickstart.ipynb", "02_optimal_threshold.ipynb",
                                           "03_paper_setting.ipynb"]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("RSD_NB_SMALL", "1")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device, as on a laptop
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if path.stem == "01_quickstart":
        assert any("image/png" in o.get("data", {}) for o in outputs)  # the accuracy / FLOPs plot
    os.environ.pop("RSD_NB_SMALL", None)
