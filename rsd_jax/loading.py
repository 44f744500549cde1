"""From a RunConfig to devices, tokenizers and loaded models: the apps' shared start-up, in this order.

1. `start_devices`: multi-host runs call `jax.distributed.initialize` before anything else touches JAX, then the
   ("data", "model") mesh is built (None on one device);
2. `load_tokenizers`: the draft's and target's tokenizer, and the PRM's own (its BOS, as the official protocol
   reads it);
3. `load_models`: each model's config is read first, so that every weight is placed straight into its sharding on
   the mesh as it is read (never a whole model on one device).
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Sequence

import jax

from rsd_jax import sharding
from rsd_jax.engine import Engine, RSDModels
from rsd_jax.config import MeshConfig, ModelRef, ModelsConfig, RunConfig, split_method_variant
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.errors import CheckpointError, ConfigError
from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model
from rsd_jax.hf_tokenizer import HFTokenizer
from rsd_jax.load_checks import check_prm_can_encode, check_prm_head
from rsd_jax.qwen_vocabulary import qwen_tokenizer
from rsd_jax.tokenizer import Tokenizer
from rsd_jax.weights import load_model, model_config
from rsd_jax.weights.sources import TOKENIZER_FILES, model_folder

CHAR_TOKENIZER_FILE = "char_tokenizer.json"
ROLES = ("draft", "target", "prm")


def start_devices(mesh: MeshConfig, kv_heads: Sequence[int] = ()) -> jax.sharding.Mesh | None:
    """Joins the other processes of a multi-host run (mesh.distributed), then builds the configured mesh: its
    tensor-parallel width pinned by mesh.model or, with mesh.model=auto, the widest the devices found and the models'
    KV heads allow (rsd_jax.mesh_axes.tensor_width), factored by the models' KV head counts (`kv_heads_of`;
    rsd_jax.sharding.make_mesh); None on one device with no model axis."""
    if mesh.distributed:
        initialize_distributed(mesh)
    width = mesh.width(jax.device_count(), tuple(kv_heads))
    if jax.device_count() == 1 and width == 1 and mesh.data in (-1, 1):
        return None
    return sharding.make_mesh(mesh.data, width, kv_heads=kv_heads)


def kv_heads_of(cfg: RunConfig, config_file: str | None) -> tuple[int, ...]:
    """The three models' KV head counts, from their configs (no weights read, no JAX used)."""
    return tuple(config_of(ref_of(cfg.models, role), model_folder_of(ref_of(cfg.models, role), role, config_file))
                 .num_kv_heads for role in ROLES)


def ref_of(models: ModelsConfig, role: str) -> ModelRef:
    """models.<role>, except a self-scoring PRM (models.prm.self_scoring), which is the draft."""
    if role == "prm" and models.prm.self_scoring:
        return models.draft
    return getattr(models, role)


def initialize_distributed(mesh: MeshConfig) -> None:
    """`jax.distributed.initialize` with the configured coordinator (None: JAX finds it, as on TPU pods and SLURM).
    Must run before any other JAX call of the process."""
    kw = {k: v for k, v in (("coordinator_address", mesh.coordinator_address),
                            ("num_processes", mesh.num_processes), ("process_id", mesh.process_id)) if v is not None}
    try:
        jax.distributed.initialize(**kw)
    except RuntimeError as e:
        raise ConfigError(f"mesh.distributed: jax.distributed.initialize failed ({e})") from None


def model_folder_of(ref: ModelRef, role: str, config_file: str | None) -> Path:
    """The local folder of models.<role> (a hub id resolved to its snapshot); it must exist."""
    if not ref.path:
        raise ConfigError(f"models.{role}.path is empty: give an HF snapshot folder, an orbax checkpoint or a hub id")
    folder = model_folder(ref.path, config_file, ref.revision)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder} (models.{role}.path)")
    return folder


def config_of(ref: ModelRef, folder: Path) -> ModelConfig:
    """A model's config as the run overrides it: dtype, PRM head, context length, quantization."""
    overrides: dict[str, Any] = {}
    if ref.head == "token_logit":
        overrides.update(good_token_id=ref.good_token_id, bad_token_id=ref.bad_token_id)
    if ref.max_context is not None:
        overrides["max_position_embeddings"] = ref.max_context
    if ref.quantize is not None:
        overrides["quantize"] = ref.quantize
    return model_config(folder, dtype=ref.dtype, head=ref.head, **overrides)


def load_ref(ref: ModelRef, role: str, config_file: str | None, mesh: jax.sharding.Mesh | None = None) -> Model:
    """One model, each weight read into its sharding on `mesh` (or onto the first device)."""
    folder = model_folder_of(ref, role, config_file)
    config = config_of(ref, folder)
    shardings = sharding.param_shardings(config, mesh) if mesh is not None else None
    return load_model(folder, config=config, shardings=shardings)


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


def has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / CHAR_TOKENIZER_FILE).is_file()


def _tokenizer_spec(raw: str | None, config_file: str | None) -> str | None:
    return raw if raw in (None, "qwen") else str(model_folder(raw, config_file, files=TOKENIZER_FILES))


def load_tokenizers(cfg: RunConfig, config_file: str | None) -> tuple[Tokenizer, Tokenizer | None]:
    """(the draft's and target's tokenizer, the PRM's when it is not the same one).

    models.tokenizer, else the one beside the draft; models.prm_tokenizer, else the one beside the PRM (with its
    own BOS), else the draft's. A PRM tokenizer equal to the draft's is the draft's (one object)."""
    m = cfg.models
    tok = load_tokenizer(_tokenizer_spec(m.tokenizer, config_file), model_folder_of(m.draft, "draft", config_file))
    if m.prm_tokenizer is not None:
        prm_tok = load_tokenizer(_tokenizer_spec(m.prm_tokenizer, config_file), Path("."))
    else:
        prm_dir = model_folder_of(ref_of(m, "prm"), "prm", config_file)
        prm_tok = load_tokenizer(None, prm_dir) if has_tokenizer(prm_dir) else tok
    if same_tokenizer(tok, prm_tok):
        return tok, None
    check_prm_can_encode(tok, prm_tok, m.prm_tokenizer or f"beside {prm_dir}")  # before any model loads
    return tok, prm_tok


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    """Do two tokenizers encode, decode and mark special tokens identically?"""
    if a is b:
        return True
    if isinstance(a, CharTokenizer) and isinstance(b, CharTokenizer):
        return a.characters == b.characters
    if isinstance(a, HFTokenizer) and isinstance(b, HFTokenizer):
        return a.fingerprint() == b.fingerprint()
    return False


def load_models(cfg: RunConfig, config_file: str | None, mesh: jax.sharding.Mesh | None = None,
                tokenizers: tuple[Tokenizer, Tokenizer | None] | None = None) -> RSDModels:
    """The three models (into their shardings on `mesh` when given) and their tokenizers."""
    tok, prm_tok = tokenizers or load_tokenizers(cfg, config_file)
    self_scoring = cfg.models.prm.self_scoring
    prm_folder = model_folder_of(ref_of(cfg.models, "prm"), "prm", config_file)
    check_prm_head(config_of(ref_of(cfg.models, "prm"), prm_folder), str(prm_folder))  # before any weight is read
    draft, target = (load_ref(getattr(cfg.models, role), role, config_file, mesh) for role in ("draft", "target"))
    prm = draft if self_scoring else load_ref(cfg.models.prm, "prm", config_file, mesh)
    return RSDModels(draft=draft, target=target, prm=prm, tokenizer=tok, prm_tokenizer=prm_tok,
                     delimiter=cfg.decoding.delimiter, self_scoring=self_scoring)


def load_engine(cfg: RunConfig, config_file: str | None, mesh: jax.sharding.Mesh | None = None,
                tokenizers: tuple[Tokenizer, Tokenizer | None] | None = None) -> Engine:
    """The run's engine: `load_models` (weights straight into their shardings on `mesh`), and, when the run decodes
    with RSD on an accelerator mesh, the weights moved once into the layouts the compiler chooses for its RSD loop
    (rsd_jax.parallel.lay_out_engine: one ahead-of-time compilation; on CPU the chosen layouts are the default
    ones, so nothing moves)."""
    engine = Engine.create(load_models(cfg, config_file, mesh, tokenizers), mesh)
    runs_rsd = cfg.rsd.method == "rsd" or any(split_method_variant(m)[0] == "rsd" for m in cfg.rsd.methods)
    if mesh is None or jax.default_backend() == "cpu" or not runs_rsd:
        return engine
    from rsd_jax.api import prompt_shapes
    from rsd_jax.parallel import lay_out_engine

    spec = cfg.decoding.spec(cfg.rsd)
    rows = math.lcm(cfg.decoding.batch_size, mesh.shape["data"])  # as api.generate pads a batch
    return lay_out_engine(engine, spec, prompt_shapes(spec, rows))
