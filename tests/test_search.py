"""Best-of-N, majority voting and process beam search."""

from __future__ import annotations

import jax
import numpy as np

import engine_world as world
from rsd_jax.decoding.beam_search import beam_search
from rsd_jax.decoding.best_of_n import aggregate_rewards, best_of_n, majority_vote, sample_n
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.single import single_decode
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine

SPEC = DecodeSpec(max_new_tokens=24, max_steps=24, max_step_tokens=8, chunk=8)


def _setup():
    draft, _, prm = world.models()
    tables, prm_tables, _ = world.tables()
    batch, _, _ = world.prompts([5, 9, 7], t_cap=16 + 24, tp_cap=200)
    engine = Engine(draft=draft, target=draft, prm=prm, tables=tables, prm_view=prm_tables)
    return engine, batch


def responses(tokens, start, end):
    return [list(map(int, tokens[i, start[i]:end[i]])) for i in range(len(start))]


def test_best_of_one_greedy_is_the_draft_greedy_decoding():
    engine, batch = _setup()
    out = jax.device_get(best_of_n(engine, prompts=batch, key=jax.random.key(0), spec=SPEC, n=1))
    ref = jax.device_get(single_decode(engine, role="draft", prompts=batch, key=jax.random.key(0), spec=SPEC))
    s = out.samples
    assert responses(s.tokens, s.prompt_length, s.length) == responses(ref.tokens, ref.prompt_length, ref.length)
    assert (out.chosen == 0).all()


def test_best_of_n_chooses_the_highest_aggregate():
    engine, batch = _setup()
    spec = SPEC.replace(sampling=Sampling(temperature=1.0))
    for how in ("last", "min", "prod"):
        out = jax.device_get(best_of_n(engine, prompts=batch, key=jax.random.key(1), spec=spec, n=4,
                                       aggregate=how))
        scores = np.asarray(aggregate_rewards(out.samples, how)).reshape(3, 4)
        np.testing.assert_array_equal(out.chosen, scores.argmax(1))
        assert len({tuple(r) for r in out.samples.tokens[:4]}) > 1  # the samples differ


def test_sample_n_rows_are_grouped_by_prompt():
    engine, batch = _setup()
    out = jax.device_get(sample_n(engine, prompts=batch, key=jax.random.key(0), spec=SPEC, n=3))
    np.testing.assert_array_equal(out.prompt_length, np.repeat(np.asarray(batch.length), 3))


def test_majority_vote():
    assert majority_vote([3, None, 5, 3, 5, 3]) == 3
    assert majority_vote([None, None]) is None
    assert majority_vote(["a", "b"]) == "a"


def test_beam_width_one_is_greedy_step_decoding():
    engine, batch = _setup()
    out = jax.device_get(beam_search(engine, prompts=batch, key=jax.random.key(0), spec=SPEC, width=1,
                                     expansions=1))
    ref = jax.device_get(single_decode(engine, role="draft", prompts=batch, key=jax.random.key(0), spec=SPEC))
    b = out.beams
    assert responses(b.tokens, b.prompt_length, b.length) == responses(ref.tokens, ref.prompt_length, ref.length)


def test_beam_search_keeps_the_best_scored_candidates():
    engine, batch = _setup()
    spec = SPEC.replace(sampling=Sampling(temperature=1.0), max_steps=3)
    out = jax.device_get(beam_search(engine, prompts=batch, key=jax.random.key(2), spec=spec, width=2,
                                     expansions=3))
    b = out.beams
    assert b.tokens.shape[0] == 3 * 6
    # after the last selection, the rows of a prompt are copies of its 2 best beams
    for p in range(3):
        rows = {tuple(b.tokens[p * 6 + j]) for j in range(6)}
        assert len(rows) <= 2
    assert float(out.useful_flops) > float(b.stats.draft.useful_flops.sum() / 6)
