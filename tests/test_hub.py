"""Hub ids as model paths, fully offline: a cache folder laid out as huggingface_hub's, and a local fake hub."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch

from hf_models import qwen2_config, save_causal_lm, save_skywork_prm
from rsd_jax import convert, decode
from rsd_jax.config import ModelRef
from rsd_jax.errors import CheckpointError, ConfigError
from rsd_jax.loading import _tokenizer_spec, load_ref, load_tokenizer
from rsd_jax.qwen_vocabulary import qwen_tokenizer
from rsd_jax.weights import restore_model
from rsd_jax.weights.sources import HubId, model_folder, parse_source

QWEN_VOCAB = 151936


def commit_of(label: str) -> str:
    return hashlib.sha1(label.encode()).hexdigest()


def add_snapshot(cache: Path, repo: str, src: Path, commit: str, refs: tuple[str, ...] = ()) -> Path:
    """Puts every file under `src` into the cache as the hub does: `blobs/<sha256>`, `snapshots/<commit>/<path>` as
    relative symlinks to the blobs, and `refs/<ref>` holding the commit. Returns the snapshot folder."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(*[".."] * (len(link.relative_to(repo_dir).parts) - 1), "blobs", blob.name))
    for ref in refs:
        (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty hub cache, HF_HUB_OFFLINE=1, and a current directory without model folders."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return cache


@pytest.fixture
def two_revisions(offline, tmp_path):
    """org/name with `main` and a tag `v1` on two commits, each a folder with a distinct config.json."""
    snapshots = {}
    for ref in ("main", "v1"):
        src = tmp_path / f"src-{ref}"
        src.mkdir()
        (src / "config.json").write_text(json.dumps({"ref": ref}))
        snapshots[ref] = add_snapshot(offline, "org/name", src, commit_of(ref), refs=(ref,))
    return snapshots


@pytest.mark.parametrize("raw, expected", [
    ("org/name", HubId("org/name")),
    ("Qwen/Qwen2.5-Math-7B-Instruct", HubId("Qwen/Qwen2.5-Math-7B-Instruct")),
    ("org/name@v1.0", HubId("org/name", "v1.0")),
    ("org/name@refs/pr/1", HubId("org/name", "refs/pr/1")),
])
def test_org_name_that_is_not_on_disk_is_a_hub_id(raw, expected, offline):
    assert parse_source(raw) == expected


@pytest.mark.parametrize("raw", ["./org/name", "../org/name", "/no/such/dir", "~/no-such-rsd-dir", "a/b/c",
                                 "org/name/", "draft", "a--b/c", "-org/name", "org/name.git", "org/.name"])
def test_other_strings_are_paths(raw, offline):
    assert isinstance(parse_source(raw), Path)


def test_a_folder_on_disk_wins_over_the_hub(offline):
    (Path.cwd() / "org" / "name").mkdir(parents=True)
    assert parse_source("org/name") == Path.cwd() / "org" / "name"
    with pytest.raises(ConfigError, match="only for hub ids"):
        parse_source("org/name", revision="v1")


def test_a_relative_folder_resolves_against_the_config_file(offline, tmp_path):
    (tmp_path / "repo" / "models" / "draft").mkdir(parents=True)
    (tmp_path / "repo" / "configs").mkdir()
    assert parse_source("models/draft", tmp_path / "repo" / "configs" / "x.yaml") == tmp_path / "repo/models/draft"
    assert parse_source("models/other", tmp_path / "repo" / "configs" / "x.yaml") == HubId("models/other")


@pytest.mark.parametrize("raw, revision, message", [
    ("org/name@", None, "empty revision"),
    ("org/na me@v1", None, "not a valid hub id"),
    ("org/name@v1", "v2", "names revision 'v1' but the revision given is 'v2'"),
])
def test_malformed_hub_ids_are_config_errors(raw, revision, message, offline):
    with pytest.raises(ConfigError, match=message) as e:
        parse_source(raw, revision=revision)
    assert "\n" not in str(e.value)


def test_hub_ids_resolve_to_cached_snapshots(two_revisions):
    main, v1 = two_revisions["main"], two_revisions["v1"]
    assert model_folder("org/name") == main
    assert model_folder("org/name@v1") == v1
    assert model_folder("org/name", revision="v1") == v1
    assert model_folder("org/name@v1", revision="v1") == v1
    assert model_folder(f"org/name@{commit_of('v1')}") == v1
    assert json.loads((model_folder("org/name@v1") / "config.json").read_text()) == {"ref": "v1"}


def test_the_cache_can_be_named_by_hf_home(two_revisions, offline, monkeypatch, tmp_path):
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "hub").symlink_to(offline)
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    assert model_folder("org/name").resolve() == two_revisions["main"].resolve()


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_offline_errors_name_the_id_and_the_way_out(two_revisions, offline):
    with pytest.raises(CheckpointError) as e:
        model_folder("org/name@nope")
    text = _one_line(e)
    assert "revision 'nope' of hub model 'org/name' is not in the Hugging Face cache (HF_HUB_OFFLINE=1" in text
    assert "cached revisions: main, v1" in text and "download it once online, or give a local folder" in text
    with pytest.raises(CheckpointError) as e:
        model_folder("org/missing")
    text = _one_line(e)
    assert "hub model 'org/missing' is not in the Hugging Face cache (HF_HUB_OFFLINE=1" in text
    assert f"no local folder {Path.cwd() / 'org' / 'missing'}" in text and "download it once online" in text


@pytest.mark.parametrize("raw", ["./org/missing", "/no/such/dir", "a/b/c", "draft"])
def test_a_missing_local_folder_is_still_model_folder_not_found(raw, offline):
    with pytest.raises(CheckpointError, match="model folder not found: "):
        load_ref(ModelRef(path=raw), "draft", None)


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers the model-info call as the hub does for a gated, a missing or a broken repository, or a missing
    revision (the X-Error-Code header is what huggingface_hub reads)."""

    def do_GET(self):
        code, error = ((403, "GatedRepo") if "/org/gated" in self.path else
                       (401, "RepoNotFound") if "/org/missing" in self.path else
                       (404, "RevisionNotFound") if "/revision/nope" in self.path else (500, None))
        self.send_response(code)
        if error:
            self.send_header("X-Error-Code", error)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def online(offline, monkeypatch):
    """HF_HUB_OFFLINE unset, the hub endpoint pointed at a local fake hub; yields a function that points it at a
    closed port instead (the hub unreachable)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")

    def unreachable():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")

    yield unreachable
    server.shutdown()


@pytest.mark.parametrize("raw, message", [
    ("org/gated", "hub model 'org/gated' is gated: accept its terms on https://huggingface.co/org/gated and log in"),
    ("org/missing", "hub model 'org/missing' was not found on the Hugging Face hub and there is no local folder"),
    ("org/name@nope", "revision 'nope' does not exist in hub model 'org/name' on the Hugging Face hub"),
    ("org/broken", "cannot get hub model 'org/broken' from the Hugging Face hub (HfHubHTTPError: Server error '500"),
])
def test_online_hub_errors_are_one_line(raw, message, online):
    with pytest.raises(CheckpointError) as e:
        model_folder(raw)
    assert message in _one_line(e)


def test_an_unreachable_hub_falls_back_to_the_cache(two_revisions, online):
    online()
    assert model_folder("org/name@v1") == two_revisions["v1"]
    with pytest.raises(CheckpointError) as e:
        model_folder("org/other")
    text = _one_line(e)
    assert "cannot get hub model 'org/other' from the Hugging Face hub (ConnectError" in text
    assert "and it is not in the cache" in text and "check the network, or give a local folder" in text


def test_a_tokenizer_hub_id(offline, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "world": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    src = tmp_path / "tok"
    src.mkdir()
    raw.save(str(src / "tokenizer.json"))
    (src / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<unk>"}))
    snapshot = add_snapshot(offline, "org/tok", src, commit_of("tok"), refs=("main",))
    spec = _tokenizer_spec("org/tok", None)
    assert Path(spec) == snapshot
    assert load_tokenizer(spec, Path("unused")).encode("hello world") == [1, 2]


@pytest.fixture(scope="module")
def hub_models(tmp_path_factory):
    """Tiny random HF models (the Qwen vocabulary) for the cache: org/tiny-draft; org/tiny-target whose `main` is
    one model and tag `v1` another (the one returned); org/tiny-prm; and a small-vocabulary org/tiny-lm."""
    root = tmp_path_factory.mktemp("hub-models")
    small = dict(vocab_size=QWEN_VOCAB, hidden_size=32, intermediate_size=48, num_attention_heads=4)
    save_causal_lm(qwen2_config(**small, num_hidden_layers=1), root / "draft", seed=1)
    save_causal_lm(qwen2_config(**small), root / "target-main", seed=4)
    target = save_causal_lm(qwen2_config(**small), root / "target-v1", seed=2)
    save_skywork_prm(root / "prm", seed=3, **small)
    save_causal_lm(qwen2_config(num_hidden_layers=1), root / "lm", seed=5)
    return root, target


@pytest.fixture
def hub_cache(hub_models, offline):
    root, target = hub_models
    add_snapshot(offline, "org/tiny-draft", root / "draft", commit_of("draft"), refs=("main",))
    add_snapshot(offline, "org/tiny-target", root / "target-main", commit_of("target-main"), refs=("main",))
    add_snapshot(offline, "org/tiny-target", root / "target-v1", commit_of("target-v1"), refs=("v1",))
    add_snapshot(offline, "org/tiny-prm", root / "prm", commit_of("prm"))  # reachable by commit hash only
    add_snapshot(offline, "org/tiny-lm", root / "lm", commit_of("lm"), refs=("main",))
    return target


def test_decode_runs_on_hub_ids_offline(hub_cache, tmp_path):
    question = "What is 7 times 6?"
    out = tmp_path / "out"
    argv = ["models.draft.path=org/tiny-draft", "models.target.path=org/tiny-target@v1",
            "models.prm.path=org/tiny-prm", f"models.prm.revision={commit_of('prm')}", "models.tokenizer=qwen",
            "data.source=prompts", f"data.prompts=[{json.dumps(question)}]", "decoding.max_new_tokens=8",
            "decoding.chunk=8", "rsd.method=target", "--out", str(out), "--quiet"]
    assert decode.main(argv) == 0
    ids = qwen_tokenizer().encode(question + "\n")
    with torch.no_grad():  # the v1 target's greedy decoding (main is another model)
        ref = hub_cache.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                 eos_token_id=[151643, 151645], pad_token_id=151643)[0, len(ids):].tolist()
    assert json.loads((out / "results.jsonl").read_text())["token_ids"] == ref


def test_convert_takes_a_hub_id(hub_cache, tmp_path, capsys):
    assert convert.main(["org/tiny-lm", str(tmp_path / "lm"), "--dtype", "float32"]) == 0
    assert restore_model(tmp_path / "lm").config.vocab_size == 97
    assert convert.main(["org/tiny-lm", str(tmp_path / "x"), "--revision", "nope"]) == 2
    assert "revision 'nope' of hub model 'org/tiny-lm' is not in the Hugging Face cache" in capsys.readouterr().err


def test_an_orbax_checkpoint_in_the_cache_and_the_files_downloaded(offline, tmp_path):
    from huggingface_hub.utils import filter_repo_objects

    from rsd_jax.data.char_tokenizer import CharTokenizer
    from rsd_jax.models import Model, ModelConfig
    from rsd_jax.weights import save_model
    from rsd_jax.weights.sources import MODEL_FILES

    tok = CharTokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8)
    src = save_model(Model.init(cfg, 0), tmp_path / "orbax")
    tok.save(src / "char_tokenizer.json")
    files = [str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()]
    assert sorted(filter_repo_objects(files, allow_patterns=list(MODEL_FILES))) == sorted(files)
    hf_repo = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
               "tokenizer_config.json", "vocab.json", "merges.txt", "README.md", "pytorch_model.bin", ".gitattributes"]
    assert sorted(filter_repo_objects(hf_repo, allow_patterns=list(MODEL_FILES))) == sorted(hf_repo[:7])
    add_snapshot(offline, "org/tiny-orbax", src, commit_of("orbax"), refs=("main",))
    assert load_ref(ModelRef(path="org/tiny-orbax"), "draft", None).config == cfg
    assert isinstance(load_tokenizer(None, model_folder("org/tiny-orbax")), CharTokenizer)
