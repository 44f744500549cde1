"""The empirical theory experiment's parts: the recorded target step rewards on the embedded models equal the PRM
scoring the step's text in context on the host; the sweep's rows, the figures' data (Fig. 3 histograms, Fig. B.1
accuracy by level) and the per-context oracle, on inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from rsd_jax.theory import empirical as emp
from rsd_jax.theory import oracle
from rsd_jax.theory.oracle import ContextSamples


def run_of(delta, draft, target, kept, correct=None) -> emp.SweepRun:
    kept = [np.array(k, bool) for k in kept]
    return emp.SweepRun(delta=delta, draft_reward=[np.array(r, float) for r in draft],
                        target_reward=[np.array(t, float) for t in target], kept=kept,
                        texts=[["s"] * len(k) for k in kept],
                        correct=np.array(correct if correct is not None else [True] * len(kept)))


def test_reward_histograms_split_kept_rejected_and_the_targets_steps():
    nan = np.nan
    run = run_of(0.5, [[0.9, 0.2, 0.7], [0.1]], [[nan, 0.8, nan], [0.95]], [[1, 0, 1], [0]])
    hist = emp.reward_histograms(run, np.array([0.0, 0.5, 1.0]))
    assert hist["draft_kept"].tolist() == [0, 2]
    assert hist["draft_rejected"].tolist() == [2, 0]
    assert hist["target_at_rejections"].tolist() == [0, 2]


def test_accuracy_by_level_is_each_levels_share_with_an_interval():
    levels = [3, 3, 4, 4, 4, 5]
    correct = np.array([1, 0, 1, 1, 1, 0], bool)
    by_level = emp.accuracy_by_level(levels, correct, resamples=200)
    assert list(by_level) == [3, 4, 5]
    assert [e.value for e in by_level.values()] == [0.5, 1.0, 0.0]
    assert [e.n for e in by_level.values()] == [2, 3, 1]
    assert by_level[3].low == 0.0 and by_level[3].high == 1.0


def test_sweep_rows_measure_and_predict():
    nan = np.nan
    draft_only = run_of(0.0, [[0.9, 0.3], [0.6]], [[nan, nan], [nan]], [[1, 1], [1]], [False, True])
    target_only = run_of(1.01, [[0.9, 0.3], [0.6]], [[0.8, 0.8], [0.5]], [[0, 0], [0]])
    mid = run_of(0.5, [[0.9, 0.3], [0.6]], [[nan, 0.7], [nan]], [[1, 0], [1]])
    mu_hat = {0.5: [np.array([nan, 0.6]), np.array([nan])]}
    rows = {r["delta"]: r for r in emp.sweep_rows([draft_only, mid, target_only], mu_hat, resamples=200)}
    row = rows[0.5]
    assert row["measured_acceptance"]["value"] == pytest.approx(2 / 3)
    assert row["measured_reward"]["value"] == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    assert row["context_predicted_reward"]["value"] == pytest.approx((0.9 + 0.6 + 0.6) / 3)
    assert row["measured_minus_predicted"]["value"] == pytest.approx(0.1 / 3)
    # global: the draft-only rewards {0.9, 0.3, 0.6} against δ = 0.5, and μ_M = mean(0.8, 0.8, 0.5) = 0.7
    assert row["global_predicted_acceptance"]["value"] == pytest.approx(2 / 3)
    assert row["global_predicted_reward"]["value"] == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    assert rows[0.0]["accuracy"]["value"] == 0.5 and "context_predicted_reward" not in rows[0.0]
    assert row["draft_alone"]["value"] == 0.5


def samples(draft_fit, draft_eval, target_fit, target_eval, problem=None, ok_draft=None, ok_target=None):
    arrays = [np.array(a, float) for a in (draft_fit, draft_eval, target_fit, target_eval)]
    c = len(arrays[0])
    ok_draft = np.full(arrays[1].shape, np.nan) if ok_draft is None else np.array(ok_draft, float)
    ok_target = np.full(arrays[3].shape, np.nan) if ok_target is None else np.array(ok_target, float)
    return ContextSamples(np.arange(c) if problem is None else np.array(problem), arrays[0], arrays[1], ok_draft,
                          arrays[2], arrays[3], ok_target)


def test_at_budget_hits_the_budget_exactly_on_atoms():
    # every draft reward is one of two atoms: a rate of 0.3 needs part of an atom
    cs = samples([[0.2, 0.2, 0.9, 0.9]] * 5, [[0.2, 0.2, 0.9, 0.9]] * 5, [[0.5] * 4] * 5, [[0.5] * 4] * 5)
    zero = np.zeros(5)
    for budget in (0.0, 0.3, 0.5, 0.7, 1.0):
        shift, q = oracle.at_budget(cs, zero, budget)
        rate = oracle.evaluate(cs, zero + shift, q)["target_rate"].mean()
        assert rate == pytest.approx(budget, abs=1e-9), budget


def test_the_oracle_beats_a_global_threshold_where_contexts_differ():
    # context 0: the target is good (0.9) and the draft middling (0.6); context 1: the target is poor (0.2) and the
    # draft's 0.4 beats it. One global δ cannot reject the first and keep the second; μ_M(z) can.
    cs = samples([[0.6, 0.6], [0.4, 0.4]], [[0.6, 0.6], [0.4, 0.4]], [[0.9, 0.9], [0.2, 0.2]],
                 [[0.9, 0.9], [0.2, 0.2]], ok_draft=[[0, 0], [1, 1]], ok_target=[[1, 1], [0, 0]])
    result = oracle.compare(cs, [0.5], 2, resamples=200)
    row = result["budgets"][0]
    assert row["oracle"]["target_rate"]["value"] == pytest.approx(0.5)
    assert row["global"]["target_rate"]["value"] == pytest.approx(0.5)
    assert row["oracle"]["reward"]["value"] == pytest.approx((0.9 + 0.4) / 2)
    assert row["global"]["reward"]["value"] == pytest.approx((0.6 + 0.2) / 2)  # it rejects the lower draft reward
    assert row["oracle_gain"]["correct"]["value"] == pytest.approx(1.0)
    slack = {e["rule"]: e for e in result["slack"]}
    assert slack["oracle δ(z) = μ̂_M(z)"]["reward"]["value"] == pytest.approx(0.65)
    assert slack["draft alone"]["reward"]["value"] == pytest.approx(0.5)
    assert slack["target alone"]["reward"]["value"] == pytest.approx(0.55)


def test_held_out_noise_can_make_the_oracle_lose():
    # the fit samples say the opposite of the eval samples: the oracle's μ̂_M(z) misleads it
    cs = samples([[0.6, 0.6], [0.4, 0.4]], [[0.6, 0.6], [0.4, 0.4]], [[0.9, 0.9], [0.2, 0.2]],
                 [[0.2, 0.2], [0.9, 0.9]])
    row = oracle.compare(cs, [0.5], 2, resamples=200)["budgets"][0]
    assert row["oracle_gain"]["reward"]["value"] == pytest.approx((0.2 + 0.4) / 2 - (0.6 + 0.9) / 2)


def test_the_recorded_target_reward_is_the_prm_score_of_the_steps_text_in_context():
    from rsd_jax.api import generate
    from rsd_jax.config import TheoryConfig
    from rsd_jax.configlib import load_config
    from rsd_jax.data.problems import load_items
    from rsd_jax.decoding.sampling import Sampling
    from rsd_jax.loading import load_engine
    from rsd_jax.methods import RSD
    from rsd_jax.theory.contexts import rewards_in_context

    cfg = load_config(TheoryConfig, "configs/theory_empirical.yaml", ["run.data.n=24"])
    items = load_items(cfg.run.data, "configs/theory_empirical.yaml")
    engine = load_engine(cfg.run, "configs/theory_empirical.yaml")
    spec = cfg.run.decoding.spec().replace(sampling=Sampling(temperature=1.0), record_target_reward=True)
    results = generate(engine, [i.prompt for i in items], questions=[i.question for i in items],
                       method=RSD(delta=0.95), decoding=spec, seed=5)
    texts = [[s.text for s in r.steps] for r in results]
    host = rewards_in_context(engine.models, [i.question for i in items], texts)
    n_target = 0
    for r, scored in zip(results, host):
        for s, h in zip(r.steps, scored):
            if s.source == "target":
                n_target += 1
                assert s.target_reward == pytest.approx(float(h), abs=1e-4)
            else:
                assert np.isnan(s.target_reward)
                assert s.reward == pytest.approx(float(h), abs=1e-4)
    assert n_target >= 5, "the test needs target steps"
