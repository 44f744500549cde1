"""The decode loop of a run config, described without weights, tokenizers or data: the abstract inputs (shapes,
dtypes and shardings) a real run would pass, for ahead-of-time compiles (`python -m rsd_jax.capacity --compile`)
and memory estimates. Nothing is allocated and nothing is downloaded.

A model's architecture comes from its folder's config when the folder is here, else from the catalogue of the
paper's models by hub id (rsd_jax.models.catalog), with the config's dtype and context override applied.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from rsd_jax.api import buffer_widths, text_view_width
from rsd_jax.config import ModelRef, RunConfig
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.generator import TokenTables
from rsd_jax.decoding.prm_view import PRMTextView
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd import RSDCaches
from rsd_jax.decoding.spec import DecodeSpec
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
        config = catalog.model_config(names[repo], dtype=ref.dtype, **extra)
    return config.replace(**overrides)


def _unused_encoder(tokens, lengths, width):  # the text view's host side: never called by an abstract compile
    raise RuntimeError("abstract inputs are for compiling, not for running")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The RSD loop's inputs (rsd_jax.decoding.rsd.rsd_decode_impl), abstract."""

    models: tuple[Model, Model, Model]
    prompts: Prompts
    tables: TokenTables
    prm_view: PRMTextView
    spec: DecodeSpec

    def shapes(self) -> tuple:
        """What rsd_jax.parallel.rsd_program takes."""
        return (*self.models, self.prompts, self.tables, self.prm_view, acceptance_shape(),
                acceptance.RewardHistogram(counts=jax.ShapeDtypeStruct((self.spec.histogram_bins,), jnp.float32)))


def acceptance_shape() -> acceptance.AcceptanceParams:
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    return acceptance.AcceptanceParams(delta=scalar, p=scalar, alpha=scalar)


def abstract_inputs(cfg: RunConfig, batch: int, *, prompt_tokens: int = 512, prm_prompt_tokens: int = 512,
                    prm_excess: int = 0, config_file: str | None = None,
                    layers: dict[str, int] | None = None) -> Inputs:
    """Abstract inputs of the decode loop for `batch` rows whose longest prompt (and PRM prompt) has these many
    tokens, the PRM's prompt longer than the models' by at most `prm_excess` (with the paper's template the PRM's
    raw question is the shorter: 0). layers: a shallower copy of some models, e.g. {"target": 4}."""
    spec = cfg.decoding.spec(cfg.rsd)
    configs = [architecture(getattr(cfg.models, role), role, config_file,
                            **({"num_layers": layers[role]} if layers and role in layers else {})) for role in ROLES]
    models = tuple(Model.abstract(c) for c in configs)
    vocab = min(c.vocab_size for c in configs[:2])
    tokens = QWEN_TOKENS if vocab >= QWEN_TOKENS and vocab <= QWEN_TOKENS + 512 else vocab
    t_cap, tp_cap = buffer_widths(spec, prompt_tokens, prm_prompt_tokens, PRMTextView.growth_per_step, prm_excess)
    ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)  # noqa: E731
    prompts = Prompts(tokens=ints(batch, t_cap), length=ints(batch), prm_tokens=ints(batch, tp_cap),
                      prm_length=ints(batch))
    flags = jax.ShapeDtypeStruct((tokens,), jnp.bool_)
    view = PRMTextView(encode=_unused_encoder, width=text_view_width(spec))
    return Inputs(models, prompts, TokenTables(stop=flags, eos=flags), view, spec)


def program(inputs: Inputs, mesh: jax.sharding.Mesh) -> tuple[Program, tuple]:
    """(the loop on `mesh`, its abstract arguments with their shardings), ready for jit(...).lower(*args) under
    `jax.set_mesh(mesh)` (the loop reads the mesh while tracing: cache layout, the PRM view per data shard)."""
    shapes = inputs.shapes()
    prog = rsd_program(mesh, inputs.spec, shapes)
    args = (*shapes[:7], jax.ShapeDtypeStruct((), jnp.float32), shapes[7],
            jax.ShapeDtypeStruct((), jax.random.key(0).dtype), jax.eval_shape(RSDCaches.zeros, *shapes[:4]))
    placed = tuple(a if i < prog.models else  # weights: their layout is the compiler's choice, so no sharding here
                   jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), a, prog.in_shardings[i])
                   for i, a in enumerate(args))
    return prog, placed
