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
