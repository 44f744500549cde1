"""mesh.model: auto adapts the tensor-parallel width to the devices found and the models' KV heads, up to
mesh.model_max; a pinned width the devices cannot take is one line naming the setting and the value that works.
The paper's mesh on 1 and 6 fake CPU devices (fresh processes) with hub-layout folders for its models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsd_jax.errors import ConfigError
from rsd_jax.hub_layout import Layout, write_snapshot
from rsd_jax.mesh_axes import auto_width, kv_compatible, tensor_width

ROOT = Path(__file__).resolve().parents[1]
PAPER_MESH = ("mesh.model=auto", "mesh.model_max=4")  # the mesh of the paper's 1.5B/7B/1.5B config
PAPER_KV = (2, 4, 2)  # Qwen2.5-Math-1.5B, -7B, Skywork 1.5B PRM


@pytest.mark.parametrize("devices, cap, kv, width", [
    (1, 4, PAPER_KV, 1), (2, 4, PAPER_KV, 2), (4, 4, PAPER_KV, 4), (8, 4, PAPER_KV, 4), (16, 4, PAPER_KV, 4),
    (6, 4, PAPER_KV, 2),  # 3 divides 6 but splits no model's 2 or 4 KV heads
    (8, None, PAPER_KV, 8), (8, 8, (4, 8, 4), 8), (3, 4, PAPER_KV, 1), (12, 8, (4, 8, 4), 4)])
def test_auto_takes_the_widest_width_the_devices_and_kv_heads_allow(devices, cap, kv, width):
    assert tensor_width("auto", devices, kv, cap=cap) == width
    assert devices % width == 0 and kv_compatible(width, kv) and width <= (cap or devices)


def test_auto_leaves_a_pinned_data_axis_its_devices():
    assert auto_width(8, PAPER_KV, 4, data=4) == 2
    assert tensor_width("auto", 8, PAPER_KV, cap=4, data=2) == 4
    with pytest.raises(ConfigError, match=r"mesh.data=3 leaves no tensor-parallel width for 8 devices: set "
                                          r"mesh.data=-1"):
        tensor_width("auto", 8, PAPER_KV, cap=4, data=3)


def test_a_pinned_width_is_kept_or_refused_with_the_fix():
    assert tensor_width(4, 8, PAPER_KV) == 4
    assert tensor_width(3, 6, PAPER_KV) == 3  # pinned: the user's choice, even where auto would not take it
    with pytest.raises(ConfigError, match=r"^mesh.model=4 does not divide the 1 devices JAX sees: set mesh.model=1 "
                                          r".*or mesh.model=auto"):
        tensor_width(4, 1, PAPER_KV)
    with pytest.raises(ConfigError, match=r"mesh.model=4 does not divide the 6 devices JAX sees: set mesh.model=2"):
        tensor_width(4, 6, PAPER_KV)
    with pytest.raises(ConfigError, match=r"mesh.data=4 x mesh.model=4 != 8 devices: set mesh.data=-1 .* or "
                                          r"mesh.data=2"):
        tensor_width(4, 8, PAPER_KV, data=4)


@pytest.fixture(scope="module")
def paper_folders(tmp_path_factory):
    """Config-only hub-layout folders (no weights are read here) with the paper models' KV heads."""
    root = tmp_path_factory.mktemp("mesh")
    tiny = (("hidden_size", 32), ("intermediate_size", 64), ("num_hidden_layers", 1), ("vocab_size", 151936))
    layouts = {"draft": ("Qwen2.5-Math-1.5B-Instruct", 2), "target": ("Qwen2.5-Math-7B-Instruct", 4),
               "prm": ("Skywork-o1-Open-PRM-Qwen-2.5-1.5B", 2)}
    folders = {}
    for role, (name, kv) in layouts.items():
        layout = Layout(name, tiny + (("num_attention_heads", 4), ("num_key_value_heads", kv)))
        folders[role] = write_snapshot(layout, root / role)
    return folders


SCRIPT = """
import json, sys
from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.errors import RSDError
from rsd_jax.loading import kv_heads_of, start_devices
cfg = load_config(RunConfig, None, sys.argv[1:])
try:
    mesh = start_devices(cfg.mesh, kv_heads_of(cfg, None))
except RSDError as e:
    print(json.dumps({"error": str(e)}))
else:
    print(json.dumps(None if mesh is None else dict(mesh.shape)))
"""


def start_on(devices: int, folders: dict, *overrides: str):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT)}
    paths = [f"models.{role}.path={folder}" for role, folder in folders.items()]
    done = subprocess.run([sys.executable, "-c", SCRIPT, *paths, *PAPER_MESH, *overrides], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_paper_config_starts_on_the_devices_it_finds(paper_folders):
    assert start_on(1, paper_folders) is None  # one device: no mesh, as the embedded default
    assert start_on(6, paper_folders) == {"data": 3, "model": 2, "tensor": 1}
    assert start_on(1, paper_folders, "mesh.model=4") == {
        "error": "mesh.model=4 does not divide the 1 devices JAX sees: set mesh.model=1 (the widest these devices "
                 "and the models' KV heads (2, 4, 2) allow), or mesh.model=auto to adapt to the devices found"}


def test_the_shipped_paper_configs_adapt_their_model_axis():
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import load_config

    paper = sorted(ROOT.glob("configs/paper/*.yaml"))
    assert paper
    for path in paper:
        mesh = load_config(RunConfig, path).mesh
        assert (mesh.model, mesh.data) == ("auto", -1) and mesh.model_max in (1, 2, 4, 8), path
