"""A small world for engine tests: random tiny draft / target / PRM over a 48-token vocabulary whose
step-delimiter tokens, EOS and PRM text parts are chosen by hand (no tokenizer needed)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.decoding.generator import TokenTables
from rsd_jax.decoding.prm_view import PRMTables
from reference import HostTables
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.engine import Engine
from rsd_jax.models import Model, ModelConfig

VOCAB = 48
EOS = 1
DELIMITER = 3  # the pure "\n\n" token
STOP_TEXT = {3: (), 8: (40,), 13: (41, 42), 18: (), 23: (43,)}  # like "\n\n", ".\n\n", "=1\n\n", ...


def config(layers: int, hidden: int, head: str = "lm") -> ModelConfig:
    return ModelConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=layers,
                       num_heads=4, num_kv_heads=2, head_dim=hidden // 4, qkv_bias=True, head=head,
                       max_position_embeddings=4096)


def with_params(model: Model, params) -> Model:
    """The model with new weights (any per-layer copies, now stale, dropped)."""
    return dataclasses.replace(model, params=params, layer_copies=None)


def random_model(cfg: ModelConfig, seed: int, scale: float = 0.35) -> Model:
    """Weights with a larger spread than the default init, so logits are well separated (no argmax ties)."""
    model = Model.init(cfg, seed)
    leaves, treedef = jax.tree.flatten(model.params)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    new = [jax.random.normal(k, x.shape, x.dtype) * scale + (1.0 if x.ndim == 1 and x.shape[0] == cfg.hidden_size
                                                              else 0.0) for k, x in zip(keys, leaves)]
    return with_params(model, jax.tree.unflatten(treedef, new))


def models():
    draft = random_model(config(1, 32), seed=1)
    target = random_model(config(2, 48), seed=2)
    prm = random_model(config(1, 32, head="value"), seed=3)
    return draft, target, prm


def tables(eos: bool = True) -> tuple[TokenTables, PRMTables, HostTables]:
    stop = np.zeros(VOCAB, bool)
    stop[list(STOP_TEXT)] = True
    eos_mask = np.zeros(VOCAB, bool)
    if eos:
        eos_mask[EOS] = True
    ids = sorted(STOP_TEXT)
    width = max(map(len, STOP_TEXT.values()))
    text_ids = np.zeros((len(ids), width), np.int32)
    for r, t in enumerate(ids):
        text_ids[r, :len(STOP_TEXT[t])] = STOP_TEXT[t]
    text_len = [len(STOP_TEXT[t]) for t in ids]
    prm = PRMTables.build(VOCAB, ids, text_ids, text_len, DELIMITER, [EOS] if eos else [])
    host = HostTables(stop_ids=frozenset(ids), eos_ids=frozenset([EOS] if eos else []),
                      prm_text={t: STOP_TEXT[t] for t in ids}, delimiter=DELIMITER)
    return TokenTables(stop=jnp.asarray(stop), eos=jnp.asarray(eos_mask)), prm, host


def prompts(lengths, t_cap: int, tp_cap: int, seed: int = 0) -> tuple[Prompts, list[list[int]], list[list[int]]]:
    """Random prompts of the given lengths (the PRM's prompt: a shorter, different token sequence)."""
    rng = np.random.default_rng(seed)
    ids = [list(rng.integers(4, VOCAB, n)) for n in lengths]
    prm_ids = [[2] + seq[: max(1, n // 2)] for seq, n in zip(ids, lengths)]
    tokens = np.zeros((len(ids), t_cap), np.int32)
    prm_tokens = np.zeros((len(ids), tp_cap), np.int32)
    for i, (a, b) in enumerate(zip(ids, prm_ids)):
        tokens[i, :len(a)] = a
        prm_tokens[i, :len(b)] = b
    batch = Prompts(tokens=jnp.asarray(tokens), length=jnp.asarray([len(a) for a in ids], jnp.int32),
                    prm_tokens=jnp.asarray(prm_tokens), prm_length=jnp.asarray([len(b) for b in prm_ids],
                                                                              jnp.int32))
    return batch, [list(map(int, a)) for a in ids], [list(map(int, b)) for b in prm_ids]


def engine_and_prompts(lengths, max_new_tokens: int):
    """The world's engine (draft, target, PRM, token tables, the PRM's in-graph view) and prompts of the given
    lengths with room for max_new_tokens: (engine, batch, ids, prm_ids, host tables)."""
    draft, target, prm = models()
    token_tables, prm_tables, host = tables()
    batch, ids, prm_ids = prompts(lengths, t_cap=16 + max_new_tokens, tp_cap=200)
    engine = Engine(draft=draft, target=target, prm=prm, tables=token_tables, prm_view=prm_tables)
    return engine, batch, ids, prm_ids, host
