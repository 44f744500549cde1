"""A tiny character-level tokenizer for the arithmetic task, implementing the project's tokenizer protocol.

Ids: PAD 0, BOS 1, EOS 2, the step delimiter "\\n\\n" 3 (one token, so a step ends on exactly one stop id and
the PRM stop table is trivial), then one id per character. Encoding merges "\\n\\n" greedily ("\\n\\n\\n" is
delimiter + "\\n"). The specials PAD, BOS and EOS have no text. Serialisable (`to_dict`, `save`), so every
checkpoint carries the tokenizer it was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from rsd_jax.errors import InputError

SPECIALS = ("<pad>", "<bos>", "<eos>", "\n\n")
# the character set the shipped checkpoints were trained with (changing it changes every id)
ARITH_CHARACTERS = "0123456789+-*=.? \nABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz,:"


class CharTokenizer:
    """Character-level tokenizer: `vocab_size` = 4 specials + len(characters) (76 for the default set)."""

    pad_id, bos_id, eos_ids, delimiter_id = 0, 1, (2,), 3
    #: re-encoding a step's decoded text gives back its ids (one token per character, the delimiter one token), so
    #: the PRM's view of a step is built in the jitted loop (rsd_jax.decoding.prm_view.PRMTables)
    exact_reencoding = True

    def __init__(self, characters: str = ARITH_CHARACTERS):
        if not isinstance(characters, str) or not characters:
            raise InputError("tokenizer characters must be a non-empty string")
        if len(set(characters)) != len(characters):
            raise InputError("tokenizer characters must be distinct")
        self.characters = characters
        self._id = {c: i + len(SPECIALS) for i, c in enumerate(characters)}

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.characters)

    def encode(self, text: str) -> list[int]:
        """Ids of text (no specials added); raises InputError naming the first unknown character."""
        ids, i = [], 0
        while i < len(text):
            if text.startswith("\n\n", i):
                ids.append(self.delimiter_id)
                i += 2
                continue
            c = text[i]
            if c not in self._id:
                raise InputError(f"character {c!r} (position {i}) is not in the char tokenizer's vocabulary")
            ids.append(self._id[c])
            i += 1
        return ids

    def token_text(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise InputError(f"token id {token_id} is outside the char vocabulary of {self.vocab_size}")
        if token_id < len(SPECIALS):
            return SPECIALS[token_id] if token_id == self.delimiter_id else ""
        return self.characters[token_id - len(SPECIALS)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.token_text(int(i)) for i in ids)

    def to_dict(self) -> dict:
        return {"kind": "char", "characters": self.characters}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if not isinstance(d, dict) or d.get("kind") != "char" or "characters" not in d:
            raise InputError(f"not a char tokenizer description: {d!r}")
        return cls(d["characters"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read tokenizer {path}: {e}") from None
