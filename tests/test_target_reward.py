"""The RSD loop's record of the target's step rewards (DecodeSpec.record_target_reward): recorded exactly where the
target wrote, equal to the PRM scoring the final view from scratch, NaN elsewhere; and the loop's output otherwise
that of the default loop (which carries no such record)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine_world as world
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import DRAFT, TARGET, Knobs
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.models import full_forward

SPEC = DecodeSpec(max_new_tokens=40, max_steps=40, max_step_tokens=12, chunk=8)
LENGTHS = [5, 11, 8]


@pytest.fixture(scope="module")
def setup():
    engine, batch, _, _, _ = world.engine_and_prompts(LENGTHS, SPEC.max_new_tokens)
    return engine, batch


def run(setup, delta, spec):
    engine, batch = setup
    knobs = Knobs.create(delta=delta, histogram_bins=spec.histogram_bins)
    return jax.device_get(rsd_decode(engine, prompts=batch, knobs=knobs, key=jax.random.key(3), spec=spec))


def view_rewards(prm, out, i) -> np.ndarray:
    """The PRM's reward of every committed step of row i, scored from scratch over its final view."""
    view = jnp.asarray(out.prm_tokens[i:i + 1, :out.prm_length[i]])
    rewards = np.asarray(prm.rewards(full_forward(prm, view)[1])[0])
    delimiters = np.flatnonzero(np.asarray(view[0]) == world.DELIMITER)
    positions = delimiters[delimiters >= int(out.prompt_length[i]) // 2 + 1]  # skip any in the prompt
    return rewards[positions[-int(out.n_steps[i]):]]


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.9)], ids=["greedy", "sampled"])
def test_target_reward_is_the_prm_score_of_the_target_step(setup, sampling):
    spec = SPEC.replace(sampling=sampling, record_target_reward=True)
    out = run(setup, 0.5, spec)
    source, scored = out.trace.source, out.trace.target_reward
    assert (source == TARGET).any() and (source == DRAFT).any(), "the test needs mixed decisions"
    np.testing.assert_array_equal(np.isfinite(scored), source == TARGET)  # exactly where the target wrote
    prm = setup[0].prm
    for i in range(len(LENGTHS)):
        n = int(out.n_steps[i])
        fresh = view_rewards(prm, out, i)
        wrote = source[i, :n] == TARGET
        np.testing.assert_allclose(scored[i, :n][wrote], fresh[wrote], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.trace.reward[i, :n][~wrote], fresh[~wrote], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.9)], ids=["greedy", "sampled"])
def test_recording_changes_nothing_else(setup, sampling):
    plain = run(setup, 0.5, SPEC.replace(sampling=sampling))
    recorded = run(setup, 0.5, SPEC.replace(sampling=sampling, record_target_reward=True))
    assert plain.trace.target_reward is None  # the default loop carries no record
    scored = recorded.trace.target_reward
    recorded = recorded.__class__(**{**recorded.__dict__,
                                     "trace": recorded.trace.__class__(**{**recorded.trace.__dict__,
                                                                          "target_reward": None})})
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(recorded)):  # tokens, trace, stats, FLOPs: all equal
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(scored).any()
