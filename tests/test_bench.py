"""The bench names what it measured: the commit (and whether the tree had uncommitted changes) and the date, printed
before the table and written into its json."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from rsd_jax import bench

ROOT = Path(__file__).resolve().parent.parent


def test_measured_at_names_the_checkout_commit_and_unknown_outside_git(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    got = bench.measured_at(ROOT)
    if head:
        assert got["commit"] in (head, head + "+dirty")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", got["date"])
    assert bench.measured_at(tmp_path)["commit"] == "unknown"


def test_the_commit_and_date_are_printed_and_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "bench_decode", lambda quick: {"batch_1": {"ratio_vs_hf": 1.0}})
    monkeypatch.setattr(bench, "measured_at", lambda root: {"commit": "abc1234", "date": "2026-12-07 23:00 UTC"})
    assert bench.main(["--out", str(tmp_path / "b.json"), "--only", "decode"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "measured at commit abc1234, 2026-12-07 23:00 UTC"
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["measured"] == {"commit": "abc1234", "date": "2026-12-07 23:00 UTC"}
    assert written["decode"] == {"batch_1": {"ratio_vs_hf": 1.0}}


def test_weight_stream_streams_every_weight_of_the_model_once_a_step():
    """The bench's matvec ceiling (`weight_stream`): every layer kernel, then the tied embedding, one after the other
    per step, as a NumPy chain computes it; a kernel changed changes the result (each is read)."""
    import dataclasses

    import jax
    import numpy as np

    from engine_world import config, random_model

    model = random_model(config(layers=2, hidden=16), seed=0).with_layer_copies()
    names = [("self_attn", p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + [
        ("mlp", p) for p in ("gate_proj", "up_proj", "down_proj")]
    kernels = [np.asarray(layer[a][b]["kernel"][...]) for layer in model.layer_copies for a, b in names]
    table = np.asarray(model.params["embed_tokens"]["embedding"][...])

    def fit(y, n):
        return y[:, :n] if y.shape[1] >= n else np.tile(y, (1, -(-n // y.shape[1])))[:, :n]

    x = np.full((2, 16), 0.01, np.float32)
    for _ in range(3):
        y = x
        for w in kernels:
            y = np.tanh(fit(y, w.shape[0]) @ w)
        x = x + 1e-3 * fit((table @ fit(y, table.shape[1]).T).T, 16)
    got = bench.weight_stream(model, 2, 3)
    np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-6)
    doubled = jax.tree.map(lambda a: a * 2, model.layer_copies[-1])  # the last layer's weights, twice as large
    other = dataclasses.replace(model, layer_copies=model.layer_copies[:-1] + (doubled,))
    assert not np.allclose(bench.weight_stream(other, 2, 3), got)
