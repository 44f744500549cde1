"""From a RunConfig to loaded models and tokenizers (the apps' shared start-up)."""

from __future__ import annotations

from pathlib import Path

from rsd_jax.api import RSDModels
from rsd_jax.config import ModelRef, RunConfig
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.errors import ConfigError
from rsd_jax.models.model import Model
from rsd_jax.tokenizer import HFTokenizer, Tokenizer, qwen_tokenizer
from rsd_jax.weights import load_model
from rsd_jax.weights.sources import TOKENIZER_FILES, model_folder

CHAR_TOKENIZER_FILE = "char_tokenizer.json"


def load_ref(ref: ModelRef, role: str, config_file: str | None) -> Model:
    if not ref.path:
        raise ConfigError(f"models.{role}.path is empty: give an HF snapshot folder or an orbax checkpoint")
    kw = {"dtype": ref.dtype}
    if ref.head is not None:
        kw["head"] = ref.head
    if ref.head == "token_logit":
        kw.update(good_token_id=ref.good_token_id, bad_token_id=ref.bad_token_id)
    return load_model(model_folder(ref.path, config_file, ref.revision), **kw)


def load_tokenizer(spec: str | None, model_path: Path) -> Tokenizer:
    """An explicit tokenizer path, else the char tokenizer or tokenizer.json stored beside the model."""
    if spec == "qwen":
        return qwen_tokenizer()
    if spec is not None:
        path = Path(spec)
        return CharTokenizer.load(path) if path.name == CHAR_TOKENIZER_FILE else HFTokenizer.from_folder(path)
    if (model_path / CHAR_TOKENIZER_FILE).is_file():
        return CharTokenizer.load(model_path / CHAR_TOKENIZER_FILE)
    if (model_path / "tokenizer.json").is_file():
        return HFTokenizer.from_folder(model_path)
    raise ConfigError(f"no tokenizer: set models.tokenizer, or put tokenizer.json or {CHAR_TOKENIZER_FILE} "
                      f"in {model_path}")


def _tokenizer_spec(raw: str | None, config_file: str | None) -> str | None:
    return raw if raw in (None, "qwen") else str(model_folder(raw, config_file, files=TOKENIZER_FILES))


def load_models(cfg: RunConfig, config_file: str | None) -> RSDModels:
    m = cfg.models
    draft = load_ref(m.draft, "draft", config_file)
    target = load_ref(m.target, "target", config_file)
    prm = load_ref(m.prm, "prm", config_file)
    draft_dir, prm_dir = (model_folder(r.path, config_file, r.revision) for r in (m.draft, m.prm))
    tok = load_tokenizer(_tokenizer_spec(m.tokenizer, config_file), draft_dir)
    prm_tok = (load_tokenizer(_tokenizer_spec(m.prm_tokenizer, config_file), prm_dir)
               if m.prm_tokenizer else None)
    return RSDModels(draft=draft, target=target, prm=prm, tokenizer=tok, prm_tokenizer=prm_tok,
                     delimiter=cfg.decoding.delimiter)
