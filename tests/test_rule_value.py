"""One acceptance rule value (issue 34): acceptance.Rule held by the method (methods.RSD), parsed from the config in
one place (RSDConfig.rule), replaced by the budget's calibration, traced into the loop's knobs; the theory's ω of
the randomised threshold is the engine's. Host-side checks only: no model, no decoding."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.rsd_state import Knobs
from rsd_jax.decoding.spec import GATHERED_CHUNK, DecodeSpec
from rsd_jax.errors import ConfigError
from rsd_jax.methods import RSD
from rsd_jax.theory import mixture


def test_the_method_holds_one_rule_and_reads_it_back():
    rsd = RSD(delta=0.8, weighting="logistic", alpha=5.0)
    assert rsd.rule == acceptance.Rule.create("logistic", delta=0.8, alpha=5.0)
    assert (rsd.delta, rsd.weighting, rsd.alpha, rsd.p, rsd.q) == (0.8, "logistic", 5.0, acceptance.DEFAULT_P, 1.0)
    assert [f.name for f in dataclasses.fields(RSD)] == ["rule", "speculative_gamma", "calibration_rewards"]
    assert RSD() == RSD(rule=acceptance.Rule.create()) and RSD().delta == acceptance.DEFAULT_DELTA
    # keywords given with a rule change that rule; replace keeps the rule unless told otherwise
    assert RSD(rule=rsd.rule, delta=0.3).rule == rsd.rule.updated(delta=0.3)
    assert dataclasses.replace(rsd, speculative_gamma=4).rule == rsd.rule
    other = acceptance.Rule.create(budget=0.2, delta=0.9, q=0.5)
    assert dataclasses.replace(rsd, rule=other).rule == other  # the calibration's way: the new rule whole
    assert dataclasses.replace(rsd, delta=0.2).delta == 0.2 and dataclasses.replace(rsd, delta=0.2).alpha == 5.0
    assert RSD(delta=[0.1, 0.2]).delta == (0.1, 0.2)
    assert hash(RSD(delta=0.8)) == hash(RSD(delta=0.8))


def test_the_rule_checks_its_settings_before_any_work():
    with pytest.raises(ConfigError, match="rsd.weighting must be binary"):
        acceptance.Rule.create("clipping", budget=0.2)
    with pytest.raises(ConfigError, match="rsd.weighting 'nope' is not one of"):
        RSD(weighting="nope")
    with pytest.raises(ConfigError, match=r"q \(the acceptance at δ\) must be in \[0, 1\]"):
        RSD(q=1.5)
    with pytest.raises(ConfigError, match=r"rsd.budget must be in \[0, 1\]"):
        acceptance.Rule.create(budget=2.0)
    with pytest.raises(ConfigError, match="acceptance.Rule"):
        RSD(rule=(0.5, 1.0))
    # the config's flat keys become the rule at load, so a bad pair fails there
    with pytest.raises(ConfigError, match="rsd.weighting must be binary"):
        load_config(RunConfig, None, ["rsd.budget=0.2", "rsd.weighting=logistic"])


def test_the_config_parses_its_keys_into_the_methods_rule():
    cfg = load_config(RunConfig, None, ["rsd.weighting=constant", "rsd.p=0.25", "rsd.delta=0.4"]).rsd
    assert cfg.rule() == acceptance.Rule.create("constant", p=0.25, delta=0.4)
    assert cfg.method_value().rule == cfg.rule()
    assert cfg.method_value(delta=0.9).rule == cfg.rule().updated(delta=0.9)
    budget = load_config(RunConfig, None, ["rsd.budget=0.3", "rsd.online_budget=true"]).rsd
    assert budget.rule().mode == "online" and budget.method_value().rule.budget == 0.3
    spec = budget.method_value().spec(DecodeSpec())
    assert spec.budget_mode == "online" and spec.weighting == "binary"


def test_the_calibration_replaces_the_threshold_of_the_rule():
    rewards = np.array([0.2, 0.5, 0.5, 0.9])
    rule = acceptance.Rule.create(budget=0.5, mu_target=0.7)
    calibrated = acceptance.calibrated(rule, rewards)
    assert (calibrated.params.delta, calibrated.params.q) == acceptance.rule_of_rewards(rewards, 0.5, mu_target=0.7)
    assert calibrated.budget == 0.5 and calibrated.mu_target == 0.7 and calibrated.mode == "calibrated"
    with pytest.raises(ConfigError, match="needs rsd.budget"):
        acceptance.calibrated(acceptance.Rule.create(), rewards)


def test_knobs_trace_the_rule_and_pad_a_per_prompt_delta():
    rule = acceptance.Rule.create(delta=[0.1, 0.2], p=0.3, q=0.5)
    knobs = Knobs.of_rule(rule, rows=4, histogram_bins=8)
    np.testing.assert_array_equal(knobs.acceptance.delta, np.float32([0.1, 0.2, 0.2, 0.2]))
    assert knobs.acceptance.p.dtype == jnp.float32 and float(knobs.budget) == 0.0
    assert math.isinf(float(knobs.mu_target)) and knobs.histogram.num_bins == 8
    knobs = Knobs.of_rule(acceptance.Rule.create(delta=0.6, budget=0.25, q=0.5, mu_target=0.4))
    got = [float(x) for x in (knobs.acceptance.delta, knobs.acceptance.q, knobs.budget, knobs.mu_target)]
    assert got == [float(np.float32(v)) for v in (0.6, 0.5, 0.25, 0.4)]
    rule = knobs.rule(DecodeSpec(budget=True))
    assert (rule.weighting, rule.mode, float(rule.budget)) == ("binary", "calibrated", 0.25)


def test_the_theory_and_the_loop_accept_with_the_same_threshold_weight():
    rewards = np.float32([0.1, 0.5, 0.5, 0.9, np.nan])
    omega = mixture.threshold_omega(rewards, 0.5, 0.25)
    np.testing.assert_array_equal(omega, [0.0, 0.25, 0.25, 1.0, 0.0])
    u = jnp.linspace(0.0, 0.999, 1000)
    accepted = jax.vmap(lambda ui: acceptance.budget_accept(rewards, 0.5, 0.25, None, u=jnp.full(5, ui)))(u)
    np.testing.assert_allclose(np.mean(np.asarray(accepted), axis=0), omega, atol=1e-3)



def test_gathered_passes_catch_up_in_short_chunks():
    assert DecodeSpec(chunk=32).catch_up_chunk == GATHERED_CHUNK
    assert DecodeSpec(chunk=4).catch_up_chunk == 4
    assert DecodeSpec(chunk=32, pass_rows=0).catch_up_chunk == 32
