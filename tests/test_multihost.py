"""Multi-host decoding: two processes on this machine (jax.distributed over localhost, 4 CPU devices each, one
8-device mesh) decode exactly what one process with 8 devices decodes. The single process runs first and alone, so
that the two hosts do not compete with it for this machine's cores."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import PATIENT_COLLECTIVES

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--config", "configs/arith_tiny.yaml", "data.n=16", "decoding.batch_size=16", "mesh.model=2", "--quiet"]


def _env(devices: int) -> dict:
    flags = f"--xla_force_host_platform_device_count={devices} {PATIENT_COLLECTIVES}"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_two_processes_decode_what_one_process_decodes(tmp_path):
    decode = [sys.executable, "-m", "rsd_jax.decode", *ARGS]
    single = subprocess.run(decode + ["--out", str(tmp_path / "one")], cwd=ROOT, env=_env(8), capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    port = _free_port()
    hosts = [subprocess.Popen(decode + ["mesh.distributed=true", f"mesh.coordinator_address=localhost:{port}",
                                        "mesh.num_processes=2", f"mesh.process_id={i}", "--out", str(tmp_path / "two")],
                              cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = [h.communicate(timeout=600)[0] for h in hosts]
    assert [h.returncode for h in hosts] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "n_problems 16" in logs[0] and "n_problems" not in logs[1]  # the first process reports
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert len(one) == len(two) == 16
    assert any(s["source"] == "target" for r in one for s in r["steps"])  # both models wrote steps
    for a, b in zip(one, two):
        assert a["token_ids"] == b["token_ids"] and a["uid"] == b["uid"]
        assert [(s["source"], s["reward"]) for s in a["steps"]] == [(s["source"], s["reward"]) for s in b["steps"]]
