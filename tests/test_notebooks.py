"""The Colab notebooks: one set-up cell (colab/setup_cell.py, the one place the repository's address is set), only
the public entry points, the paper notebook's choice of config for the devices found, and each notebook executed
headless on CPU with small parameters (notebook 3 in its offline mode).

With RSD_NB_KERNEL naming a Jupyter kernel of a fresh virtual environment (.ci/run makes one: only ipykernel in
it), each notebook runs there from a scratch folder, as on Colab: its own set-up cell installs rsd_jax from this
clone (RSD_NB_CLONE) with a plain `pip install`, no test extras. Without it, they run on this environment's kernel."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import rsd_jax
from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.errors import InputError
from rsd_jax.runtime import BF16_CONFIG, GIB, SINGLE_CHIP_CONFIG, Devices, choose

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
SETUP = ROOT / "colab" / "setup_cell.py"
FRESH_KERNEL = os.environ.get("RSD_NB_KERNEL")


def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_three_notebooks_without_stale_outputs():
    assert [n.name for n in NOTEBOOKS] == ["01_quickstart.ipynb", "02_optimal_threshold.ipynb",
                                           "03_paper_setting.ipynb"]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), path.name


def test_every_notebook_starts_with_the_one_setup_cell():
    """The address is set in setup_cell.py alone; `python colab/set_repo.py` copies the cell into the notebooks."""
    for path in NOTEBOOKS:
        assert code_cells(path)[0] == SETUP.read_text().rstrip("\n"), f"{path.name}: run python colab/set_repo.py"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    tracked = [ROOT / f for f in files if Path(f).suffix in (".py", ".md", ".ipynb", ".yaml", ".toml")
               and Path(f).parent != Path("colab")]
    setting, invented = "REPO_URL" + ' = "', "rsd-jax/" + "rsd_jax"  # (not spelled out: this file is tracked)
    assert not [p for p in tracked if setting in p.read_text(errors="ignore")]
    assert not [p for p in tracked if invented in p.read_text(errors="ignore")]  # the address once invented


def test_the_placeholder_address_is_a_clear_error_not_a_failed_clone(tmp_path, monkeypatch):
    """The set-up cell's own functions, run with its placeholder address in an empty folder (as on Colab)."""
    tree = ast.parse(SETUP.read_text())
    namespace: dict = {}
    kept = [n for n in tree.body if isinstance(n, (ast.Import, ast.FunctionDef))
            or (isinstance(n, ast.Assign) and n.targets[0].id == "REPO_URL")]
    exec(compile(ast.Module(kept, []), str(SETUP), "exec"), namespace)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RSD_NB_CLONE", raising=False)
    with pytest.raises(RuntimeError, match="REPO_URL is a placeholder: set it to the address of your clone or fork"):
        namespace["clone_folder"]()
    assert not (tmp_path / "rsd_jax").exists()  # nothing cloned
    assert namespace["jax_platform"]() == "cpu"  # asked of JAX in a subprocess (the tests' JAX_PLATFORMS=cpu)


def rsd_jax_names_used(source: str) -> tuple[set[str], list[str]]:
    """(the attributes of rsd_jax a cell uses, its imports of rsd_jax's submodules)."""
    tree = ast.parse(source)
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
             and isinstance(n.value, ast.Name) and n.value.id == "rsd_jax"}
    imports = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               and any(name.startswith("rsd_jax.") for name in
                       ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]))]
    return names, imports


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_only_the_public_entry_points(path):
    names, imports = set(), []
    for source in code_cells(path):
        cell_names, cell_imports = rsd_jax_names_used(source)
        names |= cell_names
        imports += cell_imports
    assert not imports, f"{path.name} imports rsd_jax's internals: {imports}"
    assert names - {"__file__"} <= set(rsd_jax.__all__), f"{path.name}: {names - set(rsd_jax.__all__)}"


@pytest.mark.parametrize("devices, setting, config, overrides", [
    (Devices("cpu", "cpu", 1), "offline", BF16_CONFIG, ("mesh.model=1",)),
    (Devices("tpu", "TPU v5 lite", 1, int(15.75 * GIB)), "single_chip", SINGLE_CHIP_CONFIG, ()),  # Colab
    (Devices("gpu", "Tesla T4", 2, int(14.7 * GIB)), "single_chip", SINGLE_CHIP_CONFIG, ()),  # Kaggle's 2 x T4
    (Devices("gpu", "NVIDIA L4", 1, int(22 * GIB)), "single_chip", SINGLE_CHIP_CONFIG, ()),
    (Devices("tpu", "TPU v5 lite", 8, int(15.75 * GIB)), "sharded", BF16_CONFIG, ("mesh.model=4",)),  # Kaggle v5e-8
    (Devices("tpu", "TPU v6 lite", 4, int(31.25 * GIB)), "sharded", BF16_CONFIG, ("mesh.model=4",)),
    (Devices("gpu", "NVIDIA H100 80GB HBM3", 1, int(79 * GIB)), "one_device", BF16_CONFIG, ("mesh.model=1",)),
    (Devices("tpu", "TPU v5 lite", 1, None), "single_chip", SINGLE_CHIP_CONFIG, ()),  # memory unknown: the small one
])
def test_the_paper_notebook_picks_the_config_that_fits(devices, setting, config, overrides):
    plan = choose(devices)
    assert (plan.setting, plan.config, plan.overrides) == (setting, config, overrides)
    assert plan.description.startswith(f"found {devices}: will run")
    assert SINGLE_CHIP_CONFIG == "configs/paper/qwen25_math_1.5b_7b_skywork1.5b_v5e1.yaml"
    if (ROOT / plan.config).is_file():  # the single-chip config ships with the quantization work: checked once there
        cfg = load_config(RunConfig, ROOT / plan.config, plan.overrides)
        pinned = dict(o.split("=") for o in overrides).get("mesh.model")
        if pinned:
            assert cfg.mesh.model == int(pinned)
        else:  # the one-chip config: every model whole on each device (mesh.model auto up to 1)
            assert (cfg.mesh.model, cfg.mesh.model_max) == ("auto", 1)


def test_the_paper_notebook_refuses_real_models_on_a_cpu():
    with pytest.raises(InputError, match="no accelerator: .* offline mode"):
        choose(Devices("cpu", "cpu", 1), offline=False)
    assert choose(Devices("tpu", "TPU v5 lite", 1, 16 * GIB), offline=True).setting == "offline"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("RSD_NB_SMALL", "1")
    monkeypatch.setenv("RSD_NB_OFFLINE", "1")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device, as on a laptop
    folder = ROOT
    if FRESH_KERNEL:  # as on Colab: a scratch folder, and the set-up cell installs this clone
        monkeypatch.setenv("RSD_NB_CLONE", str(ROOT))
        monkeypatch.delenv("PYTHONPATH", raising=False)
        folder = tmp_path
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name=FRESH_KERNEL or "python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in nb.cells[1].get("outputs", []))
    assert f"from {ROOT}; jax " in text  # the set-up cell reports the clone it runs and what JAX finds
    if FRESH_KERNEL:
        assert f"installing rsd_jax from {ROOT}" in text  # through its own set-up cell, with a plain install
    if path.stem == "01_quickstart":
        assert any("image/png" in o.get("data", {}) for o in outputs)  # the accuracy / FLOPs plot
    if path.stem == "03_paper_setting":
        assert "will run the offline mode" in "".join(o.get("text", "") for o in outputs)
