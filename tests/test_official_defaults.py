"""The official RSD code's semantics as options: the step delimiter written across two tokens ends a step
(decoding.stop_on_split_delimiter), and the batch-wide patience cut-off (decoding.patience); both against slow host
computations, and the paper configs that turn them on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine_world as world
from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.data.char_tokenizer import SPECIALS, CharTokenizer
from rsd_jax.decoding.prm_view import PRMTables
from reference import HostTables, reference_rsd
from rsd_jax.decoding.rsd import rsd_decode
from rsd_jax.decoding.rsd_state import DRAFT, TARGET, Knobs
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine, RSDModels
from rsd_jax.errors import ConfigError
from rsd_jax.summary import summarize
from rsd_jax.tokenizer import StepTextEncoder, split_delimiter_table, split_head_ids

ROOT = Path(__file__).resolve().parents[1]
SPEC = DecodeSpec(max_new_tokens=40, max_steps=40, max_step_tokens=12, chunk=8, stop_on_split_delimiter=True)
LENGTHS = [5, 11, 8, 6]
# engine_world's vocabulary, with tokens whose text ends with "\n" (and the PRM's ids of their text before it) and
# tokens whose text starts with "\n": the tokens the random models repeat most, so that steps end that way
SPLIT_HEADS = {4: (), 6: (44,), 20: (47,), 31: (44,), 36: (45, 46), 37: (), 41: ()}
SPLIT_STARTS = {3, 4, 6, 20, 26, 37, 41}


def world_split_tables():
    tables, prm_tables, host = world.tables()
    ends = np.zeros((1, world.VOCAB), bool)
    ends[0, list(SPLIT_HEADS)] = True
    starts = np.zeros((1, world.VOCAB), bool)
    starts[0, list(SPLIT_STARTS)] = True
    tables = dataclasses.replace(tables, split_ends=jnp.asarray(ends), split_starts=jnp.asarray(starts))
    ids = sorted(world.STOP_TEXT)
    width = max(map(len, world.STOP_TEXT.values()))
    text_ids = np.zeros((len(ids), width), np.int32)
    for r, t in enumerate(ids):
        text_ids[r, :len(world.STOP_TEXT[t])] = world.STOP_TEXT[t]
    prm_tables = PRMTables.build(world.VOCAB, ids, text_ids, [len(world.STOP_TEXT[t]) for t in ids], world.DELIMITER,
                                 [world.EOS], split=(ends, starts, {(0, t): list(h) for t, h in SPLIT_HEADS.items()}))
    host = dataclasses.replace(host, split_ends=(frozenset(SPLIT_HEADS),), split_starts=(frozenset(SPLIT_STARTS),),
                               split_head={(0, t): h for t, h in SPLIT_HEADS.items()}, split_stop=True)
    return tables, prm_tables, host


def split_ended(steps: list[list[int]], host: HostTables) -> int:
    """How many steps end where their last two tokens write the delimiter (host side)."""
    return sum(1 for s in steps if len(s) >= 2 and host.split_at(s[-2], s[-1]) is not None)


def steps_of(out, i: int) -> list[list[int]]:
    ends = [int(out.prompt_length[i])] + [int(e) for e in out.trace.end[i, :out.n_steps[i]]]
    return [list(map(int, out.tokens[i, a:b])) for a, b in zip(ends, ends[1:])]


@pytest.fixture(scope="module")
def split_world():
    draft, target, prm = world.models()
    tables, prm_tables, host = world_split_tables()
    batch, ids, prm_ids = world.prompts(LENGTHS, t_cap=16 + SPEC.max_new_tokens, tp_cap=200)
    engine = Engine(draft=draft, target=target, prm=prm, tables=tables, prm_view=prm_tables)
    return engine, host, batch, ids, prm_ids


@pytest.mark.parametrize("gamma, schedule", [(0, "sync"), (3, "sync"), (0, "async")])
def test_split_delimiter_ends_steps_as_the_host_reference_does(split_world, gamma, schedule):
    """Greedy RSD with steps ended by the delimiter split over two tokens equals the host reference (the target's
    steps written alone, by speculative decoding, or token by token in the asynchronous loop); the PRM reads such a
    step's head, not its last two tokens."""
    engine, host, batch, ids, prm_ids = split_world
    spec = SPEC.replace(speculative_gamma=gamma, schedule=schedule, quorum=2, pass_rows=2)
    out = jax.device_get(rsd_decode(engine, prompts=batch, knobs=Knobs.create(delta=0.5), key=jax.random.key(0),
                                    spec=spec))
    by_source = {DRAFT: 0, TARGET: 0}
    for i in range(len(LENGTHS)):
        ref = reference_rsd(engine.draft, engine.target, engine.prm, ids[i], prm_ids[i], host, delta=0.5,
                            max_new_tokens=spec.max_new_tokens, max_steps=spec.max_steps,
                            max_step_tokens=spec.max_step_tokens, capacity=256)
        n = int(out.n_steps[i])
        assert list(map(int, out.tokens[i, :out.length[i]])) == ref.tokens
        assert list(out.trace.source[i, :n]) == ref.sources and list(out.trace.end[i, :n]) == ref.ends
        np.testing.assert_allclose(out.trace.reward[i, :n], ref.rewards, rtol=1e-5, atol=1e-6)
        for step, source in zip(steps_of(out, i), ref.sources):
            by_source[source] += split_ended([step], host)
    assert by_source[DRAFT] > 0 and by_source[TARGET] > 0, f"the test needs split-ended steps of both: {by_source}"


def test_without_the_option_the_split_does_not_end_a_step(split_world):
    engine, host, batch, *_ = split_world
    out = jax.device_get(rsd_decode(engine, prompts=batch, knobs=Knobs.accept_all(SPEC), key=jax.random.key(0),
                                    spec=SPEC.replace(stop_on_split_delimiter=False)))
    steps = [s for i in range(len(LENGTHS)) for s in steps_of(out, i)]
    inside = sum(1 for s in steps for a, b in zip(s[:-1], s[1:]) if host.split_at(a, b) is not None)
    assert inside > 0  # such pairs now sit inside steps: only a token containing the delimiter ends one


def char_world(newline_id: int):
    """The embedded char tokenizer's specials, 44 characters with "\\n" at id `newline_id`, over engine_world's
    random models (one vocabulary of 48): Engine.create builds every table from the tokenizer."""
    others = [c for c in "0123456789+-*=.? ABCDEFGHIJKLMNOPQRSTUVWXYZab" if c != "\n"]
    chars = others[:newline_id - len(SPECIALS)] + ["\n"] + others[newline_id - len(SPECIALS):]
    tok = CharTokenizer("".join(chars[:world.VOCAB - len(SPECIALS)]))
    assert tok.vocab_size == world.VOCAB and tok.encode("\n") == [newline_id]
    draft, target, prm = world.models()
    return tok, Engine.create(RSDModels(draft=draft, target=target, prm=prm, tokenizer=tok))


def test_char_tokenizer_split_stop_reads_steps_as_the_official_text_protocol():
    """With the char tokenizer ("\\n" one token, "\\n\\n" another), steps end at "\\n" + "\\n" and at "\\n" + the
    delimiter token, and the in-graph PRM view of such a step is the official protocol's (the text cut at its
    first "\\n\\n", re-encoded), run on the host by the reference."""
    tok, engine = char_world(37)
    table = split_delimiter_table(tok)
    assert set(np.flatnonzero(table.ends[0])) == set(np.flatnonzero(table.starts[0])) == {37, tok.delimiter_id}
    assert split_head_ids(tok)[(0, 37)] == []
    host = HostTables(stop_ids=frozenset([tok.delimiter_id]), eos_ids=frozenset(tok.eos_ids),
                      prm_text={tok.delimiter_id: ()}, delimiter=tok.delimiter_id,
                      split_ends=(frozenset({37, 3}),), split_starts=(frozenset({37, 3}),), split_stop=True)
    batch, ids, prm_ids = world.prompts(LENGTHS, t_cap=16 + SPEC.max_new_tokens, tp_cap=200)
    out = jax.device_get(rsd_decode(engine, prompts=batch, knobs=Knobs.create(delta=0.5), key=jax.random.key(0),
                                    spec=SPEC))
    protocol = StepTextEncoder(tok, tok).step_ids
    split = compared = 0
    for i in range(len(LENGTHS)):
        ref = reference_rsd(engine.draft, engine.target, engine.prm, ids[i], prm_ids[i], host, delta=0.5,
                            max_new_tokens=SPEC.max_new_tokens, max_steps=SPEC.max_steps,
                            max_step_tokens=SPEC.max_step_tokens, capacity=256, prm_view=protocol)
        n = int(out.n_steps[i])
        assert list(map(int, out.tokens[i, :out.length[i]])) == ref.tokens
        assert list(out.trace.source[i, :n]) == ref.sources
        steps = steps_of(out, i)
        for step in steps:
            assert "\n\n" not in tok.decode(step)[:-2], "a step runs past the delimiter"
        if any(t in (tok.pad_id, tok.bos_id) for s in steps for t in s):
            continue  # random models draw PAD / BOS, whose empty text the protocol drops (trained models never do)
        np.testing.assert_allclose(out.trace.reward[i, :n], ref.rewards, rtol=1e-5, atol=1e-6)
        split += split_ended(steps, host)
        compared += 1
    assert compared >= 3 and split > 0, "the test needs steps ended by a split delimiter"


def test_split_tables_of_a_bpe_vocabulary():
    from rsd_jax.qwen_vocabulary import qwen_tokenizer

    tok = qwen_tokenizer()
    table = split_delimiter_table(tok)
    ends, starts = set(np.flatnonzero(table.ends[0])), set(np.flatnonzero(table.starts[0]))
    newline = tok.encode("\n")[0]
    assert newline in ends and newline in starts
    for text in (".\n", ":\n", "\n"):
        (t,) = tok.encode(text)
        assert t in ends
    assert table.split_at(tok.encode(".\n")[0], newline) == 0 and table.split_at(newline, tok.encode("The")[0]) is None
    assert all(tok.token_text(int(t)).endswith("\n") for t in ends)
    assert all(tok.token_text(int(t)).startswith("\n") for t in starts)


def test_patience_cuts_every_row_as_the_official_loop_does():
    """Rows ending at different steps (many EOS tokens): with patience p, once p - 1 iterations in a row have seen
    no row finish, every running row writes one more step and ends, marked cut off (the official rule, computed
    on the host from each row's own number of steps)."""
    draft, target, prm = world.models()
    tables, prm_tables, _ = world.tables()
    tables = dataclasses.replace(tables, eos=jnp.zeros_like(tables.eos).at[30:].set(True))
    batch, _, _ = world.prompts([6, 9, 7, 4, 5, 8], t_cap=16 + 60, tp_cap=300, seed=5)
    engine = Engine(draft=draft, target=target, prm=prm, tables=tables, prm_view=prm_tables)
    spec = DecodeSpec(max_new_tokens=60, max_steps=60, max_step_tokens=4, chunk=8)

    def run(patience: int):
        return jax.device_get(rsd_decode(engine, prompts=batch, knobs=Knobs.create(delta=0.5), key=jax.random.key(0),
                                         spec=spec.replace(patience=patience)))

    free = run(0)
    own = [int(n) for n in free.n_steps]  # each row's steps without the cut-off
    assert not free.stats.cut_off.any() and len(set(own)) > 2
    cuts = 0
    for patience in (2, 3):
        expected_steps, expected_cut = official_patience(own, patience)
        out = run(patience)
        assert [int(n) for n in out.n_steps] == expected_steps
        assert out.stats.cut_off.tolist() == expected_cut
        for i, n in enumerate(expected_steps):  # the rows' steps are those of the free run, up to the cut
            end = int(free.trace.end[i, n - 1])
            assert int(out.length[i]) == end
            np.testing.assert_array_equal(out.tokens[i, :end], free.tokens[i, :end])
            np.testing.assert_array_equal(out.trace.source[i, :n], free.trace.source[i, :n])
        cuts += sum(expected_cut)
    assert cuts > 0, "the test needs rows that are cut off"


def official_patience(steps: list[int], patience: int) -> tuple[list[int], list[bool]]:
    """The official loop's rule on rows that would take steps[i] steps each: round t writes a step for every
    running row; a row ends after its own last step, or after round t when num_unchanged >= patience - 1, where
    num_unchanged counts the rounds before t in a row in which no row finished."""
    running, unchanged, t = set(range(len(steps))), 0, 0
    taken, cut = list(steps), [False] * len(steps)
    while running:
        finished = {i for i in running if steps[i] == t + 1}
        for i in running - finished:
            if unchanged >= patience - 1:
                taken[i], cut[i] = t + 1, True
                finished.add(i)
        running -= finished
        unchanged = 0 if finished else unchanged + 1
        t += 1
    return taken, cut


def test_cut_off_rows_are_counted_in_the_summary():
    record = lambda cut: {"correct": True, "steps": [], "accounting": {  # noqa: E731
        "useful_flops_total": 1.0, "target_only_flops": 2.0, "cut_off": cut}}
    assert summarize([record(True), record(False), record(True)])["n_cut_off"] == 2
    assert "n_cut_off" not in summarize([record(False)])


def test_the_paper_configs_use_the_official_semantics():
    configs = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
    assert len(configs) == 14  # Table 2 (8), B.2 (2), B.1, Table 4 (2) and the one-chip int8 copy of the main setting
    for path in configs:
        cfg = load_config(RunConfig, path)
        spec = cfg.decoding.spec(cfg.rsd)
        assert spec.budget_includes_prompt and spec.max_new_tokens == 4096 and spec.max_steps == 100
        assert spec.patience == 5 and spec.stop_on_split_delimiter, path.name
    embedded = load_config(RunConfig, ROOT / "configs" / "arith_tiny.yaml").decoding.spec()
    assert embedded.patience == 0 and not embedded.stop_on_split_delimiter
    with pytest.raises(ConfigError, match="decoding.patience"):
        load_config(RunConfig, ROOT / "configs" / "arith_tiny.yaml", ["decoding.patience=-1"])
