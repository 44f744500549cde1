"""Token-level speculative decoding: greedy = the target's greedy decoding; sampled outputs follow the
target's distribution (chi-square); RSD with speculative target steps = plain RSD with fewer target forwards."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import engine_world as world
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import Knobs
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.single import single_decode
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.decoding.speculative import speculative_decode
from rsd_jax.engine import Engine
from rsd_jax.models import full_forward

SPEC = DecodeSpec(max_new_tokens=30, max_steps=30, max_step_tokens=10, chunk=8)


def close_draft(target, noise: float, seed: int = 7):
    """A draft that agrees with the target most of the time: the target's weights plus noise."""
    leaves, treedef = jax.tree.flatten(target.params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return world.with_params(target, jax.tree.unflatten(
        treedef, [x + noise * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]))


def engine(draft, target, tables, prm=None, prm_tables=None) -> Engine:
    return Engine(draft=draft, target=target, prm=prm if prm is not None else draft, tables=tables,
                  prm_view=prm_tables if prm_tables is not None else world.tables()[1])


@pytest.fixture(scope="module")
def world_models():
    draft, target, prm = world.models()
    return draft, target, prm, close_draft(target, 0.01)


@pytest.mark.parametrize("which", ["random_draft", "close_draft"])
@pytest.mark.parametrize("gamma", [1, 4])
def test_greedy_speculative_equals_target_greedy(world_models, which, gamma):
    draft, target, _, close = world_models
    draft = close if which == "close_draft" else draft
    tables, _, _ = world.tables()
    batch, _, _ = world.prompts([5, 11, 8], t_cap=16 + 30, tp_cap=100)
    pair = engine(draft, target, tables)
    ref = jax.device_get(single_decode(pair, role="target", prompts=batch, key=jax.random.key(0), spec=SPEC))
    out = jax.device_get(speculative_decode(pair, prompts=batch, key=jax.random.key(0), spec=SPEC, gamma=gamma))
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_array_equal(out.length, ref.length)
    if which == "close_draft" and gamma == 4:
        assert out.draft_kept.sum() > 0.3 * (out.length - out.prompt_length).sum()
        assert int(out.target.forwards) < int(ref.usage.forwards)


def _exact_two_token_marginals(target, prompt: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """p(x1) and the marginal of x2, summing over x1, at temperature 1."""
    seq = jnp.asarray([prompt + [0]] * world.VOCAB)
    seq = seq.at[:, -1].set(jnp.arange(world.VOCAB))
    logits, _ = full_forward(target, seq)
    p1 = np.asarray(jax.nn.softmax(logits[0, len(prompt) - 1]), np.float64)
    p2_given = np.asarray(jax.nn.softmax(logits[:, len(prompt)]), np.float64)
    return p1, p1 @ p2_given


def test_sampled_speculative_matches_target_distribution(world_models):
    draft, target, _, _ = world_models
    tables, _, _ = world.tables(eos=False)
    no_stop = tables.__class__(stop=jnp.zeros_like(tables.stop), eos=tables.eos)
    n = 4000
    prompt = [5, 17, 30, 9]
    tokens = np.zeros((n, 8), np.int32)
    tokens[:, :4] = prompt
    from rsd_jax.decoding.prompts import Prompts

    batch = Prompts(tokens=jnp.asarray(tokens), length=jnp.full((n,), 4, jnp.int32),
                    prm_tokens=jnp.zeros((n, 4), jnp.int32), prm_length=jnp.ones((n,), jnp.int32))
    spec = DecodeSpec(max_new_tokens=2, chunk=4, sampling=Sampling(temperature=1.0))
    out = jax.device_get(speculative_decode(engine(draft, target, no_stop), prompts=batch, key=jax.random.key(3),
                                            spec=spec, gamma=2))
    p1, p2 = _exact_two_token_marginals(target, prompt)
    for position, p in ((4, p1), (5, p2)):
        counts = np.bincount(out.tokens[:, position], minlength=world.VOCAB)
        expected = p * n
        keep = expected >= 5  # pool rare tokens into one cell
        observed = np.append(counts[keep], counts[~keep].sum())
        expect = np.append(expected[keep], expected[~keep].sum())
        expect *= observed.sum() / expect.sum()  # float32 softmax sums to 1 only within 1e-7
        assert stats.chisquare(observed, expect).pvalue > 1e-3
    # the test has power: the draft's own distribution is far from the target's
    logits, _ = full_forward(draft, jnp.asarray([prompt]))
    q1 = np.asarray(jax.nn.softmax(logits[0, -1]), np.float64)
    assert 0.5 * np.abs(q1 - p1).sum() > 0.2


def test_rsd_with_speculative_target_steps_equals_plain_rsd(world_models):
    draft, target, prm, _ = world_models
    tables, prm_tables, _ = world.tables()
    batch, _, _ = world.prompts([5, 11, 8], t_cap=16 + 30, tp_cap=200)
    knobs = Knobs.create(delta=0.5)

    def rsd(d, spec):
        return jax.device_get(rsd_decode(engine(d, target, tables, prm, prm_tables), prompts=batch, knobs=knobs,
                                         key=jax.random.key(0), spec=spec))

    plain = rsd(draft, SPEC)
    # the same draft proposes inside the target's steps; a close draft makes the rounds pay off
    close = close_draft(target, 0.01)
    plain_close = rsd(close, SPEC)
    for d, ref in ((draft, plain), (close, plain_close)):
        out = rsd(d, SPEC.replace(speculative_gamma=4))
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        np.testing.assert_array_equal(out.trace.source, ref.trace.source)
    assert (plain_close.trace.source == 1).any()
    assert int(out.stats.target.forwards) < int(plain_close.stats.target.forwards)
