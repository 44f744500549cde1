"""HF tokenizers: a `tokenizer.json` (and the special tokens its folder names) behind the project's tokenizer
protocol (rsd_jax.tokenizer.Tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from rsd_jax.errors import CheckpointError, InputError


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _chat_template(folder: Path, tokenizer_config: dict) -> str | None:
    """The folder's chat template: chat_template.jinja, else tokenizer_config.json's chat_template (a string, or a
    list of named templates: the "default" one)."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _ids(value) -> list[int]:
    """Token ids of a config entry: an int, a list of ints, or null."""
    if isinstance(value, int):
        return [value]
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


class HFTokenizer:
    """A `tokenizers.Tokenizer` (an HF `tokenizer.json`) behind the project's protocol."""

    def __init__(self, tokenizer, *, bos_id: int | None, eos_ids: Iterable[int], pad_id: int,
                 chat_template: str | None = None):
        self._tok = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_ids, self.pad_id = bos_id, tuple(eos_ids), pad_id
        self.chat_template = chat_template  # Jinja source of the folder's chat template, if it has one

    def fingerprint(self) -> tuple:
        """Equal for two tokenizers that encode, decode and mark special tokens identically."""
        return self._tok.to_str(), self.bos_id, self.eos_ids, self.pad_id

    @classmethod
    def from_folder(cls, folder: str | Path, eos: Iterable[str] | None = None) -> "HFTokenizer":
        """Reads `tokenizer.json` of an HF snapshot folder (or the file itself) and its special tokens.

        BOS and PAD come from tokenizer_config.json, else special_tokens_map.json (never from config.json: Qwen2.5
        names a bos_token_id there that its tokenizer never adds). EOS are the given token strings, else the union,
        in this order, of the tokenizer files' eos_token and the eos_token_id of config.json and
        generation_config.json. PAD defaults to the first EOS, else 0.
        """
        from tokenizers import Tokenizer as RawTokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json" if folder.is_dir() else folder
        if not path.is_file():
            raise CheckpointError(f"no tokenizer.json at {path}")
        try:
            raw = RawTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on parse errors
            raise CheckpointError(f"{path}: cannot read tokenizer ({e})") from None
        files = [path.parent / n for n in ("tokenizer_config.json", "special_tokens_map.json")]
        configs = [(f, _read_json(f)) for f in files]

        def special(key: str) -> int | None:
            for file, cfg in configs:
                if key in cfg:
                    entry = cfg[key]
                    text = entry.get("content") if isinstance(entry, dict) else entry
                    if not text:
                        return None
                    if (i := raw.token_to_id(text)) is None:
                        raise CheckpointError(f"{file}: {key} {text!r} is not a token of {path}")
                    return i
            return None

        if eos is not None:
            eos_ids = []
            for text in eos:
                if (i := raw.token_to_id(text)) is None:
                    raise InputError(f"EOS token {text!r} is not a token of {path}")
                eos_ids.append(i)
        else:
            eos_ids = [i for i in [special("eos_token")] if i is not None]
            for name in ("config.json", "generation_config.json"):
                eos_ids += _ids(_read_json(path.parent / name).get("eos_token_id"))
        eos_ids = list(dict.fromkeys(eos_ids))
        pad = special("pad_token")
        return cls(raw, bos_id=special("bos_token"), eos_ids=eos_ids,
                   pad_id=pad if pad is not None else eos_ids[0] if eos_ids else 0,
                   chat_template=_chat_template(path.parent, configs[0][1]))

    def save(self, folder: str | Path) -> None:
        """Writes tokenizer.json and tokenizer_config.json (BOS, first EOS, PAD) into folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(folder / "tokenizer.json"))
        text = lambda i: None if i is None else self._tok.id_to_token(i)
        config = {"bos_token": text(self.bos_id), "eos_token": text(self.eos_ids[0] if self.eos_ids else None),
                  "pad_token": text(self.pad_id)}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        return self._tok.decode([int(token_id)], skip_special_tokens=False)
