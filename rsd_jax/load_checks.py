"""Checks a run's models and tokenizers must pass at load, before any weight is read or any loop compiled.

* `check_prm_head`: the model given as the PRM scores steps (a value head, a token-logit head, or an LM with a
  value head beside it). A plain causal LM there used to load, compile and then fail inside the loop.
* `check_prm_can_encode`: a PRM with its own tokenizer re-encodes every generated step's text (the official
  protocol; rsd_jax.tokenizer.StepTextEncoder): it must encode every character the draft and target can write.
  One that cannot (a character-level PRM tokenizer beside a subword draft) used to fail in a host callback in the
  middle of the loop, as a `jax.pure_callback failed` traceback.
"""

from __future__ import annotations

from rsd_jax.errors import CheckpointError, InputError
from rsd_jax.models.config import ModelConfig
from rsd_jax.tokenizer import Tokenizer


def check_prm_head(config: ModelConfig, where: str) -> None:
    """CheckpointError unless `config` (the PRM's, as the run overrides it) has a head that scores steps."""
    if not config.scores_steps:
        raise CheckpointError(f"models.prm.path {where} is a model with head {config.head!r}, not a PRM: give a "
                              f"process reward model (a value head, e.g. Skywork-o1-Open-PRM), or set "
                              f"models.prm.head=token_logit with its good and bad token ids")


def writable_characters(tok: Tokenizer) -> set[str]:
    """Every character a text decoded with `tok` can hold: the union of each token's decoded text (special
    tokens dropped, as a step's text drops them; U+FFFD, the half of a multi-byte character one token may hold,
    left out)."""
    inner = getattr(tok, "_tok", None)  # an HF tokenizers.Tokenizer: one batched call in Rust
    if inner is not None and hasattr(inner, "decode_batch"):
        texts = inner.decode_batch([[i] for i in range(tok.vocab_size)], skip_special_tokens=True)
    else:
        texts = [tok.decode([i]) for i in range(tok.vocab_size)]
    return set("".join(texts)) - {"\ufffd"}


def _encodes(tok: Tokenizer, text: str) -> bool:
    try:
        tok.encode(text)
    except (InputError, ValueError, KeyError):
        return False
    return True


def encodes_any_text(tok: Tokenizer) -> bool:
    """A byte-level BPE tokenizer (GPT-2, Qwen2, Llama 3) or one with byte fallback (Llama 2) encodes every text."""
    inner = getattr(tok, "_tok", None)
    if inner is None:
        return False
    return "ByteLevel(" in str(inner.pre_tokenizer) or bool(getattr(inner.model, "byte_fallback", False))


def check_prm_can_encode(tok: Tokenizer, prm_tok: Tokenizer, where: str) -> None:
    """InputError naming the characters the models can write that the PRM's tokenizer (at `where`) cannot encode
    (nothing to check for a byte-level PRM tokenizer, which encodes any text)."""
    if encodes_any_text(prm_tok):
        return
    characters = sorted(writable_characters(tok))
    if _encodes(prm_tok, "".join(characters)):
        return
    bad = [c for c in characters if not _encodes(prm_tok, c)]
    shown = ", ".join(repr(c) for c in bad[:6]) + (", ..." if len(bad) > 6 else "")
    raise InputError(f"the PRM's tokenizer ({where}) cannot encode {len(bad)} character(s) the draft can write "
                     f"({shown}): give the PRM's own tokenizer.json (models.prm_tokenizer), or a PRM trained on "
                     f"the draft's vocabulary")
