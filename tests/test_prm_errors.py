"""The PRM's rewards of the draft's own steps, grouped by what the exact checker finds wrong, and its command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rsd_jax.data import arith
from rsd_jax.theory.__main__ import main
from rsd_jax.theory.checker import draft_step_rewards

ROOT = Path(__file__).resolve().parent.parent


def _record(steps, rewards):
    return {"steps": [{"text": s + arith.DELIMITER, "reward": r, "source": "draft"} for s, r in zip(steps, rewards)]}


def test_steps_are_grouped_by_kind_and_error_up_to_the_first_wrong_one():
    p = arith.generate_problems(1, seed=0)[0]
    right = list(p.steps)
    _, wrong = arith.corrupt_step(p, 1, np.random.default_rng(0))
    slipped = right[:1] + [wrong] + right[2:]
    rows = draft_step_rewards([p, p], [_record(right, [0.9] * len(right)), _record(slipped, [0.8, 0.3, 0.7, 0.6])])
    assert rows[:len(right)] == [("multiply", "correct", 0.9)] + [("add/sub", "correct", 0.9)] * (p.level - 1) + \
        [("answer", "correct", 0.9)]
    tail = rows[len(right):]
    assert len(tail) == 2 and tail[0] == ("multiply", "correct", 0.8)  # nothing after the first wrong step
    assert tail[1][0] == "add/sub" and tail[1][1] == "+".join(arith.step_errors(p, slipped, 1)) and tail[1][2] == 0.3


def test_the_command_tables_what_each_delta_keeps(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "errors"
    assert main(["--config", "configs/theory_prm_errors.yaml", "--out", str(out), "run.data.n=30",
                 "deltas=[0.0, 0.9, 1.01]"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    groups = summary["by_error"]
    assert sum(g["n"] for g in groups) == summary["n_steps"] and {g["step"] for g in groups} >= {"multiply"}
    correct = sum(g["n"] for g in groups if g["error"] == "correct")
    assert summary["correct_rejected"]["0"] == 0.0 and summary["correct_rejected"]["1.01"] == 1.0
    assert summary["wrong_kept"]["0"] == summary["n_steps"] - correct and summary["wrong_kept"]["1.01"] == 0
    assert all(g["kept"]["0"] == 1.0 and g["kept"]["1.01"] == 0.0 for g in groups)
    assert 0.5 < summary["auroc"] <= 1.0 and "| multiply | correct |" in (out / "report.md").read_text()


def test_the_command_needs_the_embedded_task(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["--config", "configs/theory_prm_errors.yaml", "--out", str(tmp_path), "run.data.source=prompts",
                 "run.data.prompts=[1+1]"]) == 2
    assert "prm_errors needs the embedded task" in capsys.readouterr().err
