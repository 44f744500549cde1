"""python -m rsd_jax.doctor: the install alone and the embedded config pass; a config that does not fit the devices'
memory, a mesh the devices cannot take, mismatched jax wheels, a model or a set missing offline each fail (exit 2)
with the setting to change. Runs on the test session's 8 CPU devices; no weights are read."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import pytest

from rsd_jax import abstract_run, capacity, doctor, sharding
from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "arith_tiny.yaml")
PAPER_HUB = ["models.draft.path=Qwen/Qwen2.5-Math-1.5B-Instruct", "models.target.path=Qwen/Qwen2.5-Math-7B-Instruct",
             "models.prm.path=Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "data.source=math500",
             "models.draft.dtype=bfloat16", "models.target.dtype=bfloat16", "models.prm.dtype=bfloat16",
             "mesh.model=auto", "mesh.model_max=4", "decoding.batch_size=32"]  # the paper's main setting (Table 2)


def lines(text: str) -> dict[str, list[str]]:
    """topic -> the status and text of each of its lines."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines()[1:-1]:
        status, topic, rest = re.match(r"\s+(\S+)\s+(\S+(?: cache)?)\s+(.*)", line).groups()
        out.setdefault(topic, []).append(f"{status} {rest}")
    return out


def test_the_install_alone_and_the_embedded_config_pass(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    add_snapshot(tmp_path, "org/tiny", "c" * 40, {"config.json": "{}", "model.safetensors": "x" * 2_000_000})
    assert doctor.main([]) == 0
    found = lines(capsys.readouterr().out)
    assert found["devices"] == [f"ok 8 x cpu (cpu), {found['devices'][0].split(', ')[1]}"]
    assert found["jax"][0].startswith(f"ok jax {jax.__version__}, jaxlib ")
    assert found["hub cache"] == [f"ok {tmp_path}: 1 model(s): org/tiny (0.0 GB)"]
    assert set(found) == {"devices", "jax", "hub cache", "sets"} and "math500, gsm8k" in found["sets"][0]
    assert doctor.main(["--config", TINY]) == 0
    found = lines(capsys.readouterr().out)
    assert found["mesh"] == ["ok data 8 x model 1 x tensor 1 (mesh.model=1, the models' KV heads (2, 2, 2))"]
    assert found["memory"][0].startswith("ok ") and found["draft"][0].startswith("ok local folder ")
    assert found["data"] == ["ok arith: the embedded task, generated"]


def _total(cfg: RunConfig, rows: int, *widths: int) -> int | list[int]:
    """The estimate's bytes per device at these widths (one: a number)."""
    inputs = abstract_run.abstract_inputs(cfg, rows)
    kv = tuple(m.config.num_kv_heads for m in inputs.models)
    totals = [capacity.estimate(inputs, sharding.make_mesh(-1, w, kv_heads=kv)).total for w in widths or (1,)]
    return totals if len(totals) > 1 else totals[0]


def test_a_batch_too_large_for_the_memory_names_the_batch_that_fits(capsys):
    cfg = load_config(RunConfig, TINY)  # batch 16 over data 8
    limit = (_total(cfg, 8) + _total(cfg, 16)) / 2
    assert doctor.main(["--config", TINY, "--memory-gib", str(limit / doctor.GiB)]) == 2
    out = capsys.readouterr().out
    (memory,) = lines(out)["memory"]
    fixes = f"set mesh.model=2, or set decoding.batch_size=8 ({_total(cfg, 8) / doctor.GiB:.2f} GiB, estimate)"
    assert memory.startswith("FAIL ") and memory.endswith(f"does not fit; {fixes}")
    assert out.endswith("doctor: 1 check(s) failed: the run would fail here\n")
    assert doctor.main(["--config", TINY, "--memory-gib", "0.00001"]) == 2
    assert "a batch of 8 still needs" in lines(capsys.readouterr().out)["memory"][0]


def test_the_paper_setting_on_cpu_memory_names_the_wider_model_axis(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, online: a warning per model
    cfg = load_config(RunConfig, None, PAPER_HUB)
    at_4, at_8 = _total(cfg, 32, 4, 8)
    limit = (at_4 + at_8) / 2 / doctor.GiB
    assert doctor.main(PAPER_HUB + ["--memory-gib", f"{limit}"]) == 2
    found = lines(capsys.readouterr().out)
    assert found["mesh"] == ["ok data 2 x model 2 x tensor 2 (mesh.model=auto (up to 4), the models' KV heads "
                             "(2, 4, 2))"]
    assert found["memory"][0].startswith(f"FAIL {at_4 / doctor.GiB:.2f} GiB per device at batch 32")
    assert "does not fit; set mesh.model_max=8" in found["memory"][0]
    assert [m.split(":")[0] for m in found["draft"] + found["target"] + found["prm"]] == [
        "warn Qwen/Qwen2.5-Math-1.5B-Instruct", "warn Qwen/Qwen2.5-Math-7B-Instruct",
        "warn Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B"]


def test_a_pinned_width_the_devices_cannot_take_fails_with_the_width_that_works(capsys):
    assert doctor.main(["--config", TINY, "mesh.model=3"]) == 2
    (mesh,) = lines(capsys.readouterr().out)["mesh"]
    assert mesh.startswith("FAIL mesh.model=3 does not divide the 8 devices JAX sees: set mesh.model=2")


def test_a_bad_config_is_one_error_line(capsys):
    assert doctor.main(["--config", TINY, "mesh.model=wide"]) == 2
    assert capsys.readouterr().err == "error: mesh.model: 'wide' fits none of int | 'auto'\n"


def fake_metadata(versions: dict[str, str], requires: dict[str, list[str]]):
    return versions.get, lambda name: requires.get(name, [])


JAX_REQUIRES = ["jaxlib<=0.10.2,>=0.10.1", "jaxlib==0.10.1; extra == \"minimum-jaxlib\"",
                "jaxlib<=0.10.2,>=0.10.2; extra == \"tpu\"", "libtpu==0.0.42.*; extra == \"tpu\"",
                "jax-cuda12-plugin[with-cuda]<=0.10.2,>=0.10.2; extra == \"cuda12\""]


@pytest.mark.parametrize("versions, verdict", [
    ({"jax": "0.10.2", "jaxlib": "0.10.2"}, "ok jax 0.10.2, jaxlib 0.10.2 (jax needs <=0.10.2,>=0.10.1); libtpu: "
                                            "not installed; CUDA plugin: not installed"),
    ({"jax": "0.10.2", "jaxlib": "0.10.1", "libtpu": "0.0.42.1"}, "fail jaxlib 0.10.1 does not satisfy "
                                                                  "<=0.10.2,>=0.10.2"),
    ({"jax": "0.10.2", "jaxlib": "0.10.2", "libtpu": "0.0.40"}, "fail libtpu 0.0.40 does not satisfy ==0.0.42.*"),
    ({"jax": "0.10.2", "jaxlib": "0.10.2", "libtpu": "0.0.42.1"}, "ok jax 0.10.2, jaxlib 0.10.2 (jax needs "
     "<=0.10.2,>=0.10.1 and <=0.10.2,>=0.10.2), libtpu 0.0.42.1 (jax needs ==0.0.42.*); CUDA plugin: not installed"),
    ({"jax": "0.10.2", "jaxlib": "0.10.2", "jax-cuda12-plugin": "0.10.2", "jax-cuda12-pjrt": "0.10.0"},
     "fail jax-cuda12-pjrt 0.10.0 does not satisfy ==0.10.2"),
])
def test_wheels_are_checked_against_what_jax_requires(versions, verdict):
    version_of, requires_of = fake_metadata(versions, {"jax": JAX_REQUIRES,
                                                       "jax-cuda12-plugin": ["jax-cuda12-pjrt==0.10.2"]})
    (check,) = doctor.version_checks(version_of, requires_of)
    assert f"{check.status} {check.text}".startswith(verdict)
    if check.status == "fail":
        assert check.text.endswith("install matching versions, e.g. pip install -U 'rsd_jax[tpu]' or 'rsd_jax[cuda]'")


def add_snapshot(cache: Path, repo: str, commit: str, files: dict[str, str], ref: str = "main") -> None:
    """A hub-cache entry as huggingface_hub lays it out (plain files: the scan reads names and sizes only)."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    for name, text in files.items():
        (repo_dir / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (repo_dir / "snapshots" / commit / name).write_text(text)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)


def test_hub_ids_are_looked_up_in_the_cache_and_sets_on_disk_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RSD_CACHE_DIR", str(tmp_path / "rsd"))
    monkeypatch.delenv("RSD_DATA_DIR", raising=False)
    add_snapshot(tmp_path / "hub", "Qwen/Qwen2.5-Math-1.5B-Instruct", "a" * 40,
                 {"config.json": "{}", "model.safetensors": "x" * 1000})
    add_snapshot(tmp_path / "hub", "Qwen/Qwen2.5-Math-7B-Instruct", "b" * 40, {"config.json": "{}"})  # no weights
    add_snapshot(tmp_path / "hub", "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "c" * 40,
                 {"config.json": "{}", "model.safetensors": "x"}, ref="v1")
    cfg = load_config(RunConfig, None, PAPER_HUB + ["data.source=gaokao2023en"])
    checks, folders = doctor.model_checks(cfg, None)
    assert [(c.topic, c.status) for c in checks] == [("draft", "ok"), ("target", "fail"), ("prm", "fail")]
    assert checks[0].text == "Qwen/Qwen2.5-Math-1.5B-Instruct: cached (aaaaaaaaaaaa, 0.00 GB, 2 files)"
    assert checks[1].text.startswith("Qwen/Qwen2.5-Math-7B-Instruct: cached without weights (only config.json), "
                                     "and HF_HUB_OFFLINE=1: download it once online")
    assert "not in the hub cache" in checks[2].text and "(cached revisions: v1)" in checks[2].text
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2.5-Math-1.5B-Instruct" / "snapshots" / ("a" * 40)
    assert folders == {"draft": snapshot}
    data = doctor.data_checks(cfg, None)
    assert (data[0].status, data[0].text) == ("fail", "gaokao2023en: not here and downloads are off "
                                                      "(HF_HUB_OFFLINE=1): set RSD_DATA_DIR to a folder with "
                                                      "gaokao2023en.jsonl, or data.path")
    assert data[1].text.startswith("readable here: math500, gsm8k; not here (downloads are off (HF_HUB_OFFLINE=1)): ")


def test_a_multi_host_config_is_checked_on_this_host_with_a_warning():
    checks = doctor.run_checks(load_config(RunConfig, TINY, ["mesh.distributed=true"]), TINY, None)
    assert [c.text for c in checks if c.status == "warn"] == [
        "mesh.distributed: this host's devices only (the doctor does not join the other processes); run it on each "
        "host"]


def test_a_backend_that_cannot_start_is_a_failure_not_a_traceback(monkeypatch):
    def unavailable():
        raise RuntimeError("Unable to initialize backend 'tpu': no TPU found\nmore detail")

    monkeypatch.setattr(doctor.jax, "devices", unavailable)
    checks = doctor.run_checks(load_config(RunConfig, TINY), TINY, None)
    assert [(c.topic, c.status) for c in checks] == [("devices", "fail"), ("jax", "ok")]
    assert checks[0].text.startswith("JAX cannot start its devices (Unable to initialize backend 'tpu': no TPU found)")


def test_local_folders_and_tokenizer_files_are_checked_on_disk():
    cfg = load_config(RunConfig, TINY, ["models.target.path=/nonexistent/target",
                                        "models.tokenizer=checkpoints/arith_draft/char_tokenizer.json"])
    checks, folders = doctor.model_checks(cfg, TINY)
    assert [(c.topic, c.status) for c in checks] == [("draft", "ok"), ("target", "fail"), ("prm", "ok"),
                                                     ("models.tokenizer", "ok")]
    assert checks[1].text == "/nonexistent/target: no such folder /nonexistent/target (models.target)"
    assert checks[3].text.startswith("local file ") and checks[3].text.endswith("arith_draft/char_tokenizer.json")
    assert set(folders) == {"draft", "prm", "tokenizer"}
