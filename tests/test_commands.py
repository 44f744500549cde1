"""Every `python -m rsd_jax.X` command: --help; the commands that read a config also --describe and --print-config
(one mechanism, rsd_jax.configlib), and a wrong config key is one line naming it. decode shows its progress on
stderr (not with --quiet) and writes its records to results.jsonl as each batch finishes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from rsd_jax import decode, entry
from rsd_jax.config import RunConfig, TheoryConfig, TrainConfig
from rsd_jax.configlib import build, describe, load_config
from rsd_jax.records import read_records

ROOT = Path(__file__).resolve().parent.parent
PAPER_CONFIG = str(ROOT / "configs" / "paper" / "qwen25_math_1.5b_7b_skywork1.5b.yaml")
COMMANDS = ("decode", "evaluate", "train", "theory", "bench", "capacity", "rehearse", "protocol_check", "convert",
            "merge", "doctor")
#: The commands that read a config: their schema, the flags that pick a config, an override to print, and the
#: config file's keys (with that override) that --print-config must show.
CONFIGURED = {
    "decode": (RunConfig, [], "rsd.delta=0.8", None),
    "evaluate": (RunConfig, [], "rsd.delta=0.8", None),
    "train": (TrainConfig, ["--config", "configs/train_draft.yaml"], "seed=3", "configs/train_draft.yaml"),
    "theory": (TheoryConfig, ["--config", "configs/theory_analytic.yaml"], "mu_target=[0.5]",
               "configs/theory_analytic.yaml"),
    "capacity": (RunConfig, ["--config", PAPER_CONFIG], "rsd.delta=0.8", PAPER_CONFIG),
    "doctor": (RunConfig, [], "rsd.delta=0.8", None),
}


def command(name: str):
    return importlib.import_module(f"rsd_jax.{name}.__main__" if name == "theory" else f"rsd_jax.{name}")


def one_line_error(capsys, rc: int) -> str:
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        command(name).main(["--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m rsd_jax.{name}")


@pytest.mark.parametrize("name", [*CONFIGURED, "rehearse"])
def test_describe_lists_every_key_of_the_schema(name, capsys):
    schema = CONFIGURED[name][0] if name in CONFIGURED else RunConfig
    assert command(name).main(["--describe"]) == 0
    assert capsys.readouterr().out == describe(schema) + "\n"


@pytest.mark.parametrize("name", CONFIGURED)
def test_print_config_shows_the_resolved_config(name, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    schema, flags, override, config_file = CONFIGURED[name]
    assert command(name).main(flags + ["--print-config", override]) == 0
    (printed,) = yaml.safe_load_all(capsys.readouterr().out)
    assert build(schema, printed) == load_config(schema, config_file, [override])


def test_capacity_prints_every_config_it_reads(capsys):
    assert command("capacity").main(["--print-config"]) == 0  # the three paper configs and the single-chip one
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert len(printed) == 4 and all(build(RunConfig, p).models.target.path for p in printed)


def test_rehearse_prints_the_config_its_sections_read(tmp_path, capsys):
    assert command("rehearse").main(["--config", PAPER_CONFIG, "--work", str(tmp_path), "--print-config"]) == 0
    printed = build(RunConfig, yaml.safe_load(capsys.readouterr().out))
    assert printed.models.draft.path == str(tmp_path.absolute() / "draft")
    assert printed.decoding == load_config(RunConfig, PAPER_CONFIG).decoding


@pytest.mark.parametrize("name", CONFIGURED)
def test_a_wrong_config_key_is_one_line_naming_it(name, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    _, flags, override, _ = CONFIGURED[name]
    key, _, value = override.partition("=")
    wrong = key[:-1] + key[-1] * 2  # "rsd.deltaa", "seedd", "mu_targett"
    out = ["--out", str(tmp_path / "out")] if name in ("evaluate", "theory") else []
    err = one_line_error(capsys, command(name).main(flags + out + [f"{wrong}={value}"]))
    assert f"unknown config key {wrong!r}" in err and not (tmp_path / "out").exists()


def test_rehearse_refuses_a_wrong_config_key_before_writing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(PAPER_CONFIG).read_text() + "decodingg: {}\n")
    err = one_line_error(capsys, command("rehearse").main(["write", "--config", str(bad), "--work",
                                                           str(tmp_path / "work")]))
    assert "unknown config key 'decodingg'" in err and not (tmp_path / "work").exists()


# ------------------------------------------------------------------------------------------------ decode
@pytest.fixture
def fake_decoding(monkeypatch, tmp_path):
    """decode on configs/arith_tiny.yaml with its decoding replaced by instant records in batches; returns how many
    records results.jsonl held as each batch was asked for."""
    on_disk = []

    def run_method(engine, items, method, cfg, delta=None, done=frozenset()):
        size = cfg.decoding.batch_size
        for start in range(0, len(items), size):
            on_disk.append(len(read_records(tmp_path / "out" / "results.jsonl")))
            yield [{"uid": i.uid, "question": i.question, "answer": i.answer, "correct": True, "error": None,
                    "steps": [{"source": "draft", "reward": 0.9, "text": "1+1=2", "n_tokens": 2}],
                    "accounting": {"useful_flops_total": 1.0, "target_only_flops": 2.0}}
                   for i in items[start:start + size]]

    monkeypatch.setattr(entry, "run_method", run_method)  # decode starts and decodes through rsd_jax.entry
    monkeypatch.setattr(entry, "load_engine", lambda *a, **k: None)
    monkeypatch.setattr(decode, "start_devices", lambda cfg, config_file: None)
    monkeypatch.chdir(ROOT)
    return on_disk


def test_decode_shows_progress_and_streams_its_records(fake_decoding, tmp_path, capsys):
    args = ["--config", "configs/arith_tiny.yaml", "data.n=6", "decoding.batch_size=2", "--out", str(tmp_path / "out")]
    assert decode.main(args) == 0
    assert fake_decoding == [0, 2, 4]  # each batch was on disk before the next one was decoded
    assert len(read_records(tmp_path / "out" / "results.jsonl")) == 6
    captured = capsys.readouterr()
    assert captured.out.count("── arith-") == 6 and "n_problems 6" in captured.out
    assert "decode: 100%" in captured.err and "6/6" in captured.err  # the bar, on stderr


def test_decode_quiet_shows_no_progress(fake_decoding, tmp_path, capsys):
    args = ["--config", "configs/arith_tiny.yaml", "data.n=4", "decoding.batch_size=2", "--quiet"]
    assert decode.main(args) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "── arith-" not in captured.out and "n_problems 4" in captured.out
