"""The decode loop of a run config, described without weights, tokenizers or data: the abstract inputs (shapes,
dtypes and shardings) a real run would pass, for ahead-of-time compiles (`python -m rsd_jax.capacity --compile`)
and memory estimates. Nothing is allocated and nothing is downloaded.

A model's architecture comes from its folder's config when the folder is here, else from the catalogue of the
paper's models by hub id (rsd_jax.models.catalog), with the config's dtype and context override applied.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from rsd_jax.api import prompt_shapes
from rsd_jax.config import ModelRef, RunConfig
from rsd_jax.decoding.generator import TokenTables
from rsd_jax.decoding.prm_view import PRMTextView
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.engine import Engine
from rsd_jax.errors import ConfigError
from rsd_jax.models import catalog
from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model
from rsd_jax.parallel import Program, rsd_program

ROLES = ("draft", "target", "prm")
QWEN_TOKENS = 151665  # the Qwen2.5 tokenizer's vocabulary (its models' embeddings are padded beyond it)


def architecture(ref: ModelRef, role: str, config_file: str | None = None, **overrides: Any) -> ModelConfig:
    """models.<role>'s ModelConfig: from its folder when it is here, else from the catalogue by hub id."""
    from rsd_jax.loading import config_of
    from rsd_jax.weights.sources import parse_source

    source = parse_source(ref.path, config_file, ref.revision) if ref.path else None
    if isinstance(source, Path) and source.is_dir():
        config = config_of(ref, source)
    else:
        names = {hub: name for name, hub in catalog.HUB_IDS.items()}
        repo = getattr(source, "repo", None)
        if repo not in names:
            raise ConfigError(f"models.{role}.path={ref.path!r}: not a folder here and not one of the catalogued hub "
                              f"ids ({', '.join(sorted(names))})")
        extra = {"max_position_embeddings": ref.max_context} if ref.max_context else {}
        if ref.quantize is not None:
            extra["quantize"] = ref.quantize
        config = catalog.model_config(names[repo], dtype=ref.dtype, **extra)
    return config.replace(**overrides)


@functools.lru_cache(maxsize=32)
def abstract_model(config: ModelConfig) -> Model:
    """`Model.abstract(config)`, memoised: tracing a 7B model's constructor takes seconds, and the estimates,
    compiles and paper-config checks of one process ask for the same few architectures again (nothing holds
    arrays; callers only read it)."""
    return Model.abstract(config)


def _unused_encoder(tokens, lengths, width):  # the text view's host side: never called by an abstract compile
    raise RuntimeError("abstract inputs are for compiling, not for running")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The RSD loop's inputs (rsd_jax.decoding.rsd.rsd_loop), abstract: an engine of ShapeDtypeStructs (no mesh
    yet), the prompts' buffers, the spec."""

    engine: Engine
    prompts: Prompts
    spec: DecodeSpec

    @property
    def models(self) -> tuple[Model, Model, Model]:
        return self.engine.draft, self.engine.target, self.engine.prm


def abstract_inputs(cfg: RunConfig, batch: int, *, prompt_tokens: int = 512, prm_prompt_tokens: int = 512,
                    prm_excess: int = 0, config_file: str | None = None,
                    layers: dict[str, int] | None = None) -> Inputs:
    """Abstract inputs of the decode loop for `batch` rows whose longest prompt (and PRM prompt) has these many
    tokens, the PRM's prompt longer than the models' by at most `prm_excess` (with the paper's template the PRM's
    raw question is the shorter: 0). layers: a shallower copy of some models, e.g. {"target": 4}."""
    spec = cfg.decoding.spec(cfg.rsd)
    configs = [architecture(getattr(cfg.models, role), role, config_file,
                            **({"num_layers": layers[role]} if layers and role in layers else {})) for role in ROLES]
    models = tuple(abstract_model(c) for c in configs)
    vocab = min(c.vocab_size for c in configs[:2])
    tokens = QWEN_TOKENS if vocab >= QWEN_TOKENS and vocab <= QWEN_TOKENS + 512 else vocab
    prompts = prompt_shapes(spec, batch, prompt_tokens=prompt_tokens, prm_prompt_tokens=prm_prompt_tokens,
                            prm_excess=prm_excess)
    flags = jax.ShapeDtypeStruct((tokens,), jnp.bool_)
    view = PRMTextView(encode=_unused_encoder, width=PRMTextView.width_for(spec.step_tokens))
    split = jax.ShapeDtypeStruct((1, tokens), jnp.bool_)  # the "\\n\\n" delimiter has one split point
    engine = Engine(*models, tables=TokenTables(stop=flags, eos=flags, split_ends=split, split_starts=split),
                    prm_view=view)
    return Inputs(engine, prompts, spec)


def program(inputs: Inputs, mesh: jax.sharding.Mesh) -> tuple[Program, tuple]:
    """(the loop on `mesh`, its abstract arguments), ready for jit(...).lower(*args) under `jax.set_mesh(mesh)` (the
    loop reads the mesh while tracing: cache layout, the PRM view per data shard)."""
    engine = dataclasses.replace(inputs.engine, mesh=mesh)
    prog = rsd_program(engine, inputs.spec, inputs.prompts)
    return prog, prog.abstract_args()
