"""What a list of records adds up to (rsd_jax.summary)."""

from __future__ import annotations

import pytest

from rsd_jax.summary import health, health_warning, summarize


def record(sources, accepted, discarded, correct=True, error=None, reward=0.9):
    return {"method": "rsd", "correct": correct, "error": error,
            "steps": [{"source": s, "reward": reward} for s in sources],
            "accounting": {"useful_flops_total": 10.0, "target_only_flops": 40.0, "executed_flops": 20.0,
                           "draft_accepted_tokens": accepted, "draft_discarded_tokens": discarded,
                           "tokens_processed": {"draft": accepted + discarded, "target": 5}}}


def test_acceptance_is_reported_by_steps_and_by_tokens():
    # 3 of 4 steps from the draft, but the rejected draft step was long: by tokens 30 of 70
    out = summarize([record(["draft", "draft", "target"], 20, 40), record(["draft"], 10, 0, correct=False)])
    assert out["draft_acceptance_rate"] == pytest.approx(3 / 4)
    assert out["draft_acceptance_rate_tokens"] == pytest.approx(30 / 70)
    assert out["accuracy"] == 0.5 and out["flops_ratio_vs_target"] == pytest.approx(4.0)
    assert out["tokens_draft"] == 70 and out["tokens_target"] == 10


def test_records_without_draft_tokens_have_no_token_acceptance():
    target_only = {"method": "target", "correct": True, "error": None, "steps": [{"source": "target",
                                                                                 "reward": float("nan")}],
                   "accounting": {"useful_flops_total": 1.0, "target_only_flops": 1.0}}
    assert "draft_acceptance_rate_tokens" not in summarize([target_only])


def test_health_counts_errors_and_non_finite_rewards():
    records = [record(["draft"], 1, 0, error="non-finite values in draft logits"), record(["draft"], 1, 0,
                                                                                         reward=float("nan"))]
    assert health(records) == {"n_errors": 1, "n_nonfinite_rewards": 1}
    warning = health_warning({"n_problems": 2, **health(records)})
    assert "1 of 2 records have an error" in warning and "1 of 2 records have non-finite PRM rewards" in warning


def test_accuracy_has_a_wilson_interval():
    from rsd_jax.summary import wilson_interval

    low, high = wilson_interval(98, 100)
    assert abs(low - 0.9300) < 1e-3 and abs(high - 0.9945) < 1e-3  # the textbook values for 98 of 100
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0 and wilson_interval(50, 50)[0] < 1
    width = [high - low for low, high in (wilson_interval(500, 1000), wilson_interval(5, 10))]
    assert width[0] < width[1]
