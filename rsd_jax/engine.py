"""The engine: the three models and their device tables, one value that every jitted loop takes.

    engine = Engine.create(models)                       # models: RSDModels (weights + tokenizers)
    engine = Engine.create(models, mesh=make_mesh(4, 2))  # weights placed in their shardings on the mesh
    generate(engine, prompts, method=RSD(delta=0.8))

An `Engine` is a registered pytree: the models' weights, the token tables and the PRM's view tables are its
leaves (traced), the host side (tokenizers, delimiter) and the mesh are static. Swapping two models is a
keyword (`dataclasses.replace(engine, target=engine.draft)`), not a positional slip.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax import sharding as sh
from rsd_jax.decoding.generator import TokenTables
from rsd_jax.decoding.prm_view import PRMTables, PRMTextView, PRMView
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.errors import InputError
from rsd_jax.models.model import Model
from rsd_jax.placement import place
from rsd_jax.tokenizer import (StepTextEncoder, Tokenizer, build_prm_stop_table, split_delimiter_table, split_head_ids,
                               step_stop_ids)


@dataclasses.dataclass(frozen=True)
class RSDModels:
    """Draft, target and PRM, the tokenizer the draft and target share, and the PRM's own tokenizer (default: the
    same). The models' embeddings may have more rows than the tokenizer has tokens (padded vocabularies: the
    Qwen2.5-Math 1.5B and 7B differ there); only the tokenizer's tokens are ever drawn."""

    draft: Model
    target: Model
    prm: Model
    tokenizer: Tokenizer
    prm_tokenizer: Tokenizer | None = None
    delimiter: str = "\n\n"
    self_scoring: bool = False  # the draft scores its own steps with its value head (`prm` is the draft)

    def __post_init__(self) -> None:
        if self.self_scoring and not (self.draft.config.has_lm_head and self.draft.config.has_value_head):
            raise InputError(f"a self-scoring draft needs an LM head and a value head (head 'lm+value'); the draft's "
                             f"head is {self.draft.config.head!r}")
        for role in ("draft", "target"):
            rows = getattr(self, role).config.vocab_size
            if self.tokenizer.vocab_size > rows:
                raise InputError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the {role}'s vocabulary "
                                 f"only {rows}: they do not belong together")
        if self.prm_tok.vocab_size > self.prm.config.vocab_size:
            raise InputError(f"the PRM's tokenizer has {self.prm_tok.vocab_size} tokens but the PRM's vocabulary only "
                             f"{self.prm.config.vocab_size}")

    @property
    def prm_tok(self) -> Tokenizer:
        return self.prm_tokenizer or self.tokenizer

    @functools.cached_property
    def step_encoder(self) -> StepTextEncoder:
        """The host side of the PRM's text view (one object per models: the compiled loop is reused)."""
        return StepTextEncoder(self.tokenizer, self.prm_tok, self.delimiter)

    @property
    def prm_view_in_graph(self) -> bool:
        """True when the in-graph tables reproduce the PRM protocol: one tokenizer whose re-encoding of a step's
        text gives back its ids (character-level); BPE tokenizers use the host text view."""
        return self.prm_tok is self.tokenizer and getattr(self.tokenizer, "exact_reencoding", False)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Engine:
    """draft, target, prm: the models. tables: the draft's and target's token sets over the tokenizer's vocabulary
    [V]. prm_view: how the PRM reads a step (in-graph tables, or the host text protocol; its width follows the
    decoding spec, `view`). host: the tokenizers and delimiter, no arrays (None for an engine used on token ids
    only). mesh: where the weights live (None: one device)."""

    draft: Model
    target: Model
    prm: Model
    tables: TokenTables
    prm_view: PRMView
    host: "_Host | None" = dataclasses.field(default=None, metadata=dict(static=True))
    mesh: jax.sharding.Mesh | None = dataclasses.field(default=None, metadata=dict(static=True))
    self_scoring: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def create(cls, models: RSDModels, mesh: jax.sharding.Mesh | None = None,
               layer_copies: bool | None = None) -> "Engine":
        """The engine of `models` (their token tables and PRM view built on the host), on `mesh` when given: each
        model's weights in their shardings (rsd_jax.sharding), the tables replicated. Weights that are elsewhere are
        copied onto the mesh (`models` keeps the originals: load straight into the shardings to avoid that,
        rsd_jax.loading.load_engine, which on TPU/GPU also moves them into the layouts the compiler picks).
        layer_copies: give each model a per-layer copy of its layer weights (`Model.with_layer_copies`: a CPU decodes
        about twice as fast, for the layer weights' memory once more); default: on a CPU without a mesh. Single-model
        and speculative decoding read them; the RSD loop, best-of-N and beam search run on `stacked()`."""
        if layer_copies and mesh is not None:
            raise InputError("layer_copies=True is for one device (a mesh's loops scan the stacked layers): leave "
                             "layer_copies unset with a mesh")
        tables, prm_view = host_tables(models)
        host = _Host(tokenizer=models.tokenizer, prm_tokenizer=models.prm_tokenizer, delimiter=models.delimiter)
        roles = {"draft": models.draft, "target": models.target, "prm": models.prm}
        engine = cls(**roles, tables=tables, prm_view=prm_view, host=host, self_scoring=models.self_scoring)
        if mesh is not None:
            return engine.on_mesh(mesh)
        copies = layer_copies if layer_copies is not None else jax.default_backend() == "cpu"
        return engine.with_layer_copies() if copies else engine

    def shardings(self, mesh: jax.sharding.Mesh) -> "Engine":
        """Where each array of this engine lives on `mesh`, as an engine of NamedShardings: the weights as they
        declare (rsd_jax.sharding), the tables and the PRM's view replicated."""
        rep = functools.partial(sh.replicated, mesh=mesh)
        return dataclasses.replace(self, draft=sh.model_sharding_tree(self.draft, mesh),
                                   target=sh.model_sharding_tree(self.target, mesh),
                                   prm=sh.model_sharding_tree(self.prm, mesh), tables=rep(self.tables),
                                   prm_view=rep(self.prm_view))

    def on_mesh(self, mesh: jax.sharding.Mesh) -> "Engine":
        """This engine with its arrays placed on `mesh` (`shardings`; layer copies dropped: a mesh scans the stack)."""
        bare = self.stacked()
        return dataclasses.replace(place(bare, bare.shardings(mesh)), mesh=mesh)

    def stacked(self) -> "Engine":
        """This engine with every model reading its stacked layers (layer copies dropped; no weight is copied): the
        layout of the loops that run as fast or faster without the copies on a CPU (the RSD loop, best-of-N and beam
        search: docs/performance.md); single-model and speculative decoding keep the copies."""
        if all(m.layer_copies is None for m in (self.draft, self.target, self.prm)):
            return self
        return dataclasses.replace(self, draft=self.draft.without_layer_copies(),
                                   target=self.target.without_layer_copies(), prm=self.prm.without_layer_copies())

    def with_layer_copies(self) -> "Engine":
        """This engine with every model's per-layer copies (`Model.with_layer_copies`; a model in two roles copied
        once). One device only: a mesh's loops scan the stack."""
        if self.mesh is not None:
            raise InputError("layer copies are for one device (a mesh's loops scan the stacked layers): use the "
                             "engine as it is on a mesh")
        roles = {"draft": self.draft, "target": self.target, "prm": self.prm}
        copied = {id(m): m.with_layer_copies() for m in roles.values()}
        return dataclasses.replace(self, **{role: copied[id(m)] for role, m in roles.items()})

    def drafting_only(self) -> "Engine":
        """The draft in the target's place: loops that never call the target (Best-of-N, beam search) compile no
        target and hold no second model's cache shape."""
        return dataclasses.replace(self, target=self.draft)

    def view(self, spec: DecodeSpec) -> PRMView:
        """The PRM's view of the steps `spec` writes: the text view's width follows spec.step_tokens; the in-graph
        tables read a step ended by the split delimiter as the protocol does (spec.stop_on_split_delimiter; the
        text view always cuts a step's text at its first delimiter)."""
        if isinstance(self.prm_view, PRMTextView):
            return dataclasses.replace(self.prm_view, width=PRMTextView.width_for(spec.step_tokens))
        return self.prm_view.with_split_stop(spec.stop_on_split_delimiter)

    def step_tables(self, spec: DecodeSpec) -> TokenTables:
        """The token tables with the end-of-step rule of `spec` (spec.stop_on_split_delimiter)."""
        return self.tables.with_split_stop(spec.stop_on_split_delimiter)

    @property
    def models(self) -> RSDModels:
        """This engine's models (its own arrays: sharded, laid out) with the tokenizers and delimiter."""
        if self.host is None:
            raise InputError("this engine was built from arrays alone (no tokenizers): build it with Engine.create")
        return RSDModels(draft=self.draft, target=self.target, prm=self.prm, tokenizer=self.host.tokenizer,
                         prm_tokenizer=self.host.prm_tokenizer, delimiter=self.host.delimiter,
                         self_scoring=self.self_scoring)


@dataclasses.dataclass(frozen=True, eq=False)
class _Host:
    """The host side of an engine, static in its pytree: tokenizers and the delimiter, never arrays (jit's cache
    keeps a key's static parts alive). No loop reads it (the PRM's text view carries its own encoder), so every
    host compares equal: engines that differ only here share their compiled loops."""

    tokenizer: Tokenizer
    prm_tokenizer: Tokenizer | None
    delimiter: str

    def __eq__(self, other) -> bool:
        return isinstance(other, _Host)

    def __hash__(self) -> int:
        return hash(_Host)


def host_tables(models: RSDModels) -> tuple[TokenTables, PRMView]:
    """The token tables of the tokenizer's vocabulary, and the PRM's view of a step (rsd_jax.decoding.prm_view)."""
    tok, vocab = models.tokenizer, models.tokenizer.vocab_size
    stop = np.zeros((vocab,), bool)
    stop[list(step_stop_ids(tok, models.delimiter))] = True
    eos = np.zeros((vocab,), bool)
    eos[list(tok.eos_ids)] = True
    split = split_delimiter_table(tok, models.delimiter)
    tables = TokenTables(stop=jnp.asarray(stop), eos=jnp.asarray(eos), split_ends=jnp.asarray(split.ends),
                         split_starts=jnp.asarray(split.starts))
    if not models.prm_view_in_graph:
        return tables, PRMTextView(encode=models.step_encoder, width=PRMTextView.width_for(1))
    table = build_prm_stop_table(tok, models.delimiter)
    return tables, PRMTables.build(vocab, table.stop_ids, table.text_ids, table.text_len, table.delimiter_id,
                                   tok.eos_ids, split=(split.ends, split.starts, split_head_ids(tok, models.delimiter)))
