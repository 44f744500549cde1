"""The theory command: the analytic experiment writes its summary, plot and report, and the threshold wins."""

import json

from rsd_jax.theory.__main__ import main


def test_analytic_experiment(tmp_path):
    assert main(["--out", str(tmp_path), "experiment=analytic", "beta=[[2, 5], [0.5, 0.5]]", "mu_target=[0.7]"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["max_excess_over_threshold"] <= 1e-9
    assert summary["min_slack_bound_margin"] >= -1e-12
    assert (tmp_path / "frontiers.png").stat().st_size > 10_000 and "threshold" in (tmp_path / "report.md").read_text()


def test_empirical_experiment_refuses_greedy_decoding_before_loading_models(tmp_path, capsys):
    assert main(["--config", "configs/theory_empirical.yaml", "--out", str(tmp_path), "run.decoding.temperature=0",
                 "run.models.draft.path=does/not/exist"]) == 2
    assert "temperature > 0" in capsys.readouterr().err
