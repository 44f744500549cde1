"""A tiny character-level tokenizer for the arithmetic task, implementing the project's tokenizer protocol.

Ids: PAD 0, BOS 1, EOS 2, the step delimiter "\\n\\n" 3 (one token, so a step ends on one id), then one id
per character. Encoding merges "\\n\\n" greedily. Serialisable, so checkpoints carry it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from rsd_jax.errors import InputError

SPECIALS = ("<pad>", "<bos>", "<eos>", "\n\n")
ARITH_CHARACTERS = "0123456789+-*=.? \nABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz,:"


class CharTokenizer:
    pad_id, bos_id, eos_ids, delimiter_id = 0, 1, (2,), 3

    def __init__(self, characters: str = ARITH_CHARACTERS):
        if len(set(characters)) != len(characters):
            raise InputError("tokenizer characters must be distinct")
        self.characters = characters
        self._id = {c: i + len(SPECIALS) for i, c in enumerate(characters)}

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.characters)

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            if text.startswith("\n\n", i):
                ids.append(self.delimiter_id)
                i += 2
                continue
            c = text[i]
            if c not in self._id:
                raise InputError(f"character {c!r} is not in the tokenizer's vocabulary")
            ids.append(self._id[c])
            i += 1
        return ids

    def token_text(self, token_id: int) -> str:
        if token_id < len(SPECIALS):
            return "" if token_id in (self.pad_id, self.bos_id, *self.eos_ids) else SPECIALS[token_id]
        return self.characters[token_id - len(SPECIALS)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.token_text(int(i)) for i in ids)

    def to_dict(self) -> dict:
        return {"kind": "char", "characters": self.characters}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if d.get("kind") != "char":
            raise InputError(f"not a char tokenizer description: {d}")
        return cls(d["characters"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read tokenizer {path}: {e}") from None
