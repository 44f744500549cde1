"""The RSD loop: the asynchronous schedule (the default) commits exactly what its lock-step setting (decoding.schedule
"sync") and the slow reference commit for greedy decoding at any quorum and pass size, with every option; per-row
sampling, the same accounting, clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine_world as world
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.passes import pass_sizes
from reference import reference_rsd
from rsd_jax.decoding.phases import target_fires
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import DONE, DRAFTING, REWRITING, SCORING, WAITING
from rsd_jax.decoding.rsd_state import Knobs
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.errors import ConfigError

SPEC = DecodeSpec(max_new_tokens=40, max_steps=40, max_step_tokens=12, chunk=8)
LENGTHS = [5, 11, 8, 3, 14, 7]  # ragged


@pytest.fixture(scope="module")
def setup():
    return world.engine_and_prompts(LENGTHS, SPEC.max_new_tokens)


_RUNS: dict = {}


def run(setup, spec, delta=0.5, key=0, weighting_params=None):
    """The loop's output (memoised: tests share runs, each spec compiles once)."""
    memo = (spec, delta, key, None if weighting_params is None else tuple(map(float, jax.tree.leaves(weighting_params))))
    if memo not in _RUNS:
        _RUNS[memo] = _run(setup, spec, delta, key, weighting_params)
    return _RUNS[memo]


def _run(setup, spec, delta, key, weighting_params):
    engine, batch = setup[0], setup[1]
    knobs = Knobs(acceptance=weighting_params or acceptance.AcceptanceParams.create(delta=delta),
                  budget=jnp.float32(0.0), histogram=acceptance.RewardHistogram.create(spec.histogram_bins),
                  mu_target=jnp.float32(jnp.inf))
    return jax.device_get(rsd_decode(engine, prompts=batch, knobs=knobs, key=jax.random.key(key), spec=spec))


def committed(out, i):
    return list(map(int, out.tokens[i, :out.length[i]]))


@pytest.fixture(scope="module")
def sync_out(setup):
    return run(setup, SPEC.replace(schedule="sync"))


@pytest.mark.parametrize("quorum, pass_rows, sizes", [(1, 0, 3), (6, 0, 3), (1, 4, 3), (2, 5, 6)])
def test_greedy_async_commits_exactly_what_sync_commits(setup, sync_out, quorum, pass_rows, sizes):
    out = run(setup, SPEC.replace(schedule="async", quorum=quorum, pass_rows=pass_rows, pass_sizes=sizes))
    sources = np.asarray(sync_out.trace.source)
    assert (sources == 1).any() and (sources == 0).any()  # both models wrote steps: the comparison has teeth
    for i in range(len(LENGTHS)):
        assert committed(out, i) == committed(sync_out, i)
    np.testing.assert_array_equal(out.n_steps, sync_out.n_steps)
    np.testing.assert_array_equal(out.trace.source, sync_out.trace.source)
    np.testing.assert_array_equal(out.trace.end, sync_out.trace.end)
    np.testing.assert_allclose(out.trace.reward, sync_out.trace.reward, rtol=1e-5, atol=1e-6)
    for field in ("draft_accepted_tokens", "draft_discarded_tokens", "target_tokens", "draft_steps", "target_steps"):
        np.testing.assert_array_equal(getattr(out.stats, field), getattr(sync_out.stats, field), err_msg=field)
    for model in ("draft", "target", "prm"):  # the same useful work, whatever the schedule
        np.testing.assert_array_equal(getattr(out.stats, model).tokens, getattr(sync_out.stats, model).tokens)
        np.testing.assert_allclose(getattr(out.stats, model).useful_flops, getattr(sync_out.stats, model).useful_flops,
                                   rtol=1e-5)


def test_greedy_async_equals_the_slow_reference(setup):
    engine, _, ids, prm_ids, host = setup
    out = run(setup, SPEC.replace(schedule="async", quorum=2, pass_rows=5, pass_sizes=6))
    for i in range(len(LENGTHS)):
        ref = reference_rsd(engine.draft, engine.target, engine.prm, ids[i], prm_ids[i], host, delta=0.5,
                            max_new_tokens=SPEC.max_new_tokens, max_steps=SPEC.max_steps,
                            max_step_tokens=SPEC.max_step_tokens, capacity=256)
        n = int(out.n_steps[i])
        assert committed(out, i) == ref.tokens
        assert list(out.trace.source[i, :n]) == ref.sources
        np.testing.assert_allclose(out.trace.reward[i, :n], ref.rewards, rtol=1e-5, atol=1e-6)


def test_a_larger_quorum_makes_fewer_target_passes_carrying_more_rows(setup):
    eager = run(setup, SPEC.replace(schedule="async", quorum=1))
    patient = run(setup, SPEC.replace(schedule="async", quorum=len(LENGTHS)))
    assert int(patient.stats.target.forwards) < int(eager.stats.target.forwards)
    per_pass = lambda u: int(u.rows) / int(u.forwards)  # noqa: E731
    assert per_pass(patient.stats.target) > per_pass(eager.stats.target)


def test_gathered_passes_execute_fewer_flops_than_masked_ones(setup):
    masked = run(setup, SPEC.replace(schedule="async", quorum=1, pass_rows=0))
    gathered = run(setup, SPEC.replace(schedule="async", quorum=1, pass_rows=4))
    assert float(gathered.stats.target.executed_flops) < float(masked.stats.target.executed_flops)
    np.testing.assert_allclose(gathered.stats.target.useful_flops, masked.stats.target.useful_flops, rtol=1e-5)


@pytest.mark.parametrize("weighting", ["logistic"])
def test_sampled_rows_do_not_depend_on_the_schedule(setup, weighting):
    """Each row draws with its own keys (model, step, token index): the same tokens whatever the quorum or the pass
    size, so a row's distribution is that of the row alone."""
    spec = SPEC.replace(schedule="async", sampling=Sampling(temperature=1.0), weighting=weighting)
    params = acceptance.AcceptanceParams.create(delta=0.5, alpha=8.0)
    first = run(setup, spec.replace(quorum=1, pass_rows=0), key=3, weighting_params=params)
    second = run(setup, spec.replace(quorum=4, pass_rows=2), key=3, weighting_params=params)
    other_key = run(setup, spec.replace(quorum=1, pass_rows=0), key=4, weighting_params=params)  # same compile
    for i in range(len(LENGTHS)):
        assert committed(first, i) == committed(second, i)
    np.testing.assert_array_equal(first.trace.source, second.trace.source)
    assert any(committed(first, i) != committed(other_key, i) for i in range(len(LENGTHS)))


def test_async_budget_mode_is_the_binary_rule_off_the_atom(setup, sync_out):
    """The calibrated budget mode in the asynchronous loop (per-row uniforms): with δ where no reward sits, q = 0 and
    q = 1 both commit what the synchronous binary rule commits."""
    spec = SPEC.replace(schedule="async", budget=True)
    for q in (0.0, 1.0):
        out = run(setup, spec, weighting_params=acceptance.AcceptanceParams.create(delta=0.5, q=q))
        np.testing.assert_array_equal(out.trace.source, sync_out.trace.source)
        for i in range(len(LENGTHS)):
            assert committed(out, i) == committed(sync_out, i)


def test_target_fires_on_a_quorum_while_a_wave_is_in_flight_or_when_nothing_else_can_advance():
    phases = lambda *p: jnp.asarray(p, jnp.int32)  # noqa: E731
    assert not target_fires(2, phases(WAITING, DRAFTING, SCORING))
    assert target_fires(2, phases(WAITING, WAITING, DRAFTING))
    assert target_fires(3, phases(WAITING, DONE, DONE))  # nothing else can advance
    assert target_fires(3, phases(REWRITING, DRAFTING, DRAFTING))  # a wave in flight finishes
    assert not target_fires(1, phases(DRAFTING, DONE, SCORING))


def test_pass_sizes():
    assert pass_sizes(0, 64) == (64,)
    assert pass_sizes(16, 64) == (4, 8, 16)
    assert pass_sizes(16, 64, 6) == (2, 4, 6, 8, 12, 16)
    assert pass_sizes(100, 8, 4) == (1, 2, 4, 8)
    assert pass_sizes(2, 8, 6) == (1, 2)
    assert pass_sizes(16, 64, 0) == pass_sizes(16, 64, 6) and pass_sizes(16, 32, 0) == pass_sizes(16, 32, 3)


def test_bad_schedule_options_are_named():
    with pytest.raises(ConfigError, match="schedule"):
        DecodeSpec(schedule="eager")
    with pytest.raises(ConfigError, match="quorum"):
        DecodeSpec(quorum=-1)
    with pytest.raises(ConfigError, match="pass_sizes"):
        DecodeSpec(pass_sizes=5)


def test_async_speculative_target_steps_commit_what_the_lock_step_setting_commits(setup, sync_out):
    """rsd.speculative_gamma in the asynchronous schedule: the target's greedy steps by speculative decoding with the
    draft, the records of the plain loop."""
    out = run(setup, SPEC.replace(schedule="async", quorum=2, pass_rows=4, speculative_gamma=2))
    for i in range(len(LENGTHS)):
        assert committed(out, i) == committed(sync_out, i)
    np.testing.assert_array_equal(out.trace.source, sync_out.trace.source)
    np.testing.assert_allclose(out.trace.reward, sync_out.trace.reward, rtol=1e-5, atol=1e-6)
