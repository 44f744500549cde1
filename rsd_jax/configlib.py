"""Typed, frozen config schemas from YAML plus `key.path=value` overrides, with strict validation.

A schema is a tree of frozen dataclasses whose fields all have defaults and a one-line doc in their
metadata (`doc(...)`), optionally a range. `load_config` fails with a `ConfigError` that names the key: an
unknown key (with the nearest valid one), a wrong type, a value out of range, a missing or malformed file.

Every command that reads a schema offers the same two flags (`add_config_flags`): `--describe` lists every key
with its type, default and doc (`describe_if_asked`, before the config is read), `--print-config` prints the
resolved config as YAML (`print_config_if_asked`, once it is read) and the command exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from rsd_jax.errors import ConfigError


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key == "<<" or not isinstance(key, typing.Hashable):
                    continue
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (first on line {first[key] + 1}); keep one",
                        key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """yaml.safe_load, refusing duplicate keys (UniqueKeyLoader)."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def doc(default: Any, text: str, range: tuple[float, float] | None = None) -> Any:
    """A dataclass field with a default, a one-line doc and an optional closed range."""
    meta = {"doc": text, "range": range}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hint):
            keys += _all_keys(hint, prefix + f.name + ".")
    return keys


def _type_name(hint: Any) -> str:
    """A readable name of a type hint: `float | None`, `tuple[int, ...]`, `'a' | 'b'` (a Literal's choices)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " | ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        return "tuple[" + ", ".join("..." if a is Ellipsis else _type_name(a) for a in args) + "]"
    return getattr(hint, "__name__", str(hint))


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Checks (and lightly converts) one value against a type hint; raises ConfigError naming the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {_type_name(hint)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key + ".")
    raise ConfigError(f"{key}: unsupported type {hint}")


def build(cls, data: Any, prefix: str = ""):
    """Builds dataclass `cls` from a nested dict, validating every key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            valid = [prefix + k for k in _all_keys(cls)]
            guess = difflib.get_close_matches(prefix + str(name), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {guess[0]!r}?" if guess else f"; valid keys here: {', '.join(fields)}"
            raise ConfigError(f"unknown config key {prefix + str(name)!r}{hint}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key = prefix + name
        value = _convert(data[name], hints[name], key)
        bounds = f.metadata.get("range")
        if bounds is not None and isinstance(value, (int, float)) and not bounds[0] <= value <= bounds[1]:
            raise ConfigError(f"{key} must be in [{bounds[0]}, {bounds[1]}], got {value!r}")
        values[name] = value
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


def _field_hint(cls, keys: Sequence[str]) -> Any:
    """The type hint of the field at `keys` under schema `cls`, or None when there is no such field."""
    hint = cls
    for k in keys:
        if not dataclasses.is_dataclass(hint) or k not in _hints(hint):
            return None
        hint = _hints(hint)[k]
    return hint


def _text_field(hint: Any) -> bool:
    """A field that takes a string (str, or str | None)."""
    return hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint))


def parse_override(text: str, cls=None) -> tuple[list[str], Any]:
    """`a.b.c=value` as (["a", "b", "c"], value), the value parsed as YAML (`3`, `0.7`, `true`, `[1, 2]`, `null`).

    With the schema `cls`, a string field keeps its text when YAML would read it as block syntax or cannot read
    it: `data.prompts_file=-` is "-" (YAML: a list holding null), `x=a: b` is "a: b". Flow lists `[...]`,
    numbers and booleans are still parsed (and refused by the field's type check), `null` still clears an
    optional field."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    hint = _field_hint(cls, keys) if cls is not None else None
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        if not _text_field(hint):
            raise ConfigError(f"override {text!r}: cannot parse value ({e})") from None
        value = raw.strip()
    if _text_field(hint) and isinstance(value, (list, dict)) and not raw.strip().startswith(("[", "{")):
        value = raw.strip()
    return keys, value


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file; ConfigError naming the file (and the line of a syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data or {}


def load_config(cls, path: str | Path | None = None, overrides: Sequence[str] = ()):
    """The config of schema `cls` from a YAML file (optional) and `key.path=value` overrides."""
    data = read_yaml(path) if path else {}
    for text in overrides:
        keys, value = parse_override(text, cls)
        node = data
        for k in keys[:-1]:
            if node.get(k) is None:  # a missing section, or one left empty in the YAML file
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return build(cls, data)


def to_dict(config) -> dict:
    """A config as plain nested dicts and lists (tuples become lists), ready for YAML or JSON."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return list(map(plain, v)) if isinstance(v, tuple) else v

    return plain(config)


def to_yaml(config) -> str:
    """A config as YAML text that `load_config` reads back into an equal config."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def describe(cls, prefix: str = "") -> str:
    """Every key of the schema with its type, default and doc, one per line."""
    lines = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            lines.append(f"{prefix}{f.name}:  # {f.metadata.get('doc', '')}")
            lines.append(describe(hint, prefix + f.name + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        bounds = f.metadata.get("range")
        extra = f" in [{bounds[0]}, {bounds[1]}]" if bounds else ""
        lines.append(f"{prefix}{f.name} = {default!r}  ({_type_name(hint)}{extra}) {f.metadata.get('doc', '')}")
    return "\n".join(lines)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """--print-config and --describe, the flags of every command that reads a config schema."""
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--describe", action="store_true", help="list every config key with its doc and exit")


def describe_if_asked(args: argparse.Namespace, cls) -> bool:
    """With --describe, prints every key of schema `cls` and returns True: the command is done."""
    if args.describe:
        print(describe(cls))
    return args.describe


def print_config_if_asked(args: argparse.Namespace, *configs) -> bool:
    """With --print-config, prints the resolved config(s) as YAML (several as YAML documents, `---` between them)
    and returns True: the command is done."""
    if args.print_config:
        print("---\n".join(to_yaml(c) for c in configs), end="")
    return args.print_config
