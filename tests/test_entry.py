"""The public entry points: `rsd_jax.run` decodes a config exactly as `python -m rsd_jax.decode` does (one
start-up path), `rsd_jax.load` gives the engine and problems to run again, bad input is one clear error before any
work, and `import rsd_jax` stays cheap (no JAX)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rsd_jax
from rsd_jax import decode
from rsd_jax.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/arith_tiny.yaml")
SMALL = ["data.n=4", "decoding.batch_size=4"]


@pytest.fixture(scope="module")
def loaded():
    return rsd_jax.load(CONFIG, SMALL)


def test_import_loads_no_jax_and_lists_the_entry_points():
    code = ("import sys, rsd_jax; assert 'jax' not in sys.modules, 'jax imported'; "
            "print(' '.join(rsd_jax.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {"run", "load", "experiment", "paper_plan", "devices_found", "generate"} <= set(out)


def test_run_gives_what_decode_writes(loaded, tmp_path, capsys):
    assert decode.main(["--config", CONFIG, *SMALL, "--out", str(tmp_path), "--quiet"]) == 0
    written = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    records, summary = rsd_jax.run(CONFIG, SMALL)
    keys = ("uid", "text", "token_ids", "steps", "correct")
    assert [{k: r[k] for k in keys} for r in records] == [{k: r[k] for k in keys} for r in written]
    assert summary["n_problems"] == 4 and summary["accuracy"] == sum(r["correct"] for r in records) / 4
    assert [r["uid"] for r in loaded.run().records] == [r["uid"] for r in records]  # load(...).run() is run(...)
    assert loaded.mesh is not None and len(loaded.problems) == 4  # the mesh over the test's 8 CPU devices


def test_loaded_runs_again_with_other_rsd_settings(loaded):
    target_only = loaded.run(["rsd.delta=1.01"])  # δ > 1: the target writes every step
    assert {s["source"] for r in target_only.records for s in r["steps"]} == {"target"}
    assert loaded.config.rsd.delta != 1.01  # the loaded config is left as it was


@pytest.mark.parametrize("section", ["data.n=3", "models.target.dtype=bfloat16", "mesh.model=2"])
def test_loaded_refuses_to_change_what_it_loaded(loaded, section):
    with pytest.raises(InputError, match=f"cannot change the {section.split('.')[0]} section"):
        loaded.run([section])


def test_bad_input_is_one_error_before_any_work():
    with pytest.raises(InputError, match="list of 'key.path=value' strings"):
        rsd_jax.run(CONFIG, "data.n=4")
    with pytest.raises(ConfigError, match="config file not found"):
        rsd_jax.load("configs/no_such.yaml")
    with pytest.raises(ConfigError, match="rsd.deltaa"):
        rsd_jax.run(CONFIG, ["rsd.deltaa=0.5"])
