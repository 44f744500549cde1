"""The PRM's view of generated steps against the official protocol (Skywork's prepare_input: each step's text cut at
"\\n\\n", tokenised on its own, then the "\\n\\n" token), unsharded and per data shard of a mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsd_jax import sharding as sh
from rsd_jax.decoding.prm_view import PRMTextView
from rsd_jax.protocol_check import compare, generated_steps
from rsd_jax.qwen_vocabulary import qwen_tokenizer
from rsd_jax.tokenizer import StepTextEncoder

SOLUTION = ("We have $x = 5$.\n\nThen $2x = 10$:\n\n$$y = 2x + 1 = 11.$$\n\nSo the answer is $\\boxed{11}$.\n\n"
            "Done!\n\n\nAnd more")


@pytest.fixture(scope="module")
def qwen():
    return qwen_tokenizer()


def test_the_text_view_is_the_official_protocol_where_the_tables_are_not(qwen):
    counts = compare(qwen, [SOLUTION])
    assert counts.steps == 6 and counts.text_differ == 0
    assert counts.tables_differ >= 2  # "$" + ".\n\n" and "$" + ":\n\n" are generated; "$." and "$:" re-encode as one


def test_text_view_per_data_shard_equals_the_unsharded_view(qwen):
    steps = generated_steps(qwen, SOLUTION) + [[]] + generated_steps(qwen, "One.\n\nTwo")  # 9 rows, one empty
    steps = steps + [[]] * (-len(steps) % 8)
    ids = np.zeros((len(steps), max(map(len, steps))), np.int32)
    for i, s in enumerate(steps):
        ids[i, :len(s)] = s
    lengths = np.asarray([len(s) for s in steps], np.int32)
    encoder = StepTextEncoder(qwen, qwen)
    view = PRMTextView(encode=encoder, width=24)
    plain = jax.device_get(jax.jit(lambda t, n: view(t, n))(jnp.asarray(ids), jnp.asarray(lengths)))
    for i, s in enumerate(steps):
        official = encoder.step_ids(s) if s else []
        assert list(plain[0][i, :plain[1][i]]) == official and not plain[2][i]
    mesh = sh.make_mesh(4, 2)
    rows = jax.sharding.NamedSharding(mesh, jax.P("data"))
    with jax.set_mesh(mesh):
        sharded = jax.device_get(jax.jit(lambda t, n: view(t, n), in_shardings=(rows, rows))(ids, lengths))
    for a, b in zip(plain, sharded):
        np.testing.assert_array_equal(a, b)


def test_a_view_longer_than_its_width_is_flagged(qwen):
    step = qwen.encode("a b c d e f g h i j k l.\n\n")
    view, width, overflow = StepTextEncoder(qwen, qwen)(np.asarray([step]), np.asarray([len(step)]), 5)
    assert overflow[0] and width[0] == 5 and view[0, 4] == 271  # cut, and still read at a delimiter
