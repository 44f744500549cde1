"""The paper's datasets: grading against reality, templates, bad files, and where each set's file comes from.

MATH500 and GSM8K ship inside the package, so their tests always run. The other five sets are read where they
exist without the network (a folder named by RSD_DATA_DIR, or the download cache); elsewhere their tests skip,
naming RSD_DATA_DIR. The fetch logic is tested without the network: file:// URLs and an HTTP server on localhost.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import socket
import threading
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from rsd_jax.config import DATASETS, DataConfig, RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.data import sources
from rsd_jax.data.datasets import dataset_items, dataset_rows, equivalent, extract_answer, grade, last_boxed
from rsd_jax.data.templates import QWEN25_MATH_COT, format_prompt
from rsd_jax.data.problems import load_items
from rsd_jax.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
SETS = ("math500", "gsm8k", "gaokao2023en", "olympiadbench", "minerva_math", "gpqa", "mmlu_stem", "cn_middle_school",
        "college_math")
FREE_FORM = SETS[:5]
SHIPPED = ("math500", "gsm8k")


def need(source: str) -> None:
    """Skips the test when the set is neither shipped nor readable without the network."""
    if sources.local_copy(source) is None:
        pytest.skip(f"{source} is not shipped with rsd_jax and not cached: set RSD_DATA_DIR to a folder with "
                    f"{source}.jsonl to run this test")


def items(source: str, n: int | None = None):
    need(source)
    return dataset_items(DataConfig(source=source, n=n), None)


@pytest.mark.parametrize("source", SETS)
def test_reference_answers_score_100_percent(source):
    # every row; the two large sets (GSM8K 1319 integers, MMLU-STEM 3018 letters) are cheap to grade
    rows = items(source)
    wrong = [i.uid for i in rows if not i.grade(f"The answer is \\boxed{{{i.answer}}}.")]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("source", FREE_FORM)
def test_math_verify_alone_accepts_every_reference(source):
    # grade() first compares strings, so the test above mostly checks extraction; here math-verify itself must
    # recognise every reference (all rows) as equal to its own extracted copy. Only GaoKao's two empty
    # references (rows 168 and 193, whose answers sit inside the question text) have nothing to parse.
    rows = items(source)
    failed = [i.uid for i in rows if not equivalent(i.answer, extract_answer(f"The answer is \\boxed{{{i.answer}}}."))]
    assert failed == ([] if source != "gaokao2023en" else [i.uid for i in rows if not i.answer]), failed[:5]
    assert len(failed) <= 2


def test_shipped_references_are_clean():
    assert len(items("gsm8k")) == 1319 and items("gsm8k", 3)[0].answer == "18"
    assert all(i.answer.lstrip("-").isdigit() for i in items("gsm8k"))
    cot = dataset_items(DataConfig(source="math500", n=2, template="qwen25-math-cot"), None)
    assert len(cot) == 2 and cot[0].prompt == QWEN25_MATH_COT.replace("{question}", cot[0].question)
    assert cot[0].grade(f"so \\boxed{{{cot[0].answer}}}") and not cot[0].grade("so \\boxed{-987654321}")
    assert len(items("math500")) == 500


@pytest.mark.parametrize("source", ("gaokao2023en", "olympiadbench", "gpqa", "mmlu_stem"))
def test_references_are_clean(source):
    need(source)
    if source == "olympiadbench":
        olymp = {i.answer for i in items("olympiadbench")}
        assert "(-\\infty, 0) \\cup\\{1\\}" in olymp and not any(a.endswith((".", "$")) for a in olymp)
    if source in ("gaokao2023en", "olympiadbench"):
        assert not any("$" in i.answer.replace("\\$", "") for i in items(source))
    if source == "gpqa":  # GPQA's examples stay out of the repository in plain text: its choices by hash
        gpqa = items("gpqa", 1)[0]
        _, marker, choices = gpqa.question.rpartition("\nAnswer Choices: ")
        assert gpqa.answer == "B" and marker and hashlib.sha256(choices.encode()).hexdigest() == (
            "28e42446897ce05390b6a88e345641e47d6b8570692a1d647b56c194a1a9b73d")
    if source == "mmlu_stem":
        assert {i.answer for i in items("mmlu_stem")} == set("ABCD") and len(items("mmlu_stem", 7)) == 7


def test_equivalent_forms_are_accepted():
    assert grade("so \\boxed{\\dfrac{1}{2}}", "0.5") and grade("The answer is $\\frac12$.", "\\frac{1}{2}")
    assert grade("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt2}") and grade("\\boxed{84, 69}", "69,84")
    assert grade("\\boxed{(-\\infty,0)\\cup\\{1\\}}", "(-\\infty, 0) \\cup\\{1\\}")
    assert not grade("\\boxed{69}", "69,84") and not grade("\\boxed{\\frac{1}{3}}", "0.5")
    # from a worker thread (no SIGALRM there) math-verify runs without its timeout instead of failing
    out = []
    worker = threading.Thread(target=lambda: out.append(grade("\\boxed{\\dfrac{1}{2}}", "0.5")))
    worker.start()
    worker.join()
    assert out == [True]


def test_math500_solutions_grade_at_least_99_percent():
    rows = dataset_rows("math500")
    right = sum(grade(r["solution"], r["answer"]) for r in rows)
    assert right / len(rows) >= 0.99, right  # measured: 500/500
    by_math_verify = sum(equivalent(r["answer"], last_boxed(r["solution"])) for r in rows)
    assert by_math_verify / len(rows) >= 0.99, by_math_verify  # measured: 500/500


@pytest.mark.parametrize("source", SETS)
def test_wrong_answers_are_rejected(source):
    rows = [i for i in items(source, 60) if i.answer][:50]
    for i in rows:
        if source in ("gpqa", "mmlu_stem"):
            wrongs = ["ABCD"[("ABCD".index(i.answer) + 1) % 4]]
        else:
            wrongs = ["-987654321"]
            try:
                wrongs.append(str(float(i.answer) + 1))  # a numeric reference plus one
            except ValueError:
                pass
        for wrong in wrongs:
            assert not i.grade(f"The answer is \\boxed{{{wrong}}}."), (i.uid, i.answer, wrong)


def test_templates_and_extraction():
    assert format_prompt("What is 1+1?", "qwen25-math-cot") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
    assert QWEN25_MATH_COT.count("{question}") == 1
    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}}") == "x^{2}"
    assert grade("so the answer is 42.", "42") and grade("... 3, 5, 8", "8") and not grade("no digits", "8")
    assert grade("The answer is (C)", "C", multiple_choice=True)
    assert extract_answer("The answer is $\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert extract_answer("The answer is: 3.5.") == "3.5"
    assert extract_answer("we get 1,000 apples") == "1000" and extract_answer("nothing here") is None
    assert extract_answer("\\boxed{\\text{(C)}}", True) == "C" and extract_answer("The answer is (D).", True) == "D"
    assert extract_answer("A or B? I pick E", True) == "E" and extract_answer("no letter", True) is None
    assert not grade("\\boxed{B}", "C", multiple_choice=True)


def test_bad_files(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"problem": "x", "answer": "1"}\n{not json}\n')
    with pytest.raises(InputError, match="line 2"):
        dataset_items(DataConfig(source="math500", path=str(bad)), None)
    bad.write_text("")
    with pytest.raises(InputError, match="no problems"):
        dataset_items(DataConfig(source="math500", path=str(bad)), None)
    bad.write_bytes(b'{"problem": "\xff"}\n')
    with pytest.raises(InputError, match="not UTF-8"):
        dataset_items(DataConfig(source="math500", path=str(bad)), None)
    with pytest.raises(InputError, match="not found"):
        dataset_items(DataConfig(source="math500", path=str(tmp_path / "none.jsonl")), None)


# --- the registry: shipped copies, names, package data ---

def test_registry_holds_the_nine_sets():
    assert sources.NAMES == SETS and DATASETS == ("arith", *SETS, "prompts")
    assert [s.name for s in sources.SOURCES.values() if s.shipped] == list(SHIPPED)
    for s in sources.SOURCES.values():
        assert len(s.sha256) == 64 and s.url.startswith("https://raw.githubusercontent.com/BaohaoLiao/RSD/")
        assert sources.COMMIT in s.url and s.url.endswith(f"/data/{s.name}/test.jsonl")


def test_shipped_copies_match_their_hashes_and_gpqa_is_not_shipped():
    folder = resources.files("rsd_jax.data").joinpath("sets")
    assert sorted(p.name for p in folder.iterdir()) == ["NOTICE", "gsm8k.jsonl.gz", "math500.jsonl.gz"]
    notice = folder.joinpath("NOTICE").read_text()
    assert "MIT" in notice and "hendrycks/math" in notice and "openai/grade-school-math" in notice
    for name in SHIPPED:
        data = sources.shipped_bytes(sources.SOURCES[name])  # checks the hash
        assert sources.sha256_of(data) == sources.SOURCES[name].sha256
    # package data, so that a normal (non-editable) install has them too
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"sets/*.jsonl.gz", "sets/NOTICE"} <= set(package_data["rsd_jax.data"])


def test_paper_configs_read_math500_from_the_package(monkeypatch):
    monkeypatch.delenv("RSD_DATA_DIR", raising=False)
    monkeypatch.setenv("RSD_OFFLINE", "1")
    for path in sorted((ROOT / "configs" / "paper").glob("qwen25_math_*.yaml")):
        cfg = load_config(RunConfig, path, ["data.n=3"])
        if "table_b1" in path.stem:  # Table B.1's sets are fetched, not shipped
            continue
        assert cfg.data.source == "math500" and cfg.data.path is None, path.name
        loaded = load_items(cfg.data, str(path))
        assert len(loaded) == 3 and loaded[0].prompt == QWEN25_MATH_COT.replace("{question}", loaded[0].question)


def test_unknown_dataset_names(tmp_path):
    message = "unknown dataset 'mnist'; known datasets: " + ", ".join(SETS)
    for call in (lambda: dataset_rows("mnist"), lambda: dataset_rows("mnist", tmp_path / "x.jsonl"),
                 lambda: sources.local_copy("mnist")):
        with pytest.raises(InputError) as info:
            call()
        assert str(info.value) == message
    valid = ("data.source must be one of " + ", ".join(DATASETS) + ", or any name with data.path (a set's JSONL "
             "file); got 'mnist'")
    config = tmp_path / "run.yaml"
    config.write_text("data: {source: mnist}\n")
    for call in (lambda: load_config(RunConfig, config), lambda: load_config(RunConfig, None, ["data.source=mnist"]),
                 lambda: DataConfig(source="mnist")):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == valid


# --- resolution and fetching, without the network ---

ROWS = [{"question": f"Q{k}?", "choices": ["a", "b", "c", "d"], "answer": k % 4} for k in range(3)]
CONTENT = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A fake 'gpqa' (made-up rows) whose registered URL is a file:// URL; an empty cache; online; no RSD_DATA_DIR."""
    for name in ("RSD_DATA_DIR", "HF_HUB_OFFLINE", "RSD_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RSD_CACHE_DIR", str(tmp_path / "cache"))
    served = tmp_path / "remote" / "gpqa" / "test.jsonl"
    served.parent.mkdir(parents=True)
    served.write_bytes(CONTENT)
    point_at(monkeypatch, served.as_uri())
    return served


def point_at(monkeypatch, url: str, sha256: str = hashlib.sha256(CONTENT).hexdigest()) -> sources.Source:
    source = dataclasses.replace(sources.SOURCES["gpqa"], url=url, sha256=sha256)
    monkeypatch.setitem(sources.SOURCES, "gpqa", source)
    return source


def cache_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_download_into_the_cache_then_reuse(remote, tmp_path, monkeypatch, capsys):
    assert sources.local_copy("gpqa") is None
    assert dataset_rows("gpqa") == ROWS
    cached = sources.cached_path(sources.SOURCES["gpqa"])
    assert cached.parent == tmp_path / "cache" / "datasets" and cached.read_bytes() == CONTENT
    assert cache_files(tmp_path) == [cached.name]  # no temporary file left behind
    assert "downloading gpqa" in capsys.readouterr().err
    remote.unlink()  # the cache is read from now on, offline too, and nothing is downloaded again
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.local_copy("gpqa") == str(cached)
    assert sources.dataset_bytes("gpqa") == (CONTENT, str(cached))
    assert [i.answer for i in dataset_items(DataConfig(source="gpqa"), None)] == ["A", "B", "C"]
    assert "downloading" not in capsys.readouterr().err


def test_download_over_http_from_localhost(remote, tmp_path, monkeypatch):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(remote.parents[1]))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        point_at(monkeypatch, f"{base}/missing/test.jsonl")
        with pytest.raises(InputError) as info:
            dataset_rows("gpqa")
        assert "HTTP 404" in str(info.value) and "RSD_DATA_DIR" in str(info.value) and "\n" not in str(info.value)
        point_at(monkeypatch, f"{base}/gpqa/test.jsonl")
        assert dataset_rows("gpqa") == ROWS and len(cache_files(tmp_path)) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_corrupted_download_is_refused(remote, tmp_path, monkeypatch):
    remote.write_bytes(CONTENT.replace(b"Q1", b"Q9"))
    with pytest.raises(InputError) as info:
        dataset_rows("gpqa")
    got = hashlib.sha256(remote.read_bytes()).hexdigest()
    assert str(info.value) == (f"the download from {remote.as_uri()}: SHA-256 {got} does not match the expected "
                               f"{hashlib.sha256(CONTENT).hexdigest()} of gpqa; nothing was written to the cache")
    assert cache_files(tmp_path) == []


def test_a_corrupted_cache_file_is_refused(remote, tmp_path):
    cached = sources.cached_path(sources.SOURCES["gpqa"])
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b'{"question": "edited"}\n')
    with pytest.raises(InputError) as info:
        dataset_rows("gpqa")
    got = hashlib.sha256(b'{"question": "edited"}\n').hexdigest()
    assert str(info.value) == (f"{cached}: SHA-256 {got} does not match the expected "
                               f"{hashlib.sha256(CONTENT).hexdigest()} of gpqa; delete the file to download it again")


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "RSD_OFFLINE"])
def test_offline_and_not_cached(remote, tmp_path, monkeypatch, flag):
    monkeypatch.setenv(flag, "1")
    folder = tmp_path / "cache" / "datasets"
    with pytest.raises(InputError) as info:
        dataset_rows("gpqa")
    assert str(info.value) == (f"gpqa is not shipped with rsd_jax and not cached in {folder}, and downloads are off "
                               f"({flag}=1): set RSD_DATA_DIR to a folder with gpqa.jsonl, or data.path")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("RSD_DATA_DIR", str(empty))
    with pytest.raises(InputError, match=f"RSD_DATA_DIR={empty} has no gpqa.jsonl"):
        dataset_rows("gpqa")
    assert cache_files(tmp_path) == []
    assert len(dataset_rows("math500")) == 500  # the shipped sets need no network


def test_network_errors_name_the_way_out(remote, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for url in (f"http://127.0.0.1:{port}/gpqa/test.jsonl", (tmp_path / "nowhere.jsonl").as_uri()):
        point_at(monkeypatch, url)
        with pytest.raises(InputError) as info:
            dataset_rows("gpqa")
        message = str(info.value)
        assert message.startswith(f"could not download gpqa from {url} (") and "\n" not in message
        assert message.endswith("check the network, or set RSD_DATA_DIR to a folder with gpqa.jsonl, or data.path")
    assert cache_files(tmp_path) == []


def test_an_unwritable_cache_is_named(remote, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("RSD_CACHE_DIR", str(blocker))
    with pytest.raises(InputError, match=f"cannot write the dataset cache {blocker / 'datasets'} .*RSD_CACHE_DIR"):
        dataset_rows("gpqa")


def test_rsd_data_dir_comes_before_the_shipped_copy_and_the_cache(remote, tmp_path, monkeypatch):
    folder = tmp_path / "sets"
    folder.mkdir()
    (folder / "gpqa.jsonl").write_bytes(CONTENT.splitlines(keepends=True)[0])  # read as is: no checksum
    (folder / "math500.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    monkeypatch.setenv("RSD_DATA_DIR", str(folder))
    monkeypatch.setenv("RSD_OFFLINE", "1")
    assert dataset_rows("gpqa") == ROWS[:1] and sources.local_copy("gpqa") == str(folder / "gpqa.jsonl")
    assert [i.answer for i in dataset_items(DataConfig(source="math500"), None)] == ["2"]
    assert len(dataset_rows("gsm8k")) == 1319  # not in the folder: the shipped copy
    assert cache_files(tmp_path) == []


def test_data_path_comes_first(remote, tmp_path, monkeypatch):
    folder = tmp_path / "sets"
    folder.mkdir()
    (folder / "math500.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    monkeypatch.setenv("RSD_DATA_DIR", str(folder))
    monkeypatch.setenv("RSD_OFFLINE", "1")
    mine = tmp_path / "configs" / "mine.jsonl"  # relative to the config file
    mine.parent.mkdir()
    mine.write_text('{"problem": "2+2?", "answer": "4"}\n{"problem": "3+3?", "answer": "6"}\n')
    config = mine.parent / "run.yaml"
    config.write_text("data: {source: math500, path: mine.jsonl}\n")
    cfg = load_config(RunConfig, config)
    assert [i.answer for i in load_items(cfg.data, str(config))] == ["4", "6"]
    assert dataset_rows("gpqa", mine) == [json.loads(line) for line in mine.read_text().splitlines()]
