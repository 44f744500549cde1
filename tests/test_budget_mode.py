"""The budget mode end to end: the calibration split is never the evaluated one, the loop's calibrated rule is the
binary rule where no reward sits on δ, and on the embedded benchmark the realised target share is the budget within
sampling error; the budget experiment's arithmetic (rsd_jax.theory.budget_mode)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rsd_jax.config import RunConfig, calibration_data
from rsd_jax.configlib import load_config
from rsd_jax.errors import ConfigError
from rsd_jax.methods import RSD
from rsd_jax.theory import budget_mode

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ["models.draft.path=checkpoints/arith_draft", "models.target.path=checkpoints/arith_target",
            "models.prm.path=checkpoints/arith_prm", "decoding.max_new_tokens=112", "decoding.max_steps=12",
            "decoding.max_step_tokens=24", "decoding.chunk=32"]


def test_the_calibration_split_is_never_the_evaluated_one():
    cfg = load_config(RunConfig, None, ["rsd.budget=0.2", "rsd.calibration=dev", "rsd.calibration_n=8"])
    data = calibration_data(cfg.rsd, cfg.data)
    assert (data.source, data.seed, data.n) == ("arith", 777, 8) and cfg.data.seed == 12345
    with pytest.raises(ConfigError, match="rsd.calibration='dev' is the evaluated split itself"):
        load_config(RunConfig, None, ["rsd.budget=0.2", "rsd.calibration=dev", "data.seed=777"])
    with pytest.raises(ConfigError, match="rsd.calibration='gsm8k' is an evaluated dataset"):
        load_config(RunConfig, None, ["rsd.calibration=gsm8k", "data.source=gsm8k"])
    with pytest.raises(ConfigError, match="embedded task's development split"):
        load_config(RunConfig, None, ["rsd.calibration=dev", "data.source=gsm8k"])
    with pytest.raises(ConfigError, match="rsd.calibration must be 'dev' or a dataset name"):
        load_config(RunConfig, None, ["rsd.calibration=train"])
    assert calibration_data(load_config(RunConfig, None, []).rsd, cfg.data) is None


def test_a_budget_needs_a_calibration_split_and_the_binary_rule():
    from rsd_jax.calibration import calibrate_budget

    with pytest.raises(ConfigError, match="rsd.budget needs rsd.calibration"):
        calibrate_budget(None, load_config(RunConfig, None, ["rsd.budget=0.2"]))
    with pytest.raises(ConfigError, match="rsd.weighting must be binary"):
        RSD(budget=0.2, weighting="logistic")
    assert RSD(budget=0.2).spec(_spec()).budget_mode == "calibrated"
    assert RSD(budget=0.2, online_budget=True).spec(_spec()).budget_mode == "online"
    assert RSD().spec(_spec()).budget_mode == "none"


def _spec():
    from rsd_jax.decoding.spec import DecodeSpec

    return DecodeSpec()


def _point(delta, share, accuracy):
    return budget_mode.RunPoint(label=f"{delta}", delta=delta, q=1.0, target_share=share, accuracy=accuracy,
                                steps=1000, problems=200)


def test_budget_experiment_reads_the_sweep_at_the_same_share():
    sweep = [_point(0.5, 0.10, 0.90), _point(0.9, 0.20, 0.96), _point(0.98, 0.30, 0.99)]
    assert budget_mode.interpolated_accuracy(sweep, 0.15) == pytest.approx(0.93)
    assert budget_mode.interpolated_accuracy(sweep, 0.30) == pytest.approx(0.99)
    assert math.isnan(budget_mode.interpolated_accuracy(sweep, 0.05))
    assert budget_mode.best_fixed_at_most(sweep, 0.25).delta == 0.9
    assert budget_mode.best_fixed_at_most(sweep, 0.05) is None
    records = [{"steps": [{"source": "draft"}, {"source": "target"}], "correct": True},
               {"steps": [{"source": "draft"}, {"source": "draft"}], "correct": False}]
    point = budget_mode.run_point("b", 0.7, 0.5, records)
    assert (point.target_share, point.accuracy, point.steps, point.problems) == (0.25, 0.5, 4, 2)
    row = budget_mode.compare([(0.2, _point(0.9, 0.21, 0.97))], sweep)[0]
    assert row["within_2_points"] and row["fixed_delta_accuracy_at_share"] == pytest.approx(0.963)
    assert not budget_mode.compare([(0.2, _point(0.9, 0.23, 0.97))], sweep)[0]["within_2_points"]
    text = budget_mode.report([row], sweep, mu_target=0.88, calibration="dev", calibration_problems=64,
                              evaluated="held-out")
    assert "| 0.2 | 0.9 |" in text and "μ_M = 0.8800" in text


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    from rsd_jax.loading import load_engine

    cfg = load_config(RunConfig, None, EMBEDDED + ["decoding.batch_size=64", "data.n=64", "rsd.budget=0.2",
                                                    "rsd.calibration=dev", "rsd.calibration_n=64",
                                                    "rsd.calibration_target=false", "rsd.calibration_rounds=1"])
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        engine = load_engine(cfg, None)
    finally:
        os.chdir(cwd)
    return cfg, engine


def test_realised_target_share_is_the_budget_on_the_embedded_benchmark(embedded):
    """Calibrated on 64 problems of the dev split, evaluated on 64 held-out problems: the target's share of the
    steps equals the budget within 3 binomial sd of the two samples (the calibration's steps and the evaluation's);
    on the calibration split itself, after the fixed-point round, within 3 sd of its steps alone."""
    from rsd_jax.calibration import calibrate_budget, decode_steps
    from rsd_jax.data.problems import load_items
    from rsd_jax.runner import run_method

    cfg, engine = embedded
    calibration = calibrate_budget(engine, cfg)
    budget = cfg.rsd.budget
    assert calibration.mu_target is None and len(calibration.shares) == 1
    n_cal = calibration.rewards.size
    split = load_items(calibration_data(cfg.rsd, cfg.data))
    again = decode_steps(engine, split, cfg, calibration.method(RSD(budget=budget)))
    share_cal = np.mean([s["source"] == "target" for s in again])
    assert abs(share_cal - budget) <= 3 * math.sqrt(budget * (1 - budget) / len(again)), share_cal

    items = load_items(cfg.data)
    records = [r for chunk in run_method(engine, items, "rsd", cfg, calibration=calibration) for r in chunk]
    assert {r["delta"] for r in records} == {calibration.delta} and {r["q"] for r in records} == {calibration.q}
    sources = [s["source"] for r in records for s in r["steps"]]
    share = np.mean([s == "target" for s in sources])
    sd = math.sqrt(budget * (1 - budget) * (1 / n_cal + 1 / len(sources)))
    assert abs(share - budget) <= 3 * sd, (share, sd)
