"""A self-scoring draft (head "lm+value"): the RSD loop reads each step's reward from the draft's own value head at
the step's last token, with no PRM pass; checked against full forwards on the host and the slow reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine_world as world
from rsd_jax.data.char_tokenizer import CharTokenizer
from reference import reference_rsd
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import DRAFT, TARGET, Knobs
from rsd_jax.decoding.single import single_decode
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine, RSDModels
from rsd_jax.errors import InputError
from rsd_jax.models import full_forward

SPEC = DecodeSpec(max_new_tokens=40, max_steps=40, max_step_tokens=12, chunk=8)
LENGTHS = [5, 11, 8]


@pytest.fixture(scope="module")
def setup():
    draft = world.random_model(world.config(1, 32, head="lm+value"), seed=1)
    target = world.random_model(world.config(2, 48), seed=2)
    tables, prm_tables, host = world.tables()
    batch, ids, _ = world.prompts(LENGTHS, t_cap=16 + SPEC.max_new_tokens, tp_cap=200)
    engine = Engine(draft=draft, target=target, prm=draft, tables=tables, prm_view=prm_tables, self_scoring=True)
    return engine, host, batch, ids


def run(engine, batch, delta):
    knobs = Knobs.create(delta=delta, histogram_bins=SPEC.histogram_bins)
    return jax.device_get(rsd_decode(engine, prompts=batch, knobs=knobs, key=jax.random.key(0), spec=SPEC))


def responses(out):
    return [list(map(int, out.tokens[i, out.prompt_length[i]:out.length[i]])) for i in range(len(LENGTHS))]


def test_the_reward_is_the_value_head_of_a_full_forward_at_the_step_end(setup):
    engine, _, batch, _ = setup
    out = run(engine, batch, 0.0)  # every step accepted
    for i in range(len(LENGTHS)):
        n = int(out.n_steps[i])
        assert n >= 2, "the test needs several steps"
        _, hidden = full_forward(engine.draft, jnp.asarray(out.tokens[i:i + 1, :out.length[i]]))
        rewards = np.asarray(engine.draft.rewards(hidden)[0])
        ends = out.trace.end[i, :n]  # the committed length after each step: its last token sits at end - 1
        np.testing.assert_allclose(out.trace.reward[i, :n], rewards[ends - 1], rtol=1e-5, atol=1e-6)


def test_mixed_decisions_equal_the_slow_reference_with_the_draft_as_its_own_prm(setup):
    engine, host, batch, ids = setup
    # δ halfway between the two first-step rewards either side of the median: a δ equal to some reward (the median
    # itself) lets float noise between the jitted loop and the reference flip that step's decision
    first = np.unique(run(engine, batch, 0.0).trace.reward[:, :3])
    delta = float((first[len(first) // 2 - 1] + first[len(first) // 2]) / 2)
    out = run(engine, batch, delta)
    assert (out.trace.source == DRAFT).any() and (out.trace.source == TARGET).any(), "the test needs mixed decisions"
    for i in range(len(LENGTHS)):
        # the PRM is the draft itself reading the draft's own view: the prompt and the step's tokens as they are
        ref = reference_rsd(engine.draft, engine.target, engine.draft, ids[i], ids[i], host, delta=delta,
                            max_new_tokens=SPEC.max_new_tokens, max_steps=SPEC.max_steps,
                            max_step_tokens=SPEC.max_step_tokens, capacity=256, prm_view=list)
        n = int(out.n_steps[i])
        assert list(map(int, out.tokens[i, :out.length[i]])) == ref.tokens
        assert list(out.trace.source[i, :n]) == ref.sources
        np.testing.assert_allclose(out.trace.reward[i, :n], ref.rewards, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("delta, role", [(0.0, "draft"), (1.01, "target")])
def test_accept_all_is_the_draft_and_reject_all_is_the_target(setup, delta, role):
    engine, _, batch, _ = setup
    out = run(engine, batch, delta)
    single = jax.device_get(single_decode(engine, role=role, prompts=batch, key=jax.random.key(0), spec=SPEC))
    assert responses(out) == responses(single)


def test_no_prm_pass_and_one_extra_draft_token_per_step(setup):
    engine, _, batch, _ = setup
    out = run(engine, batch, 0.0)
    assert float(out.stats.prm.useful_flops.sum()) == 0.0 and int(out.stats.prm.forwards) == 0
    # the draft feeds the prompt but its last token (catch-up), then per step the last committed token and every
    # drawn token but the last (writing), and that last one to read the reward (scoring): accepted steps are never
    # fed again, so per row: length - 1 tokens plus one per step
    np.testing.assert_array_equal(out.stats.draft.tokens, out.length - 1 + out.n_steps)


def test_a_self_scoring_draft_needs_a_value_head():
    tok = CharTokenizer()
    cfg = world.config(1, 32).replace(vocab_size=tok.vocab_size)
    lm = world.random_model(cfg, seed=1)
    with pytest.raises(InputError, match="lm\\+value"):
        RSDModels(draft=lm, target=lm, prm=lm, tokenizer=tok, self_scoring=True)
    both = world.random_model(cfg.replace(head="lm+value"), seed=1)
    assert Engine.create(RSDModels(draft=both, target=lm, prm=both, tokenizer=tok, self_scoring=True)).self_scoring


def test_training_examples_are_the_draft_view_with_labels_at_each_step_end():
    from rsd_jax.data import arith
    from rsd_jax.training import lm
    from rsd_jax.training.self_scoring import encode_draft_view

    tok = CharTokenizer()
    problem = arith.generate_problems(1, 5, (3,))[0]
    right = arith.solution_text(problem)
    steps = list(problem.steps)
    wrong = arith.DELIMITER.join([steps[0], steps[1].replace("=", "=1"), *steps[2:]])
    tokens, mask, labels, weights = encode_draft_view(tok, [problem, problem], [right, wrong], 96)
    reference, lm_mask = lm.encode_examples(tok, [problem], 96)  # BOS + prompt + solution + EOS: what RSD feeds
    np.testing.assert_array_equal(tokens[0], reference[0])
    ends = np.flatnonzero((tokens[0] == tok.delimiter_id) | (tokens[0] == tok.eos_ids[0]))
    np.testing.assert_array_equal(np.flatnonzero(mask[0]), ends)  # every step's last token, EOS for the last
    assert len(ends) == len(steps) and labels[0, ends].tolist() == [1.0] * len(steps)
    np.testing.assert_array_equal(weights[0], lm_mask[0])  # a correct solution: all of it, EOS included
    wrong_ends = np.flatnonzero(mask[1])
    expected = [float(x) for x in arith.check_steps(problem, arith.split_steps(wrong))]
    assert labels[1, wrong_ends].tolist() == expected and expected[:2] == [1.0, 0.0]
    assert weights[1].sum() > 0 and np.flatnonzero(weights[1])[-1] == wrong_ends[0]  # only the first (right) step


def test_both_schedules_of_a_self_scoring_draft_commit_the_same(setup):
    import dataclasses

    engine, _, batch, _ = setup
    knobs = Knobs.create(delta=0.5, histogram_bins=SPEC.histogram_bins)
    runs = [jax.device_get(rsd_decode(engine, prompts=batch, knobs=knobs, key=jax.random.key(0),
                                      spec=dataclasses.replace(SPEC, schedule=schedule, quorum=1)))
            for schedule in ("sync", "async")]
    np.testing.assert_array_equal(runs[0].tokens, runs[1].tokens)
    np.testing.assert_array_equal(runs[0].trace.source, runs[1].trace.source)
    np.testing.assert_allclose(runs[0].trace.reward, runs[1].trace.reward, rtol=1e-5, atol=1e-6)
