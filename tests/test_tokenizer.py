"""Tokenizers: the char tokenizer, step-stop sets, and the PRM protocol tables on the real Qwen vocabulary."""

from __future__ import annotations

import pytest

from rsd_jax.data import arith
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.errors import InputError
from rsd_jax.tokenizer import (build_prm_stop_table, prm_delimiter_id, prm_prompt_ids, prm_step_ids,
                               qwen_tokenizer, step_stop_ids)


def test_char_tokenizer_round_trip_and_one_delimiter_token():
    tok = CharTokenizer()
    for p in arith.generate_problems(50, seed=3):
        text = arith.format_prompt(p) + arith.solution_text(p)
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert ids.count(tok.delimiter_id) == text.count("\n\n")
    assert step_stop_ids(tok) == (tok.delimiter_id,)
    table = build_prm_stop_table(tok)
    assert table.delimiter_id == tok.delimiter_id and table.text_len.tolist() == [0]
    assert CharTokenizer.from_dict(tok.to_dict()).encode("Add 7.") == tok.encode("Add 7.")
    with pytest.raises(InputError, match="'~'"):
        tok.encode("x~y")


@pytest.fixture(scope="module")
def qwen():
    return qwen_tokenizer()


def test_qwen_merged_delimiters_are_step_stops(qwen):
    stops = set(step_stop_ids(qwen))
    for text in (".\n\n", "\n\n", ":\n\n", ")\n\n"):
        ids = qwen.encode(text)
        assert len(ids) == 1 and ids[0] in stops, text
    assert qwen.token_text(prm_delimiter_id(qwen)) == "\n\n"
    assert set(qwen.eos_ids) == {qwen.encode("<|endoftext|>")[0], qwen.encode("<|im_end|>")[0]}


def _table_view(qwen, step: str) -> list[int]:
    """What the jitted loop feeds the PRM for a model that generated encode(step + "\n\n")."""
    table = build_prm_stop_table(qwen)
    row_of = {int(t): r for r, t in enumerate(table.stop_ids)}
    generated = qwen.encode(step + "\n\n")
    assert generated[-1] in row_of, "the step must end on a step-stop token"
    r = row_of[generated[-1]]
    return generated[:-1] + table.text_ids[r, :table.text_len[r]].tolist() + [table.delimiter_id]


@pytest.mark.parametrize("step", ["The answer is 10.", "First, compute 3 + 4 = 7:", "Then multiply: 7 * 2 = 14;",
                                  "So the total is $14$", "n = 12", "Let n be the number."])
def test_table_reproduces_the_host_protocol(qwen, step):
    assert _table_view(qwen, step) == prm_step_ids(qwen, step)


def test_where_bpe_merges_differ_the_text_is_still_the_same(qwen):
    # alone, "$." is one token; generated before "\n\n" it is "$" + ".\n\n": the PRM then reads "$", "."
    step = "We have $x = 5$."
    view, host = _table_view(qwen, step), prm_step_ids(qwen, step)
    assert view != host and qwen.decode(view) == qwen.decode(host)


def test_prm_prompt(qwen):
    assert prm_prompt_ids(qwen, "What is 2+2?") == qwen.encode("What is 2+2?\n")
    tok = CharTokenizer()
    assert prm_prompt_ids(tok, "Add 7.") == [tok.bos_id] + tok.encode("Add 7.\n")
