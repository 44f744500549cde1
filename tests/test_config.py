"""Config schemas: YAML + `key.path=value` overrides, strict validation naming the key, round-trips, docs."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from rsd_jax.config import DATASETS, METHODS, RSDConfig, RunConfig, TheoryConfig, TrainConfig
from rsd_jax.configlib import describe, load_config, to_yaml
from rsd_jax.decoding.acceptance import WEIGHTINGS
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.errors import ConfigError
from rsd_jax.paths import resolve_path

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = (RunConfig, TrainConfig, TheoryConfig)


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def field_paths(cls, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every (key path, field) of a schema, nested sections included."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.append((prefix + f.name, f))
        if dataclasses.is_dataclass(hints[f.name]):
            out += field_paths(hints[f.name], prefix + f.name + ".")
    return out


def error_of(overrides: list[str], cls=RunConfig, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, overrides)
    return str(info.value)


def test_defaults_without_file_or_overrides():
    assert load_config(RunConfig, None, []) == RunConfig()


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "rsd:\n  delta: 0.5\n  weighting: logistic\ndecoding:\n  max_new_tokens: 64\n")
    cfg = load_config(RunConfig, path, ["rsd.delta=0.9", "decoding.temperature=0.7", "data.levels=[1, 2]",
                                        "output=null", "rsd.online_budget=true"])
    assert cfg.rsd.delta == 0.9 and cfg.rsd.weighting == "logistic"
    assert cfg.decoding.max_new_tokens == 64 and cfg.decoding.temperature == 0.7
    assert cfg.data.levels == (1, 2) and cfg.output is None and cfg.rsd.online_budget is True


def test_nested_override_creates_and_fills_sections(tmp_path):
    path = write(tmp_path, "models:\n  draft:\n    path: a\nrsd:\n")  # `rsd:` left empty
    cfg = load_config(RunConfig, path, ["models.prm.head=value", "models.draft.dtype=bfloat16", "rsd.p=0.25"])
    assert cfg.models.draft == dataclasses.replace(cfg.models.draft, path="a", dtype="bfloat16")
    assert cfg.models.prm.head == "value" and cfg.rsd.p == 0.25


def test_override_value_may_contain_equals():
    cfg = load_config(RunConfig, None, ["data.prompts=['x = 1?']"])
    assert cfg.data.prompts == ("x = 1?",)


def test_malformed_override():
    assert "key.path=value" in error_of(["rsd.delta"])


@pytest.mark.parametrize("override, expected", [
    ("rsd.deltta=0.5", "unknown config key 'rsd.deltta'; did you mean 'rsd.delta'?"),
    ("decodng.temperature=1", "unknown config key 'decodng'; did you mean 'decoding'?"),
    ("models.draft.dtyp=float32", "unknown config key 'models.draft.dtyp'; did you mean 'models.draft.dtype'?"),
])
def test_unknown_key_names_nearest_valid_key(override, expected):
    assert error_of([override]) == expected


def test_unknown_key_in_file(tmp_path):
    path = write(tmp_path, "decoding:\n  max_new_token: 3\n")
    assert "'decoding.max_new_token'; did you mean 'decoding.max_new_tokens'?" in error_of([], path=path)


@pytest.mark.parametrize("override, key, shown", [
    ("rsd.delta=abc", "rsd.delta", "'abc'"),
    ("decoding.top_k=true", "decoding.top_k", "True"),  # bool is not an int
    ("decoding.max_new_tokens=2.5", "decoding.max_new_tokens", "2.5"),
    ("rsd.online_budget=1", "rsd.online_budget", "1"),
    ("rsd.budget=high", "rsd.budget", "'high'"),  # float | None
    ("data.levels=[1, a]", "data.levels[1]", "'a'"),
    ("data.prompts=hello", "data.prompts", "'hello'"),  # a tuple needs a list
    ("models.draft.path=3", "models.draft.path", "3"),
    ("rsd=3", "rsd", "3"),  # a section needs a mapping
])
def test_wrong_type_names_key_and_value(override, key, shown):
    message = error_of([override])
    assert message.startswith(key + " must be") and shown in message


def test_int_accepted_for_float_and_lists_become_tuples():
    cfg = load_config(RunConfig, None, ["rsd.delta=1", "rsd.thresholds=[0, 0.5, 1]"])
    assert cfg.rsd.delta == 1.0 and isinstance(cfg.rsd.delta, float)
    assert cfg.rsd.thresholds == (0.0, 0.5, 1.0) and isinstance(cfg.rsd.thresholds, tuple)


@pytest.mark.parametrize("override, key", [
    ("rsd.delta=2.5", "rsd.delta"), ("rsd.delta=-0.1", "rsd.delta"), ("rsd.delta=.nan", "rsd.delta"),
    ("rsd.budget=1.5", "rsd.budget"), ("decoding.top_p=0", "decoding.top_p"),
    ("decoding.max_steps=0", "decoding.max_steps"), ("data.n=0", "data.n"),
])
def test_out_of_range_names_key(override, key):
    assert error_of([override]).startswith(key + " must be in [")


def test_warmup_must_end_before_training_does():
    assert error_of(["optim.warmup_steps=100", "optim.total_steps=60"], TrainConfig) == (
        "optim.warmup_steps (100) must be below optim.total_steps (60)")


def test_delta_above_one_rejects_all_is_allowed():
    assert load_config(RunConfig, None, ["rsd.delta=1.01"]).rsd.delta == 1.01


@pytest.mark.parametrize("override, key, choices", [
    ("rsd.weighting=foo", "rsd.weighting", WEIGHTINGS),
    ("rsd.method=sampling", "rsd.method", METHODS),
    ("models.prm.head=logit", "models.prm.head", ("value", "token_logit")),
    ("data.source=mnist", "data.source", DATASETS),
])
def test_literal_choices(override, key, choices):
    message = error_of([override])
    assert message.startswith(key + " must be one of ")
    tail = ", or any name with data.path (a set's JSONL file)" if key == "data.source" else ""  # any set by path
    assert f"must be one of {', '.join(choices)}{tail}; got" in message and "\n" not in message


def test_every_weighting_and_method_is_accepted():
    for w in WEIGHTINGS:
        assert load_config(RunConfig, None, [f"rsd.weighting={w}"]).rsd.weighting == w
    assert load_config(RunConfig, None, [f"rsd.methods=[{', '.join(METHODS)}]"]).rsd.methods == METHODS


def test_method_variants():
    variants = ["best_of_n:n=16", "beam_search:beam_width=2,beam_expansions=3", "rsd:budget=0.2"]
    assert load_config(RunConfig, None, [f"rsd.methods={variants}"]).rsd.methods == tuple(variants)


@pytest.mark.parametrize("variant, expected", [
    ("nope", "rsd.methods[1] must start with one of " + ", ".join(METHODS)),
    ("best_of_n:nn=3", "rsd.methods[1]: unknown rsd key 'nn' in 'best_of_n:nn=3'; did you mean 'n'?"),
    ("best_of_n:n", "rsd.methods[1]: 'n' in 'best_of_n:n' is not key=value"),
])
def test_bad_method_variant_names_key(variant, expected):
    assert error_of([f"rsd.methods=[rsd, '{variant}']"]).startswith(expected)


def test_direct_construction_checks_methods():
    with pytest.raises(ConfigError, match="rsd.method must be one of"):
        RSDConfig(method="nope")


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert str(missing) in error_of([], path=missing)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "rsd:\n  delta: 0.5\n  weighting: [binary\ndecoding: {}\n")
    message = error_of([], path=path)
    assert str(path) in message and " line " in message


def test_top_level_must_be_mapping(tmp_path):
    assert "mapping" in error_of([], path=write(tmp_path, "- 1\n- 2\n"))


def test_non_utf8_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"rsd:\n  delta: \xff\xfe\n")
    assert "UTF-8" in error_of([], path=path)


@pytest.mark.parametrize("cls", SCHEMAS)
def test_to_yaml_round_trips(tmp_path, cls):
    assert load_config(cls, write(tmp_path, to_yaml(cls())), []) == cls()


def test_to_yaml_round_trips_changed_values(tmp_path):
    cfg = load_config(RunConfig, None, ["rsd.thresholds=[0.3, 1.01]", "rsd.budget=0.25", "models.tokenizer=qwen",
                                        "data.prompts=['a: b', 'line\nbreak']", "decoding.delimiter=\"\\n\""])
    assert load_config(RunConfig, write(tmp_path, to_yaml(cfg)), []) == cfg


@pytest.mark.parametrize("cls", SCHEMAS)
def test_every_field_has_doc_and_describe_lists_it(cls):
    text = describe(cls)
    lines = text.splitlines()
    for key, f in field_paths(cls):
        assert f.metadata.get("doc"), f"{cls.__name__}: {key} has no doc"
        assert any(line.startswith((f"{key} = ", f"{key}:")) and f.metadata["doc"] in line for line in lines), key


def test_describe_shows_type_default_and_range():
    text = describe(RunConfig)
    assert "rsd.delta = 0.7  (float in [0.0, 2.0])" in text
    assert "rsd.budget = None  (float | None in [0.0, 1.0])" in text
    assert "models.prm.head = None  ('value' | 'token_logit' | None)" in text
    assert "data.levels = (3, 4, 5)  (tuple[int, ...])" in text


@pytest.mark.parametrize("cls", SCHEMAS)
def test_configs_are_hashable_and_frozen(cls):
    cfg = cls()
    assert hash(cfg) == hash(cls())
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, name, None)
    assert {cfg: 1}[load_config(cls, None, [])] == 1


def test_decoding_spec_builds_decode_spec(tmp_path):
    cfg = load_config(RunConfig, None, ["decoding.temperature=0.5", "decoding.top_k=7", "decoding.top_p=0.9",
                                        "decoding.max_new_tokens=40", "decoding.max_steps=5",
                                        "decoding.max_step_tokens=12", "decoding.chunk=8",
                                        "rsd.weighting=logistic", "rsd.online_budget=true"])
    spec = cfg.decoding.spec(cfg.rsd)
    assert isinstance(spec, DecodeSpec)
    assert (spec.max_new_tokens, spec.max_steps, spec.max_step_tokens, spec.chunk) == (40, 5, 12, 8)
    assert spec.sampling == Sampling(0.5, 7, 0.9)
    assert spec.weighting == "logistic" and spec.online_budget is True
    again = load_config(RunConfig, write(tmp_path, to_yaml(cfg)), [])
    assert again.decoding.spec(again.rsd) == spec and hash(again.decoding.spec(again.rsd)) == hash(spec)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    prefixes = {"train_": TrainConfig, "theory_": TheoryConfig}
    cls = next((c for p, c in prefixes.items() if path.name.startswith(p)), RunConfig)
    cfg = load_config(cls, path, [])
    assert load_config(cls, write(tmp_path, to_yaml(cfg)), []) == cfg


def test_resolve_path(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    (repo / "checkpoints" / "draft").mkdir(parents=True)
    config_file = repo / "configs" / "x.yaml"
    assert resolve_path("checkpoints/draft", config_file) == repo / "checkpoints" / "draft"
    assert resolve_path(str(tmp_path), config_file) == tmp_path  # absolute stays
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    assert resolve_path("here", config_file) == tmp_path / "here"  # falls back to the current directory
    assert resolve_path("here", None) == tmp_path / "here"
