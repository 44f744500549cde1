"""Never lose or mix a result (issue 23): every bad input, output location, interruption and resume of the
commands gives one clear line, a non-zero exit where it is an error, no record lost and no record mixed.

Most command tests run in-process with the decoding replaced by a fake that yields well-formed records
(`fake_run_method`): they test the edges (locations, logs, identities, exits), not the loop. The subprocess tests
at the end run the real commands on tiny random models: the README's stdin example, the signal watchdog, and
evaluate killed at random moments then resumed, against an uninterrupted run. That last one kills 3 times by
default (SIGKILL, SIGTERM, SIGINT); RSD_RELIABILITY_KILLS=20 runs the issue's 20 random kills.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from rsd_jax import bench, capacity, convert, decode, entry, evaluate, evaluation_runs, outputs, records as records_module, runs, train
from rsd_jax.configlib import load_config
from rsd_jax.config import RunConfig
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.decoding.acceptance import rule_of_rewards
from rsd_jax.errors import CheckpointError, ConfigError, NumericalError, OutputError, RSDError
from rsd_jax.models import Model, ModelConfig
from rsd_jax.records import RecordLog, read_records
from rsd_jax.signals import Interrupted, interruptible, writing
import rsd_jax.theory.__main__ as theory_command
from rsd_jax.theory.__main__ import main as theory_main
from rsd_jax.weights import restore_model, save_model

ROOT = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("RSD_RELIABILITY_KILLS", "3"))


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny random orbax models with the char tokenizer (and a PRM whose value head is NaN): the overrides."""
    root = tmp_path_factory.mktemp("tiny")
    tok = CharTokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4,
                      num_kv_heads=2, head_dim=8)
    for name, c, seed in (("draft", cfg, 1), ("target", cfg.replace(num_layers=2), 2),
                          ("prm", cfg.replace(head="value"), 3)):
        save_model(Model.init(c, seed), root / name)
        tok.save(root / name / "char_tokenizer.json")
    prm = Model.init(cfg.replace(head="value"), 3)
    params = prm.pure_dict()
    params["v_head"] = jax.tree.map(lambda a: np.full(a.shape, np.nan, a.dtype), params["v_head"])
    save_model(Model.from_pure_dict(prm.config, params), root / "nan_prm")
    tok.save(root / "nan_prm" / "char_tokenizer.json")
    return root


def model_args(root: Path, prm: str = "prm") -> list[str]:
    return [f"models.draft.path={root / 'draft'}", f"models.target.path={root / 'target'}",
            f"models.prm.path={root / prm}"]


def fake_run_method(engine, items, method, cfg, delta=None, done=frozenset(), reward=0.9, error=None,
                    fail_after=None):
    """run_method's contract without a model: fixed batches over `items`, those all in `done` skipped."""
    bs = cfg.decoding.batch_size
    for n, start in enumerate(range(0, len(items), bs)):
        chunk = items[start:start + bs]
        if all(i.uid in done for i in chunk):
            continue
        if fail_after is not None and n >= fail_after:
            raise fail_after_error[0]
        yield [{"uid": i.uid, "method": method, "question": i.question, "prompt": i.prompt, "text": "1+1=2",
                "token_ids": [1, 2], "steps": [{"source": "draft", "reward": reward, "text": "1+1=2", "n_tokens": 2}],
                "accounting": {"useful_flops_total": 1.0, "target_only_flops": 2.0, "executed_flops": 1.5,
                               "tokens_processed": {"draft": 2}},
                "answer": i.answer, "correct": True, "level": i.level, "error": error, "delta": 0.7}
               for i in chunk]


fail_after_error = [KeyboardInterrupt()]


@pytest.fixture
def fake(monkeypatch):
    """decode and evaluate with the fake decoding and no model loading; returns a dict to set its options."""
    options = {}
    monkeypatch.setattr(evaluation_runs, "tqdm", functools.partial(evaluation_runs.tqdm, disable=True))  # stderr: errors only
    no_bar = functools.partial(decode.Progress, quiet=True)
    monkeypatch.setattr(decode, "Progress", lambda total, done, quiet: no_bar(total, done))

    def run(*args, **kwargs):
        return fake_run_method(*args, **{**kwargs, **options})

    for module in (entry, evaluation_runs):  # decode decodes through rsd_jax.entry, evaluate through evaluation_runs
        monkeypatch.setattr(module, "run_method", run)
    for module in (entry, evaluate):  # decode loads through rsd_jax.entry
        monkeypatch.setattr(module, "load_engine", lambda *a, **k: None)
    monkeypatch.setattr(evaluate, "start_devices", lambda mesh, kv_heads=(): None)
    monkeypatch.setattr(decode, "start_devices", lambda cfg, config_file: None)
    return options


def one_line_error(capsys, code: int, rc: int, contains: str = "") -> str:
    assert rc == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert contains in err, err
    return err


def no_work(monkeypatch):
    """Fails the test if a command loads a model or starts decoding."""
    def boom(*a, **k):
        raise AssertionError("work started before the output location was checked")

    for module in (entry, evaluate):  # decode loads through rsd_jax.entry
        monkeypatch.setattr(module, "load_engine", boom)
        monkeypatch.setattr(module, "load_items", boom)


def read_only(monkeypatch, folder: Path) -> None:
    """Makes `folder` unwritable: chmod for a normal user; root ignores modes, so the write probe fails instead."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return

    def probe(path):
        if Path(path).resolve() == folder.resolve() or folder.resolve() in Path(path).resolve().parents:
            raise PermissionError(errno.EACCES, "Permission denied")

    real = outputs._probe_write
    monkeypatch.setattr(outputs, "_probe_write", lambda path: probe(path) or real(path))


def full_disk_after(monkeypatch, n_writes: int) -> None:
    """The (n_writes + 1)-th record write stops half-way with ENOSPC, as a full disk does."""
    calls = {"n": 0}
    real = records_module._write_all

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] > n_writes:
            os.write(fd, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(records_module, "_write_all", write)


def lines_of(path: Path) -> list[dict]:
    """Every line of a JSONL file parsed (fails on a torn or bad line)."""
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# ------------------------------------------------------------------------------------------------ record logs
def _records(uids):
    return [{"uid": u, "method": "rsd", "steps": [], "x": "é" * (ord(u) % 3)} for u in uids]


def test_a_log_cut_at_any_byte_resumes_to_the_same_records(tmp_path):
    path = tmp_path / "rsd.jsonl"
    log = RecordLog(path)
    for batch in (["a", "b"], ["c"], ["d", "e"]):
        log.append(_records(batch))
    whole = path.read_bytes()
    full = read_records(path)
    for cut in range(len(whole) + 1):
        path.write_bytes(whole[:cut])
        log = RecordLog(path)  # cuts the torn tail
        assert [r["uid"] for r in log.records] == [r["uid"] for r in full][:len(log.records)]
        assert path.read_bytes() == whole[:path.stat().st_size] and (cut == 0 or path.read_bytes().endswith(b"\n")
                                                                      or path.stat().st_size == 0)
        log.append(_records(["a", "b", "c", "d", "e"]))  # a resume decodes the rest (and again what it has)
        assert lines_of(path) == full


def test_a_bad_line_before_the_last_is_one_clear_error(tmp_path):
    path = tmp_path / "rsd.jsonl"
    path.write_text('{"uid": "a"}\nnot json\n{"uid": "b"}\n')
    with pytest.raises(RSDError, match="line 2 is not a JSON record"):
        RecordLog(path)


def test_a_full_disk_undoes_the_half_written_batch(tmp_path, monkeypatch):
    log = RecordLog(tmp_path / "rsd.jsonl")
    log.append(_records(["a"]))
    full_disk_after(monkeypatch, 0)
    with pytest.raises(OutputError, match="No space left on device; the 1 records written before are kept"):
        log.append(_records(["b", "c"]))
    assert [r["uid"] for r in lines_of(log.path)] == ["a"]


def test_signals_wait_for_a_write_in_progress():
    with pytest.raises(Interrupted) as info, interruptible("test", lambda: "kept"):
        with writing():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run: the signal waits for the end of the write
            done = True
    assert done and info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are restored


# ------------------------------------------------------------------------------------------------ output locations
@pytest.mark.parametrize("case", ["file", "under_a_file", "read_only", "not_creatable"])
def test_a_bad_out_is_one_line_before_any_work(case, tmp_path, monkeypatch, capsys, tiny):
    (tmp_path / "file").write_text("x")
    out = {"file": tmp_path / "file", "under_a_file": tmp_path / "file" / "out",
           "read_only": tmp_path / "ro" / "out", "not_creatable": Path("/proc/rsd_jax_test/out")}[case]
    if case == "read_only":
        read_only(monkeypatch, tmp_path / "ro")
    expected = {"file": "is a file, not a folder", "under_a_file": "is a file, not a folder",
                "read_only": "not writable", "not_creatable": "cannot be created"}[case]
    no_work(monkeypatch)
    monkeypatch.setattr(bench, "bench_decode", lambda quick: pytest.fail("benchmarked before checking --out"))
    monkeypatch.setattr(theory_command, "run_analytic",
                        lambda cfg, out: pytest.fail("theory ran before checking --out"))
    one_line_error(capsys, 2, decode.main(model_args(tiny) + ["--out", str(out)]), expected)
    one_line_error(capsys, 2, evaluate.main(model_args(tiny) + ["--out", str(out)]), expected)
    one_line_error(capsys, 2, theory_main(["--out", str(out)]), expected)
    bench_out = tmp_path if case == "file" else out / "bench.json"  # bench writes a file: a folder is wrong
    one_line_error(capsys, 2, bench.main(["--out", str(bench_out), "--only", "decode"]),
                   "is a folder, not a file" if case == "file" else expected)


def test_an_atomic_write_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    path = outputs.write_text_atomic(tmp_path / "summary.json", "old\n")

    def full(f, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "_write_file", full)
    with pytest.raises(OutputError, match="No space left on device"):
        outputs.write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ------------------------------------------------------------------------------------------------ decode
def test_decode_writes_as_it_goes_and_a_full_disk_keeps_the_good_records(fake, tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    full_disk_after(monkeypatch, 2)  # two batches of two problems are written, the third fails
    rc = decode.main(model_args(tiny) + ["data.n=6", "decoding.batch_size=2", "--out", str(out), "--quiet"])
    one_line_error(capsys, 2, rc, "No space left on device; the 4 records written before are kept")
    assert len(lines_of(out / "results.jsonl")) == 4
    monkeypatch.undo()
    fake_again(monkeypatch)
    assert decode.main(model_args(tiny) + ["data.n=6", "decoding.batch_size=2", "--out", str(out), "--quiet"]) == 0
    assert [r["uid"] for r in lines_of(out / "results.jsonl")] == [f"arith-v2-12345-{i}" for i in range(6)]
    assert "n_problems 6 | n_errors 0 | n_nonfinite_rewards 0" in capsys.readouterr().out


def fake_again(monkeypatch):
    for module in (entry, evaluation_runs):  # decode decodes through rsd_jax.entry, evaluate through evaluation_runs
        monkeypatch.setattr(module, "run_method", fake_run_method)
    for module in (entry, evaluate):  # decode loads through rsd_jax.entry
        monkeypatch.setattr(module, "load_engine", lambda *a, **k: None)
    monkeypatch.setattr(evaluate, "start_devices", lambda mesh, kv_heads=(): None)
    monkeypatch.setattr(decode, "start_devices", lambda cfg, config_file: None)


def test_decode_resumes_its_own_run_and_refuses_another(fake, tiny, tmp_path, capsys):
    args = model_args(tiny) + ["data.n=3", "decoding.batch_size=1", "--out", str(tmp_path / "d"), "--quiet"]
    assert decode.main(args) == 0 and decode.main(args) == 0  # the second run resumes: nothing is doubled
    assert len(lines_of(tmp_path / "d" / "results.jsonl")) == 3
    capsys.readouterr()
    one_line_error(capsys, 2, decode.main(args + ["rsd.delta=0.5"]), "rsd.delta: 0.7 there, 0.5 now")
    assert decode.main(args + ["rsd.delta=0.5", "--new-run"]) == 0
    assert f"--new-run: writing into {tmp_path / 'd-2'}" in capsys.readouterr().out
    assert len(lines_of(tmp_path / "d-2" / "results.jsonl")) == 3
    # a run that stopped on a bad input before its first record does not hold its folder
    fresh = model_args(tiny) + ["data.n=3", "--out", str(tmp_path / "f"), "--quiet"]
    one_line_error(capsys, 2, decode.main(fresh + ["data.source=prompts", "data.prompts_file=/no/such/file"]),
                   "prompts file not found")
    assert decode.main(fresh) == 0 and len(lines_of(tmp_path / "f" / "results.jsonl")) == 3


def test_non_finite_rewards_are_loud_even_with_quiet_and_fail_with_strict(fake, tiny, tmp_path, capsys):
    fake.update(reward=float("nan"), error="non-finite values in PRM reward")
    args = model_args(tiny) + ["data.n=2", "--quiet"]
    assert decode.main(args) == 0
    captured = capsys.readouterr()
    assert "n_errors 2 | n_nonfinite_rewards 2" in captured.out
    assert captured.err.strip() == ("warning: 2 of 2 records have an error; 2 of 2 records have non-finite PRM "
                                    "rewards (see each record's error and steps)")
    one_line_error(capsys, 3, decode.main(args + ["--strict"]), "--strict: 2 of 2 records have an error")
    out = tmp_path / "e"
    one_line_error(capsys, 3, evaluate.main(model_args(tiny) + ["data.n=2", "--out", str(out), "--strict"]),
                   "rsd: 2 of 2 records have an error")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rsd"]["n_nonfinite_rewards"] == 2 and summary["target"]["n_errors"] == 2
    assert "| 2 / 2 |" in (out / "summary.md").read_text()


@pytest.mark.parametrize("command", [decode, evaluate])
@pytest.mark.parametrize("stop, code", [(KeyboardInterrupt(), 130), (Interrupted(signal.SIGTERM), 143)])
def test_an_interruption_is_one_line_and_keeps_the_files(command, stop, code, fake, tiny, tmp_path, capsys):
    fake.update(fail_after=1)
    fail_after_error[0] = stop
    out = tmp_path / "out"
    rc = command.main(model_args(tiny) + ["data.n=4", "decoding.batch_size=2", "--out", str(out)])
    name = "SIGINT" if code == 130 else "SIGTERM"
    err = one_line_error(capsys, code, rc, f"interrupted by {name}; the records written so far are kept in {out}")
    assert err.startswith(f"rsd_jax.{command.__name__.split('.')[-1]}:")
    log = out / ("results.jsonl" if command is decode else "rsd.jsonl")
    assert len(lines_of(log)) == 2


# ------------------------------------------------------------------------------------------------ evaluate resume
def test_evaluate_resume_refuses_a_changed_run_and_allows_what_does_not_change_results(fake, tiny, tmp_path,
                                                                                          capsys):
    out = tmp_path / "e"
    base = model_args(tiny) + ["decoding.batch_size=2", "--out", str(out)]
    assert evaluate.main(base + ["data.n=4"]) == 0
    assert evaluate.main(base + ["data.n=4"]) == 0  # the same run twice: every problem counted once
    assert json.loads((out / "summary.json").read_text())["rsd"]["n_problems"] == 4
    capsys.readouterr()
    for change, key in (("rsd.delta=0.5", "rsd.delta: 0.7 there, 0.5 now"),
                        ("decoding.batch_size=4", "decoding.batch_size: 2 there, 4 now"),
                        ("decoding.temperature=1.0", "decoding.temperature")):
        one_line_error(capsys, 2, evaluate.main(base + ["data.n=4", change]), key)
    # more problems, another threshold, another output path to the same folder: the same run, resumed
    assert evaluate.main(base + ["data.n=6", "rsd.thresholds=[0.3]", "output=elsewhere"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rsd"]["n_problems"] == 6 and summary["rsd@0.3"]["n_problems"] == 6
    for name in ("rsd", "target", "draft", "rsd@0.3"):
        uids = [r["uid"] for r in lines_of(out / f"{name}.jsonl")]
        assert len(uids) == len(set(uids)) == 6
    # a model replaced in place is another run; the same model at another path is not
    moved = tmp_path / "prm_copy"
    shutil.copytree(tiny / "prm", moved, copy_function=shutil.copy2)
    assert evaluate.main(base + ["data.n=6", f"models.prm.path={moved}"]) == 0
    config = json.loads((moved / "model_config.json").read_text())
    (moved / "model_config.json").write_text(json.dumps(config) + " ")
    one_line_error(capsys, 2, evaluate.main(base + ["data.n=6", f"models.prm.path={moved}"]), "models.prm: 'digest")
    assert evaluate.main(base + ["data.n=6", f"models.prm.path={moved}", "--new-run"]) == 0
    assert (tmp_path / "e-2" / "run.json").is_file()


def test_evaluate_repairs_a_torn_last_line_and_never_glues_records(fake, tiny, tmp_path):
    args = model_args(tiny) + ["data.n=5", "decoding.batch_size=2", "--out", str(tmp_path / "e")]
    assert evaluate.main(args) == 0
    path = tmp_path / "e" / "rsd.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 30])  # the last record torn in the middle
    assert evaluate.main(args) == 0 and evaluate.main(args) == 0

    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]

    assert timeless(lines_of(path)) == timeless(json.loads(line) for line in data.decode().splitlines())


def test_a_changed_problem_under_the_same_uid_is_refused(fake, tiny, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("1+1\n2+2\n")
    args = model_args(tiny) + ["data.source=prompts", f"data.prompts_file={prompts}", "--out", str(tmp_path / "e")]
    assert evaluate.main(args) == 0
    prompts.write_text("3+3\n2+2\n")
    capsys.readouterr()
    one_line_error(capsys, 2, evaluate.main(args), "holds prompt-0 with another prompt")


def test_an_evaluate_summary_on_a_full_disk_keeps_the_records(fake, tiny, tmp_path, monkeypatch, capsys):
    args = model_args(tiny) + ["data.n=2", "--out", str(tmp_path / "e")]
    real = outputs._write_file

    def full_at_the_summary(f, text):
        if "n_problems" in text:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, text)

    monkeypatch.setattr(outputs, "_write_file", full_at_the_summary)
    one_line_error(capsys, 2, evaluate.main(args), "cannot write")
    assert len(lines_of(tmp_path / "e" / "rsd.jsonl")) == 2 and not (tmp_path / "e" / "summary.json").exists()
    monkeypatch.setattr(outputs, "_write_file", real)
    assert evaluate.main(args) == 0 and json.loads((tmp_path / "e" / "summary.json").read_text())


# ------------------------------------------------------------------------------------------------ other commands
def test_theory_refuses_bad_distributions_and_keeps_its_summary_on_a_full_disk(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "t")
    one_line_error(capsys, 2, theory_main(["--out", out, "discrete_probs=[0.1, 0.2, 0.2, 0.3, 0.1]"]),
                   "discrete_probs must be non-negative and sum to 1")
    one_line_error(capsys, 2, theory_main(["--out", out, "beta=[[0, 2]]"]), "beta[0] must be [a, b] with a > 0")
    one_line_error(capsys, 2, theory_main(["--out", out, "beta=[[2]]"]), "beta[0] must be [a, b]")
    monkeypatch.setattr(theory_command, "run_analytic", lambda cfg, out: {"fake": 1})
    monkeypatch.setattr(outputs, "_write_file", lambda f, text: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    one_line_error(capsys, 2, theory_main(["--out", out]), "No space left on device")


def test_theory_reports_results_with_errors_or_non_finite_rewards(tmp_path, monkeypatch, capsys):
    from rsd_jax.theory import decoded

    class Step:
        source, reward = "draft", float("nan")

    class Result:
        steps, error = (Step(),), "non-finite values in PRM reward"

    monkeypatch.setattr(decoded, "_generate", lambda *a, **k: [Result(), Result()])
    def run_analytic(cfg, out):
        (out / "report.md").write_text("report\n")
        return {"n": len(decoded.generate())}

    monkeypatch.setattr(theory_command, "run_analytic", run_analytic)
    assert theory_main(["--out", str(tmp_path)]) == 0
    health = json.loads((tmp_path / "summary.json").read_text())["health"]
    assert health == {"n_results": 2, "n_errors": 2, "n_nonfinite_rewards": 2}
    captured = capsys.readouterr()
    assert "decoded 2 results: 2 with an error, 2 with non-finite rewards" in captured.out
    assert captured.err.startswith("warning: 2 of 2 records have an error")


def test_bench_prints_its_results_when_the_disk_is_full(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "bench_decode", lambda quick: {"batch_1": {"ratio_vs_hf": 1.0}})
    monkeypatch.setattr(outputs, "_write_file", lambda f, text: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    assert bench.main(["--out", str(tmp_path / "b.json"), "--only", "decode"]) == 2
    captured = capsys.readouterr()
    assert '"ratio_vs_hf": 1.0' in captured.out and "No space left on device" in captured.err


def test_capacity_refuses_unknown_flags(capsys):
    with pytest.raises(SystemExit) as info:
        capacity.main(["--batchh", "8"])
    assert info.value.code == 2 and "unrecognized arguments: --batchh" in capsys.readouterr().err


def test_convert_never_replaces_a_model_unasked_and_keeps_the_generation_config(tmp_path, capsys):
    from hf_models import qwen2_config, save_causal_lm

    src = tmp_path / "hf"
    save_causal_lm(qwen2_config(), src)
    side = {"generation_config.json": '{"eos_token_id": [151643, 151645]}', "tokenizer.json": "{}",
            "tokenizer_config.json": "{}", "special_tokens_map.json": "{}", "vocab.json": "{}", "merges.txt": "#"}
    for name, text in side.items():
        (src / name).write_text(text)
    dst = tmp_path / "orbax"
    assert convert.main([str(src), str(dst), "--dtype", "float32"]) == 0
    assert all((dst / name).read_text() == text for name, text in side.items())
    before = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    capsys.readouterr()
    one_line_error(capsys, 2, convert.main([str(src), str(dst)]), "already exists and is not empty; pass --overwrite")
    assert {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before
    assert convert.main([str(src), str(dst), "--overwrite"]) == 0
    assert restore_model(dst).config.dtype == "bfloat16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "orbax"]  # no temporary folder left behind


def test_a_failed_save_leaves_the_destination_as_it_was(tmp_path):
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "manifest.json").write_text("old")
    with pytest.raises(RuntimeError), outputs.staged_folder(dst, overwrite=True) as tmp:
        (tmp / "manifest.json").write_text("new")
        raise RuntimeError("disk full while saving")
    assert (dst / "manifest.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_train_refuses_an_existing_out_before_training(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text("{}")
    rc = train.main([f"out={tmp_path / 'out'}", f"work_dir={tmp_path / 'work'}"])
    one_line_error(capsys, 2, rc, "already exists and is not empty; pass overwrite=true")
    assert not (tmp_path / "work").exists()


def test_a_truncated_orbax_checkpoint_is_one_checkpoint_error_line(tiny, tmp_path, capsys):
    bad = tmp_path / "draft"
    shutil.copytree(tiny / "draft", bad)
    (bad / "checksums.sha256").unlink()  # saved before checksums: orbax's own read error (with one, the file is named)
    data_file = next(p for p in (bad / "params" / "d").iterdir())
    data_file.write_bytes(data_file.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="is incomplete or corrupt"):
        restore_model(bad)
    rc = decode.main([f"models.draft.path={bad}"] + model_args(tiny)[1:])
    one_line_error(capsys, 2, rc, f"checkpoint {bad} is incomplete or corrupt")


def test_mesh_data_that_does_not_fit_one_device_is_an_error(monkeypatch):
    from rsd_jax.loading import start_devices

    monkeypatch.setattr(jax, "device_count", lambda: 1)
    monkeypatch.setattr(jax, "devices", lambda *a: jax.local_devices()[:1])
    assert start_devices(load_config(RunConfig, None, []).mesh) is None
    with pytest.raises(ConfigError, match="mesh.data=3 x mesh.model=1 != 1 devices"):
        start_devices(load_config(RunConfig, None, ["mesh.data=3"]).mesh)


def test_calibration_with_non_finite_rewards_raises_the_projects_error(monkeypatch):
    with pytest.raises(NumericalError, match="2 of the 3 rewards are not finite"):
        rule_of_rewards(np.array([0.5, np.nan, np.inf]), 0.3)
    from rsd_jax import calibration

    class Step:
        source, reward = "draft", float("nan")

    class Result:
        steps = (Step(), Step())

    monkeypatch.setattr(calibration, "generate", lambda *a, **k: [Result()])
    cfg = load_config(RunConfig, None, ["rsd.budget=0.3", "rsd.calibration=dev", "decoding.batch_size=1"])
    from rsd_jax.data.problems import load_items

    with pytest.raises(NumericalError, match="rsd.budget: cannot calibrate, the PRM gave non-finite rewards to 2"):
        calibration.step_rewards(None, load_items(cfg.data)[:1], cfg)


def test_a_dash_stays_a_string_for_string_fields():
    cfg = load_config(RunConfig, None, ["data.prompts_file=-", "models.tokenizer=a: b"])
    assert cfg.data.prompts_file == "-" and cfg.models.tokenizer == "a: b"
    assert load_config(RunConfig, None, ["data.prompts_file=null"]).data.prompts_file is None


def test_run_identity_leaves_out_only_keys_that_do_not_change_results(tiny):
    a = runs.run_identity(load_config(RunConfig, None, model_args(tiny)), None)
    b = runs.run_identity(load_config(RunConfig, None, model_args(tiny) + [
        "data.n=7", "output=x", "rsd.thresholds=[0.1]", "rsd.methods=[rsd]", "mesh.distributed=true"]), None)
    assert a == b
    c = runs.run_identity(load_config(RunConfig, None, model_args(tiny) + ["decoding.batch_size=3", "mesh.model=2"]),
                          None)
    assert runs.differences(a, c) == ["decoding.batch_size: 64 there, 3 now", "mesh.model: 1 there, 2 now"]


def test_a_run_recorded_before_a_key_was_added_resumes_only_at_the_value_it_ran_with(tiny):
    now = runs.run_identity(load_config(RunConfig, None, model_args(tiny)), None)
    older = {k: v for k, v in now.items() if k != "data.format"}  # run.json written before data.format existed
    assert runs.differences(older, now) == []
    other = runs.run_identity(load_config(RunConfig, None, model_args(tiny) + ["data.format=math500"]), None)
    assert runs.differences(older, other) == ["data.format: 'auto' there, 'math500' now"]


# ------------------------------------------------------------------------------------------------ subprocesses
@pytest.fixture(scope="module")
def sub_env(tmp_path_factory):
    """A one-device CPU environment for the real commands, sharing a persistent compilation cache."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def test_the_readme_stdin_example_runs_as_written(sub_env):
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "data.prompts_file=-" in line and line.startswith("printf"))
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=sub_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("── prompt-") == 2 and "n_problems 2" in done.stdout


def test_the_watchdog_ends_a_command_stuck_in_xla(sub_env):
    script = """
import jax, jax.numpy as jnp
from rsd_jax.signals import interruptible
body = lambda c: (c[0] + 1, jnp.sin(c[1]) + 1.0)  # about 1 µs an iteration: minutes for 2e9
spin = jax.jit(lambda n: jax.lax.while_loop(lambda c: c[0] < n, body, (0, jnp.ones(256))))
spin(10)[1].block_until_ready()
print("ready", flush=True)
with interruptible("spin", lambda: "nothing to keep", grace=1.0):
    spin(2_000_000_000)[1].block_until_ready()
print("finished", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], env=sub_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and time.time() - start < 6  # the grace second, not the minutes of the loop
    assert err.strip() == "spin: interrupted by SIGTERM; nothing to keep" and "finished" not in out


def _record_files(folder: Path) -> dict[str, dict[str, dict]]:
    """{file: {uid: record without wall_seconds}}, every line parsed, no uid twice."""
    out = {}
    for path in sorted(folder.glob("*.jsonl")):
        rows = lines_of(path)
        assert len({r["uid"] for r in rows}) == len(rows), f"{path} holds a uid twice"
        out[path.name] = {r["uid"]: {k: v for k, v in r.items() if k != "wall_seconds"} for r in rows}
    return out


def _lines_written(folder: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in folder.glob("*.jsonl"))


def test_evaluate_killed_at_random_moments_resumes_to_the_uninterrupted_records(tiny, sub_env, tmp_path):
    """Sampling (temperature 1) and a padded last batch, so that a resume must reproduce each batch's seed and
    composition. Kills a random 0-50 ms after the process's first new record (SIGKILL, SIGTERM, SIGINT in turn)
    and, in the long run, one in four a SIGKILL at a random moment of the start-up (imports, model loading,
    compilation); then the last process runs to the end."""
    n = 5 if KILLS <= 3 else 64
    command = [sys.executable, "-m", "rsd_jax.evaluate", *model_args(tiny), f"data.n={n}", "decoding.batch_size=2",
               "decoding.max_new_tokens=12", "decoding.temperature=1.0", "rsd.thresholds=[0.3]"]
    reference = subprocess.run(command + ["--out", str(tmp_path / "reference")], env=sub_env, capture_output=True,
                               text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    rng = random.Random(23)
    plan = ([(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGINT, False)] if KILLS <= 3 else
            [[(signal.SIGKILL, True), (signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGINT, False)][i % 4]
             for i in range(KILLS)])
    kills = []
    for attempt in range(KILLS + 1):
        stderr_path = tmp_path / f"stderr{attempt}.txt"
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(command + ["--out", str(out)], env=sub_env, stdout=subprocess.DEVNULL,
                                    stderr=stderr)
        if attempt == KILLS:
            assert proc.wait(timeout=600) == 0, stderr_path.read_text()
            break
        sig, early = plan[attempt]
        if early:
            time.sleep(rng.uniform(0.2, 3.0))
        else:
            before = _lines_written(out) if out.is_dir() else 0
            while proc.poll() is None and (not out.is_dir() or _lines_written(out) == before):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
        assert proc.poll() is None, "the run ended before its kill: give it more problems"
        written = _lines_written(out) if out.is_dir() else 0
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        kills.append(f"{sig.name} {'start-up' if early else 'decoding'} after {written} records: {rc}")
        err = stderr_path.read_text()
        assert "Traceback" not in err, err
        if sig != signal.SIGKILL:
            assert rc == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], err
            assert err.strip().splitlines()[-1].startswith(f"rsd_jax.evaluate: interrupted by {sig.name}; the "
                                                            f"records written so far are kept in {out}")
    print(f"{len(kills)} kills:", *kills, sep="\n  ")
    assert len(kills) == KILLS
    assert _record_files(out) == _record_files(tmp_path / "reference")  # every field but wall_seconds
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "reference"))
    for key in a:
        a[key].pop("wall_seconds"), b[key].pop("wall_seconds")
    assert a == b


def test_a_nan_prm_is_loud_with_quiet_fails_with_strict_and_cannot_calibrate(tiny, sub_env, tmp_path):
    """The real decode with a PRM whose value head is NaN (after the kill test: its compilations are cached)."""
    command = [sys.executable, "-m", "rsd_jax.decode", *model_args(tiny, prm="nan_prm"), "data.n=2",
               "decoding.batch_size=2", "decoding.max_new_tokens=12", "decoding.temperature=1.0", "--quiet"]
    done = subprocess.run(command + ["--strict", "--out", str(tmp_path / "d")], env=sub_env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 3 and "n_errors 2 | n_nonfinite_rewards 2" in done.stdout
    assert done.stderr.strip() == ("error: --strict: 2 of 2 records have an error; 2 of 2 records have non-finite "
                                   "PRM rewards (see each record's error and steps)")
    assert [r["error"] for r in lines_of(tmp_path / "d" / "results.jsonl")] == ["non-finite values in PRM reward"] * 2
    done = subprocess.run(command + ["rsd.budget=0.3", "rsd.calibration=dev", "rsd.calibration_n=4"], env=sub_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().startswith(
        "error: rsd.budget: cannot calibrate, the PRM gave non-finite rewards to"), done.stderr


# ------------------------------------------------------------------------------------------------ round two (issue 36)
# Each test drives a command or a loader as a user would, so that it also fails on the code before issue 36 (the
# new modules are imported inside the tests that need them).
_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, b"pid %d on testhost: the first run\\n" % os.getpid())
print("held", flush=True)
time.sleep(120)
"""


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock, as a running evaluate does."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder / ".rsd_jax.lock")], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_into_a_held_folder_is_refused_in_one_line_and_a_dead_holder_never_blocks(
        fake, tiny, tmp_path, capsys):
    out = tmp_path / "w"
    holder = _hold_lock(out)
    try:
        for command in (evaluate, decode):
            rc = command.main(["--out", str(out), *model_args(tiny), "data.n=3", "rsd.delta=0.3", "--quiet"][
                :None if command is decode else -1])
            err = one_line_error(capsys, 2, rc, f"--out {out} is in use by another run")
            assert "pid" in err and "testhost: the first run" in err
        assert sorted(p.name for p in out.iterdir()) == [".rsd_jax.lock"]  # nothing written, no run.json taken over
        assert evaluate.main(["--out", str(out), "--new-run", *model_args(tiny), "data.n=3"]) == 0
        assert len(lines_of(tmp_path / "w-2" / "rsd.jsonl")) == 3
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    assert evaluate.main(["--out", str(out), *model_args(tiny), "data.n=3"]) == 0  # the dead holder's lock is gone
    assert len(lines_of(out / "rsd.jsonl")) == 3


def test_parallel_new_runs_each_get_their_own_folder(fake, tiny, tmp_path, capsys):
    """A --new-run into a folder another run holds goes to the first sibling nobody holds."""
    out = tmp_path / "w"
    holders = [_hold_lock(out), _hold_lock(tmp_path / "w-2")]
    try:
        assert evaluate.main(["--out", str(out), "--new-run", *model_args(tiny), "data.n=2"]) == 0
    finally:
        for h in holders:
            h.kill()
            h.wait()
    assert "--new-run: writing into " + str(tmp_path / "w-3") in capsys.readouterr().out
    assert not (out / "rsd.jsonl").exists() and not (tmp_path / "w-2" / "rsd.jsonl").exists()


def test_a_damaged_orbax_checkpoint_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    """Orbax and TensorStore raise a bare Exception for damaged OCDBT data (OUT_OF_RANGE, ZSTD corruption)."""
    import orbax.checkpoint as ocp

    def damaged(self, *a, **k):
        raise Exception("ZSTD decompression failed: Data corruption detected [source locations='...']")

    monkeypatch.setattr(ocp.StandardCheckpointer, "restore", damaged)
    with pytest.raises(CheckpointError, match="is incomplete or corrupt .*Data corruption detected"):
        restore_model(tiny / "draft")


def test_a_restore_cut_by_sigterm_is_an_interruption_not_a_corrupt_checkpoint(tiny, monkeypatch):
    """orbax wraps whatever stops a restore into its own read error: SIGTERM there used to exit 2 saying the
    checkpoint was corrupt."""
    import orbax.checkpoint as ocp

    def cut(self, *a, **k):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        except BaseException as e:
            raise Exception("Encountered error while reading array index: (slice(0, 4, 1),)") from e

    monkeypatch.setattr(ocp.StandardCheckpointer, "restore", cut)
    with pytest.raises(Interrupted) as info, interruptible("test", lambda: "nothing"):
        restore_model(tiny / "draft")
    assert info.value.signum == signal.SIGTERM


def _flip_a_byte(path: Path, at: int = -9) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_converted_checkpoint_with_a_flipped_byte_is_named(tmp_path, capsys, monkeypatch):
    """convert writes checksums.sha256 (0644 files, 0755 folders under umask 022); a flipped byte in any file is
    one line naming that file, at load, before anything is restored."""
    from tests.hf_models import qwen2_config, save_causal_lm

    monkeypatch.setenv("RSD_VERIFIED_CACHE", "")
    save_causal_lm(qwen2_config(), tmp_path / "hf")
    old = os.umask(0o022)
    try:
        assert convert.main([str(tmp_path / "hf"), str(tmp_path / "ckpt"), "--dtype", "float32"]) == 0
    finally:
        os.umask(old)
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "checksums.sha256").is_file()
    assert {oct(p.stat().st_mode & 0o777) for p in [ckpt, *ckpt.rglob("*")]} <= {"0o755", "0o644"}
    restore_model(ckpt)  # intact: loads
    biggest = max((p for p in ckpt.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    _flip_a_byte(biggest)
    with pytest.raises(CheckpointError, match=f"{biggest} is corrupt: its SHA-256 is"):
        restore_model(ckpt)


def test_a_bit_flipped_safetensors_file_from_the_hub_cache_is_named(tmp_path, monkeypatch):
    """A hub snapshot's weights are symlinks to blobs named by their SHA-256: a file whose bytes differ from its
    name is refused before its tensors are read."""
    import hashlib

    from rsd_jax.weights import load_hf_model
    from tests.hf_models import qwen2_config, save_causal_lm

    monkeypatch.setenv("RSD_VERIFIED_CACHE", str(tmp_path / "memo.json"))
    save_causal_lm(qwen2_config(), tmp_path / "saved")
    blobs, snapshot = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "abc"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in (tmp_path / "saved").iterdir():
        if f.suffix == ".safetensors":
            blob = blobs / hashlib.sha256(f.read_bytes()).hexdigest()
            shutil.copy(f, blob)
            (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
        else:
            shutil.copy(f, snapshot / f.name)
    load_hf_model(snapshot)  # intact
    load_hf_model(snapshot)  # and remembered as checked (the memo), so a second load hashes nothing
    _flip_a_byte(next(blobs.iterdir()))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt: its SHA-256 is .*Hugging Face"):
        load_hf_model(snapshot)


def test_a_causal_lm_given_as_the_prm_is_refused_before_any_weight_is_read(tiny, tmp_path, monkeypatch):
    from rsd_jax import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("a weight was read"))
    cfg = load_config(RunConfig, None, model_args(tiny, prm="draft"))
    with pytest.raises(CheckpointError, match=r"draft is a model with head 'lm', not a PRM"):
        loading.load_models(cfg, None)


def test_a_prm_tokenizer_that_cannot_encode_the_drafts_text_is_refused_at_load(tiny, tmp_path):
    from rsd_jax import loading
    from rsd_jax.errors import InputError

    shutil.copytree(tiny / "prm", tmp_path / "prm")
    CharTokenizer("0123456789+-*=").save(tmp_path / "prm" / "char_tokenizer.json")
    cfg = load_config(RunConfig, None, [*model_args(tiny)[:2], f"models.prm.path={tmp_path / 'prm'}"])
    with pytest.raises(InputError, match=r"the PRM's tokenizer \(beside .*prm\) cannot encode \d+ character"):
        loading.load_tokenizers(cfg, None)
    CharTokenizer().save(tmp_path / "prm" / "char_tokenizer.json")  # the draft's own characters: fine
    assert loading.load_tokenizers(cfg, None)[1] is None


@pytest.mark.parametrize("template", [
    "{% for i in range(100000000) %}x{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ '1' * 2000000000 }}",
    "{{ [0] * 2000000000 }}",
    "{{ 7 ** 2000000000 }}",
    "{{ 'x'|center(2000000000) }}",
    "{{ '%2000000000d'|format(1) }}",
    "{% for i in range(99999) %}{{ 'abcdefghijkl' }}{% endfor %}",
])
def test_a_chat_template_past_its_bounds_is_one_line(template):
    from rsd_jax.data.templates import render_chat
    from rsd_jax.errors import InputError

    start = time.time()
    with pytest.raises(InputError, match="the tokenizer's chat template") as info:
        render_chat(template, [{"role": "user", "content": "1+1"}])
    assert "\n" not in str(info.value) and time.time() - start < 30
    assert render_chat("{% for i in range(3) %}{{ i }}{% endfor %}{{ messages[0].content * 2 }}",
                       [{"role": "user", "content": "ab"}]) == "012abab"


@pytest.mark.parametrize("args, contains", [(["--batch", "-5"], "--batch must be a positive integer, got -5"),
                                            (["--batch", "0"], "--batch must be a positive integer, got 0"),
                                            (["--layers", "0"], "--layers must be a positive integer, got 0")])
def test_capacity_refuses_non_positive_sizes_before_any_work(args, contains, capsys, monkeypatch):
    monkeypatch.setattr(capacity, "evaluate_row", lambda *a, **k: pytest.fail("work started"))
    one_line_error(capsys, 2, capacity.main(args), contains)


def test_rehearse_refuses_a_file_as_work_and_a_full_disk_leaves_no_half_snapshot(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    from rsd_jax import hub_layout, rehearse

    (tmp_path / "file").write_text("x")
    one_line_error(capsys, 2, rehearse.main(["write", "--work", str(tmp_path / "file")]),
                   f"--work {tmp_path / 'file'} is a file, not a folder")
    one_line_error(capsys, 2, rehearse.main(["write", "--problems", "0"]), "--problems must be a positive")

    def full_disk(layout, folder, **kw):
        (Path(folder) / "config.json").write_text("{}")
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(hub_layout, "write_snapshot", full_disk)
    one_line_error(capsys, 2, rehearse.main(["write", "--work", str(tmp_path / "work")]),
                   f"cannot write {tmp_path / 'work' / 'draft'}: Error while serializing")
    assert list((tmp_path / "work").iterdir()) == []


def test_theory_refuses_another_runs_folder_and_validates_before_work(tmp_path, monkeypatch, capsys):
    calls = []

    def run_analytic(cfg, out):
        calls.append(cfg.mu_target)
        (out / "report.md").write_text(f"report {cfg.mu_target}\n")
        return {"mu_target": list(cfg.mu_target)}

    monkeypatch.setattr(theory_command, "run_analytic", run_analytic)
    out = tmp_path / "t"
    assert theory_main(["--out", str(out), "mu_target=[0.6]"]) == 0
    capsys.readouterr()
    one_line_error(capsys, 2, theory_main(["--out", str(out), "mu_target=[0.7]"]),
                   f"--out {out} holds another run (mu_target: [0.6] there, [0.7] now)")
    assert (out / "report.md").read_text() == "report (0.6,)\n" and calls == [(0.6,)]
    assert theory_main(["--out", str(out), "mu_target=[0.7]", "--new-run"]) == 0
    assert json.loads((tmp_path / "t-2" / "summary.json").read_text())["mu_target"] == [0.7]
    capsys.readouterr()
    for bad, contains in ((["budgets=[1.5]"], "budgets must lie in (0, 1]"),
                          (["deltas=[-1]"], "deltas must be finite thresholds >= 0"),
                          (["run.data.n=5"], "the analytic experiment decodes nothing")):
        one_line_error(capsys, 2, theory_main(["--out", str(tmp_path / "u"), *bad]), contains)
    assert calls == [(0.6,), (0.7,)] and not (tmp_path / "u").exists()


def test_rsd_data_dir_naming_no_folder_is_an_error(tmp_path, monkeypatch):
    from rsd_jax.data.sources import local_copy
    from rsd_jax.errors import InputError

    (tmp_path / "file").write_text("x")
    for root, what in ((tmp_path / "missing", "is missing"), (tmp_path / "file", "is a file")):
        monkeypatch.setenv("RSD_DATA_DIR", str(root))
        with pytest.raises(InputError, match=f"RSD_DATA_DIR={root} {what}, not a folder"):
            local_copy("gsm8k")


def test_a_yaml_key_given_twice_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("rsd:\n  delta: 0.3\ndata:\n  n: 4\nrsd:\n  delta: 0.5\n")
    with pytest.raises(ConfigError, match=r"line 5: invalid YAML \(key 'rsd' is given twice \(first on line 1\)"):
        load_config(RunConfig, str(tmp_path / "c.yaml"), [])
    with pytest.raises(ConfigError, match="key 'delta' is given twice"):
        load_config(RunConfig, None, ["rsd={delta: 0.1, delta: 0.2}"])


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_and_folders_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        outputs.write_text_atomic(tmp_path / "a.json", "{}\n")
        with outputs.staged_folder(tmp_path / "model") as tmp:
            (tmp / "sub").mkdir()
            fd, name = __import__("tempfile").mkstemp(dir=tmp / "sub")  # 0600, as tempfile and some libraries make
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "model" / "sub" / Path(name).name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_merge_refuses_a_weight_outside_0_1_before_reading_a_model(tmp_path, capsys, monkeypatch):
    from rsd_jax import merge

    monkeypatch.setattr(merge, "restore_model", lambda *a, **k: pytest.fail("a model was read"))
    one_line_error(capsys, 2, merge.main(["--a", "x", "--b", "y", "--weight", "1.5", "--out", str(tmp_path / "m")]),
                   "--weight must be in [0, 1], got 1.5")


_WITH_TEARDOWN_MARK = """
import atexit, runpy, sys
atexit.register(lambda: print("interpreter teardown ran", file=sys.stderr, flush=True))
sys.argv = ["rsd_jax.evaluate", *sys.argv[1:]]
runpy.run_module("rsd_jax.evaluate", run_name="__main__", alter_sys=True)
"""


def test_sigterm_during_the_first_compilation_exits_143_without_the_teardown_that_crashed(tiny, tmp_path):
    """No compilation cache, so the RSD loop compiles after the progress bar appears. SIGTERM then, as a
    scheduler sends it, used to print the right line and then die in the interpreter's teardown, which freed
    JAX's objects while XLA's threads still ran (exit 139, 6 times in 7 on an idle machine; timing-dependent, so
    the test also checks the cause away: an interrupted command leaves with os._exit, its teardown and atexit
    hooks never run)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", JAX_ENABLE_COMPILATION_CACHE="false")
    out = tmp_path / "run"
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", _WITH_TEARDOWN_MARK, *model_args(tiny), "data.n=2",
                                 "rsd.methods=[rsd]", "decoding.batch_size=2", "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 120
    while "rsd:" not in stderr_path.read_text() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # the bar appears right before the first batch: its compilation follows
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    err = stderr_path.read_text()
    assert rc == 143 and "Fatal Python error" not in err and "Traceback" not in err, (rc, err)
    assert "interpreter teardown ran" not in err
    assert err.rstrip().endswith(f"rsd_jax.evaluate: interrupted by SIGTERM; the records written so far are kept "
                                 f"in {out}; run the same command to resume")


_SIGTERM_IN_TEARDOWN = """
import atexit, os, runpy, signal, sys, time
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.3)))
sys.argv = ["rsd_jax.evaluate", "--describe"]
runpy.run_module("rsd_jax.evaluate", run_name="__main__", alter_sys=True)
"""


def test_a_sigterm_after_the_command_is_done_does_not_turn_exit_0_into_a_kill():
    """A finished run's teardown can take a moment (atexit hooks, JAX's backends): SIGTERM then used to end the
    process by the signal (-15) although everything was written."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _SIGTERM_IN_TEARDOWN], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


# --------------------------------------------------------------------------------------------- round three (issue 36)
_ANSWERED_AT_ONCE = """
import sys, time
from rsd_jax.signals import interruptible, on_signals_while_starting, writing
on_signals_while_starting("t")
mode, path = sys.argv[1], sys.argv[2]
with interruptible("t", lambda: "kept in " + path, grace=600.0):  # a grace the old watchdog would wait out
    if mode == "xla":
        import jax, jax.numpy as jnp
        body = lambda c: (c[0] + 1, jnp.sin(c[1]) + 1.0)
        spin = jax.jit(lambda n: jax.lax.while_loop(lambda c: c[0] < n, body, (0, jnp.ones(256))))
        spin(10)[1].block_until_ready()
        print("ready", flush=True)
        spin(2_000_000_000)[1].block_until_ready()  # minutes inside XLA: no Python handler runs
    else:
        with writing():
            open(path, "w").write("half ")
            print("ready", flush=True)
            time.sleep(1.0)  # the signal comes here: the write is finished first
            open(path, "a").write("whole")
        while True:  # a library that swallows whatever is raised in the main thread
            try:
                time.sleep(0.01)
            except BaseException:
                pass
print("finished", flush=True)
"""


@pytest.mark.parametrize("mode", ["xla", "swallowed"])
def test_a_program_answers_sigterm_at_once_from_its_own_thread(mode, sub_env, tmp_path):
    """Run as a program (on_signals_while_starting), a command is ended by a dedicated thread, without the main
    thread: inside XLA or in a library that swallows exceptions, SIGTERM used to wait out the watchdog's grace
    (3 s by default; here 600 s). A write in progress is finished first."""
    path = tmp_path / "file.txt"
    proc = subprocess.Popen([sys.executable, "-c", _ANSWERED_AT_ONCE, mode, str(path)], env=sub_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)  # the old code: the 600 s grace, past this timeout
    assert proc.returncode == 143 and "finished" not in out, (proc.returncode, err)
    assert err.strip() == f"t: interrupted by SIGTERM; kept in {path}"
    if mode == "swallowed":
        assert path.read_text() == "half whole"


def test_every_orbax_checkpoint_is_saved_with_checksums_and_a_flipped_byte_is_named(tiny, tmp_path, monkeypatch,
                                                                                   capsys):
    """save_model (so train, convert, merge and every test fixture) writes checksums.sha256 over the config and
    the params: a flipped byte in the array data used to load silently or as orbax's own read error. A
    checkpoint without the file (saved before) loads with one notice, once."""
    from rsd_jax import checksums
    from rsd_jax.weights.integrity import CHECKSUM_FILE

    monkeypatch.setenv("RSD_VERIFIED_CACHE", "")
    ckpt = tmp_path / "draft"
    shutil.copytree(tiny / "draft", ckpt)
    listed = (ckpt / CHECKSUM_FILE).read_text()
    assert "model_config.json" in listed and "params/manifest.ocdbt" in listed
    data = max((p for p in (ckpt / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    _flip_a_byte(data, at=len(data.read_bytes()) // 2)
    with pytest.raises(CheckpointError, match=f"^{data} is corrupt: its SHA-256 is .*; download or convert it again"):
        restore_model(ckpt)
    assert checksums.main([str(ckpt)]) == 2 and f"error: {data} is corrupt" in capsys.readouterr().err
    (ckpt / CHECKSUM_FILE).unlink()
    shutil.copy(tiny / "draft" / data.relative_to(ckpt), data)
    restore_model(ckpt)
    restore_model(ckpt)
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice:")]
    assert notices == [f"notice: {ckpt} has no {CHECKSUM_FILE} (saved before rsd_jax wrote one), so a damaged byte "
                       f"in it would go unnoticed; add one with `python -m rsd_jax.checksums --write {ckpt}`"]
    assert checksums.main(["--write", str(ckpt)]) == 0 and checksums.main([str(ckpt)]) == 0
