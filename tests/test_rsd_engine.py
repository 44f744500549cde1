"""The RSD loop: invariants against single-model decoding, the slow host reference, budgets, accounting."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine_world as world
from rsd_jax.decoding import acceptance
from reference import reference_rsd
from rsd_jax.compilations import compilations
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import DRAFT, NO_STEP, TARGET, Knobs
from rsd_jax.decoding.single import single_decode
from rsd_jax.engine import Engine
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.models import full_forward

SPEC = DecodeSpec(max_new_tokens=40, max_steps=40, max_step_tokens=12, chunk=8)
LENGTHS = [5, 11, 8]


@pytest.fixture(scope="module")
def setup():
    draft, target, prm = world.models()
    tables, prm_tables, host = world.tables()
    batch, ids, prm_ids = world.prompts(LENGTHS, t_cap=16 + SPEC.max_new_tokens, tp_cap=200)
    return draft, target, prm, tables, prm_tables, host, batch, ids, prm_ids


def engine_of(setup, tables=None) -> Engine:
    draft, target, prm, own_tables, prm_tables, *_ = setup
    return Engine(draft=draft, target=target, prm=prm, tables=own_tables if tables is None else tables,
                  prm_view=prm_tables)


def run_rsd(setup, delta, spec=SPEC, weighting_params=None, key=0, budget=0.0, histogram=None):
    batch = setup[6]
    knobs = Knobs(acceptance=weighting_params or acceptance.AcceptanceParams.create(delta=delta),
                  budget=jnp.float32(budget),
                  histogram=histogram or acceptance.RewardHistogram.create(spec.histogram_bins),
                  mu_target=jnp.float32(jnp.inf))
    return jax.device_get(rsd_decode(engine_of(setup), prompts=batch, knobs=knobs, key=jax.random.key(key), spec=spec))


def responses(out):
    return [list(map(int, out.tokens[i, out.prompt_length[i]:out.length[i]])) for i in range(len(LENGTHS))]


@pytest.mark.parametrize("delta, model_name", [(0.0, "draft"), (1.01, "target")])
def test_accept_all_is_draft_and_reject_all_is_target(setup, delta, model_name):
    batch = setup[6]
    out = run_rsd(setup, delta)
    single = jax.device_get(single_decode(engine_of(setup), role=model_name, prompts=batch, key=jax.random.key(0),
                                          spec=SPEC))
    assert responses(out) == responses(single)
    sources = out.trace.source
    expected = DRAFT if model_name == "draft" else TARGET
    for i in range(len(LENGTHS)):
        assert set(sources[i, :out.n_steps[i]]) == {expected}
        assert (sources[i, out.n_steps[i]:] == NO_STEP).all()
    if model_name == "draft":
        assert int(out.stats.target_invocations) == 0 and out.stats.target.forwards == 0


def test_mixed_acceptance_equals_slow_reference(setup):
    draft, target, prm, _, _, host, _, ids, prm_ids = setup
    out = run_rsd(setup, 0.5)
    sources = out.trace.source
    assert (sources == DRAFT).any() and (sources == TARGET).any(), "the test needs mixed decisions"
    for i in range(len(LENGTHS)):
        ref = reference_rsd(draft, target, prm, ids[i], prm_ids[i], host, delta=0.5,
                            max_new_tokens=SPEC.max_new_tokens, max_steps=SPEC.max_steps,
                            max_step_tokens=SPEC.max_step_tokens, capacity=256)
        n = int(out.n_steps[i])
        assert list(map(int, out.tokens[i, :out.length[i]])) == ref.tokens
        assert list(sources[i, :n]) == ref.sources
        assert list(out.trace.end[i, :n]) == ref.ends
        np.testing.assert_allclose(out.trace.reward[i, :n], ref.rewards, rtol=1e-5, atol=1e-6)


def test_incremental_prm_reward_equals_scoring_from_scratch(setup):
    _, _, prm, *_ = setup
    out = run_rsd(setup, 0.0)  # every step accepted: each reward sits at a delimiter of the final view
    for i in range(len(LENGTHS)):
        view = jnp.asarray(out.prm_tokens[i:i + 1, :out.prm_length[i]])
        rewards = np.asarray(prm.rewards(full_forward(prm, view)[1])[0])
        delimiters = np.flatnonzero(np.asarray(view[0]) == world.DELIMITER)
        positions = delimiters[delimiters >= int(out.prompt_length[i]) // 2 + 1]  # skip any in the prompt
        n = int(out.n_steps[i])
        np.testing.assert_allclose(rewards[positions[-n:]], out.trace.reward[i, :n], rtol=1e-5, atol=1e-6)


def test_threshold_sweep_compiles_once(setup):
    run_rsd(setup, 0.1)  # the one compilation (if no earlier test made it)
    with compilations() as count:  # as JAX reports them: the loop, and any eager operation on a new shape
        for delta in (0.2, 0.4, 0.6, 0.8):
            run_rsd(setup, delta)
    assert count() == 0


def test_budgets_hold_per_row(setup):
    spec = SPEC.replace(max_new_tokens=25, max_steps=3, max_step_tokens=6)
    out = run_rsd(setup, 0.5, spec=spec)
    for i in range(len(LENGTHS)):
        assert out.length[i] - out.prompt_length[i] <= 25
        assert out.n_steps[i] <= 3
        ends = np.concatenate([[out.prompt_length[i]], out.trace.end[i, :out.n_steps[i]]])
        assert (np.diff(ends) <= 6).all() and (np.diff(ends) >= 1).all()
    spec = SPEC.replace(max_new_tokens=9, max_steps=50)
    out = run_rsd(setup, 0.5, spec=spec)
    assert (out.length - out.prompt_length == 9).all() | (out.n_steps == 50).all()


def test_eos_ends_a_row():
    draft, target, prm = world.models()
    tables, prm_tables, _ = world.tables()
    batch, _, _ = world.prompts([6, 9, 7, 4], t_cap=16 + 60, tp_cap=300, seed=5)
    # declare many tokens EOS so that rows end at different points
    eos_tables = dataclasses.replace(tables, eos=jnp.zeros_like(tables.eos).at[20:].set(True))
    spec = SPEC.replace(max_new_tokens=60, max_steps=60)
    engine = Engine(draft=draft, target=target, prm=prm, tables=eos_tables, prm_view=prm_tables)
    out = jax.device_get(rsd_decode(engine, prompts=batch, knobs=Knobs.accept_all(spec), key=jax.random.key(0),
                                    spec=spec))
    eos = np.asarray(eos_tables.eos)
    lengths = out.length - out.prompt_length
    assert len(set(lengths.tolist())) > 1 and (lengths < 60).all()
    for i in range(4):
        resp = out.tokens[i, out.prompt_length[i]:out.length[i]]
        assert eos[resp[-1]] and not eos[resp[:-1]].any()


def test_accounting_adds_up(setup):
    out = run_rsd(setup, 0.5)
    st = out.stats
    committed = out.length - out.prompt_length
    np.testing.assert_array_equal(committed, st.draft_accepted_tokens + st.target_tokens)
    np.testing.assert_array_equal(out.n_steps, st.draft_steps + st.target_steps)
    # every token a model wrote went through it once (decode), plus what it prefilled
    assert (st.draft.tokens >= st.draft_accepted_tokens + st.draft_discarded_tokens).all()
    assert (st.target.tokens >= st.target_tokens).all()
    for usage in (st.draft, st.target, st.prm):
        assert float(usage.executed_flops) >= float(usage.useful_flops.sum()) > 0
    assert int(st.target_invocations) <= int(st.iterations)


def test_passes_count_the_rows_they_carry(setup):
    out = run_rsd(setup, 0.5)
    st = out.stats
    for usage in (st.draft, st.target, st.prm):  # every pass carries at least one row and at most the batch
        assert int(usage.forwards) <= int(usage.rows) <= len(LENGTHS) * int(usage.forwards)
        assert int(usage.rows) <= int(usage.tokens.sum())  # a row in a pass had at least one token in it
    assert int(st.target.forwards) >= int(st.target_invocations) > 0
    none = run_rsd(setup, 0.0).stats.target  # every step accepted: the target never passes over the batch
    assert int(none.forwards) == int(none.rows) == 0


def test_stochastic_acceptance_rate_matches_constant_weight(setup):
    spec = SPEC.replace(weighting="constant", max_new_tokens=40)
    accepted = total = 0
    for key in range(6):
        out = run_rsd(setup, 0.0, spec=spec, key=key,
                      weighting_params=acceptance.AcceptanceParams.create(p=0.3))
        accepted += int(out.stats.draft_steps.sum())
        total += int(out.n_steps.sum())
    rate = accepted / total
    assert abs(rate - 0.3) < 5 * np.sqrt(0.3 * 0.7 / total), (rate, total)


def test_online_budget_limits_target_share(setup):
    spec = SPEC.replace(online_budget=True, max_new_tokens=40)
    out = run_rsd(setup, 0.7, spec=spec, budget=0.25)
    share = float(out.stats.target_steps.sum()) / float(out.n_steps.sum())
    assert share <= 0.25 + 0.15  # the estimate starts empty; it settles within a few steps
    assert np.isfinite(out.trace.delta[out.trace.source != NO_STEP]).all()


def test_calibrated_budget_mode_is_the_binary_rule_off_the_atom_and_q_on_it(setup):
    """The loop's calibrated rule (r > δ, r == δ with probability q): with q = 1, or q = 0 where no reward sits on
    δ, it decides as the binary rule r >= δ; with δ on a reward the loop saw, q = 0 rejects that step and q = 1
    accepts it."""
    budget = SPEC.replace(budget=True)
    plain = run_rsd(setup, 0.5)
    for q in (1.0, 0.0):
        out = run_rsd(setup, 0.5, spec=budget, weighting_params=acceptance.AcceptanceParams.create(delta=0.5, q=q))
        np.testing.assert_array_equal(out.tokens, plain.tokens)
        np.testing.assert_array_equal(out.trace.source, plain.trace.source)
    first = float(plain.trace.reward[0, 0])  # the first step's reward: the same context whatever the rule
    sources = [run_rsd(setup, 0.0, spec=budget,
                       weighting_params=acceptance.AcceptanceParams.create(delta=first, q=q)).trace.source[0, 0]
               for q in (0.0, 1.0)]
    assert sources == [TARGET, DRAFT]


def test_target_on_a_gathered_sub_batch_gives_the_same_result(setup):
    plain = run_rsd(setup, 0.5, spec=SPEC.replace(pass_rows=0))
    for rows in (1, 2):  # passes of one row, and of two
        gathered = run_rsd(setup, 0.5, spec=SPEC.replace(pass_rows=rows))
        np.testing.assert_array_equal(gathered.tokens, plain.tokens)
        np.testing.assert_array_equal(gathered.trace.source, plain.trace.source)
        np.testing.assert_array_equal(gathered.stats.target.useful_flops, plain.stats.target.useful_flops)
        assert float(gathered.stats.target.executed_flops) < float(plain.stats.target.executed_flops)
