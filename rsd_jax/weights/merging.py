"""Linear merging of two models of one architecture: w·A + (1 − w)·B, parameter by parameter.

Every parameter both models have must have the same shape (a mismatch is an InputError naming the first such
parameter, in sorted path order); a parameter only one side has (a PRM's value head, an untied LM head) is kept
from that side. The merged model has every head of either side: an LM merged with a value-head PRM of its
architecture is an "lm+value" model, which can write steps and score them (paper Table 4 merges draft+PRM and
target+PRM with MergeKit; the merge method is not stated there).

Special-token ids (`bos_token_id`, `eos_token_id`) are positions in the one vocabulary both sides share, not
weights: they may differ (the Qwen2.5-Math LMs end a response at <|im_end|>, 151645; the Skywork PRMs' configs name
<|endoftext|>, 151643) and are taken from the side that writes, the one with an LM head (`writer`; A when both or
neither have one), so the merged model stops where the LM it was merged from stops. The PRM side's view of the text
(its BOS) is its tokenizer's, which a hub-layout merge keeps beside the model (rsd_jax.weights.hub_merge).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rsd_jax.errors import InputError
from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model

#: ModelConfig fields that may differ between the two sides (the heads; the rest is the architecture)
_HEAD_FIELDS = ("head", "good_token_id", "bad_token_id")
#: where generation starts and stops: taken from the writing side (see the module doc)
_SPECIAL_FIELDS = ("bos_token_id", "eos_token_id")


def writer(a: ModelConfig, b: ModelConfig) -> str:
    """"a" or "b": the side whose special tokens the merged model keeps (the one with an LM head; A on a tie)."""
    return "b" if b.has_lm_head and not a.has_lm_head else "a"


def merged_config(a: ModelConfig, b: ModelConfig) -> ModelConfig:
    """A's config with the heads of both sides and the writing side's special tokens (`writer`); an architecture
    field that differs is an InputError naming it."""
    for field in dataclasses.fields(ModelConfig):
        if field.name not in _HEAD_FIELDS + _SPECIAL_FIELDS and getattr(a, field.name) != getattr(b, field.name):
            raise InputError(f"cannot merge: model config field {field.name} is {getattr(a, field.name)!r} in A "
                             f"and {getattr(b, field.name)!r} in B")
    if "token_logit" in (a.head, b.head) and a.head != b.head:
        raise InputError(f"cannot merge a token-logit PRM with a {b.head if a.head == 'token_logit' else a.head!r} "
                         "model (their LM heads mean different things)")
    lm, value = a.has_lm_head or b.has_lm_head, a.has_value_head or b.has_value_head
    if a.head == "token_logit":
        return a
    special = {f: getattr(b if writer(a, b) == "b" else a, f) for f in _SPECIAL_FIELDS}
    return a.replace(head="lm+value" if lm and value else "lm" if lm else "value", **special)


def _flat(tree: dict) -> dict[str, jax.Array]:
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def merge_params(a: dict, b: dict, weight: float) -> dict:
    """Pure dicts of arrays (nested like `Model.pure_dict`): weight·a + (1 − weight)·b where both have a parameter
    (computed in float32, cast back to a's dtype), the one side's array where only one has it."""
    flat_a, flat_b = _flat(a), _flat(b)
    for name in sorted(set(flat_a) & set(flat_b)):
        if flat_a[name].shape != flat_b[name].shape:
            raise InputError(f"cannot merge: parameter {name} has shape {tuple(flat_a[name].shape)} in A and "
                             f"{tuple(flat_b[name].shape)} in B")

    def walk(x, y):
        if x is None:
            return y
        if y is None:
            return x
        if isinstance(x, dict):
            return {k: walk(x.get(k), y.get(k) if isinstance(y, dict) else None) for k in {**x, **y}}
        mixed = weight * jnp.asarray(x, jnp.float32) + (1.0 - weight) * jnp.asarray(y, jnp.float32)
        return mixed.astype(x.dtype)

    return walk(a, b)


def merge_models(a: Model, b: Model, weight: float) -> Model:
    """The linear merge weight·A + (1 − weight)·B (weight in [0, 1]) as a model with both sides' heads."""
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"merge weight must be in [0, 1], got {weight}")
    params = merge_params(a.pure_dict(), b.pure_dict(), weight)  # a shape mismatch names its parameter first
    return Model.from_pure_dict(merged_config(a.config, b.config), params)
