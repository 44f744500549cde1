"""Decoder parity with HF transformers (torch CPU), the KV cache, ragged batches, and the PRM heads."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hf_models import llama_config, qwen2_config, qwen3_config, save_causal_lm, save_skywork_prm
from rsd_jax.models import Model, forward, full_forward
from rsd_jax.models.architectures import config_from_hf
from rsd_jax.weights import load_hf_model

VARIANTS = {
    "qwen2_gqa_bias_tied": lambda: qwen2_config(),
    "qwen2_untied_mha": lambda: qwen2_config(tie_word_embeddings=False, num_key_value_heads=4),
    "llama_gqa_untied": lambda: llama_config(),
    "llama_bias_tied": lambda: llama_config(attention_bias=True, tie_word_embeddings=True,
                                            num_key_value_heads=2),
    "llama3_rope_scaling": lambda: llama_config(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
    "qwen3_qk_norm_untied": lambda: qwen3_config(),
}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@functools.lru_cache(maxsize=None)
def _pair(name: str, tmp_root: str):
    from pathlib import Path

    folder = Path(tmp_root) / name
    hf = save_causal_lm(VARIANTS[name](), folder)
    return hf, load_hf_model(folder)


@pytest.fixture(params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    return _pair(request.param, str(tmp_path_factory.getbasetemp()))


def hf_logits(hf, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.tensor(ids)).logits.numpy()


def test_config_reads_both_rope_spellings():
    base = qwen2_config().to_dict()
    assert "rope_parameters" in base  # transformers 5
    hub = {k: v for k, v in base.items() if k != "rope_parameters"}
    hub["rope_theta"] = 1_000_000.0  # a hub config.json of transformers 4
    assert config_from_hf(base).rope.theta == config_from_hf(hub).rope.theta == 1e6


def test_full_forward_matches_transformers(pair):
    hf, model = pair
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(3, 40))
    logits, _ = jax.jit(full_forward)(model, jnp.asarray(ids))
    assert rel_err(logits, hf_logits(hf, ids)) < 1e-5


def test_prefill_then_decode_matches_full_forward(pair):
    _, model = pair
    ids = jnp.asarray(np.random.default_rng(1).integers(0, model.config.vocab_size, size=(2, 24)))
    full, _ = full_forward(model, ids)
    step = jax.jit(forward)
    cache = model.init_cache(2, 32)
    logits, _, cache = step(model, ids[:, :16], jnp.zeros(2, jnp.int32), cache)
    got = [logits]
    for t in range(16, 24):
        logits, _, cache = step(model, ids[:, t:t + 1], cache.lengths, cache)
        got.append(logits)
    assert rel_err(jnp.concatenate(got, axis=1), full) < 1e-5
    np.testing.assert_array_equal(cache.lengths, [24, 24])


@functools.partial(jax.jit, static_argnames=("n_new",))
def greedy_generate(model: Model, prompt: jax.Array, prompt_len: jax.Array, n_new: int) -> jax.Array:
    """Greedy decoding of ragged prompts [B, P] (right-padded, lengths prompt_len) through the cache."""
    b, p = prompt.shape
    cache = model.init_cache(b, p + n_new)
    logits, _, cache = forward(model, prompt, jnp.zeros(b, jnp.int32), cache, prompt_len)
    token = jnp.argmax(jnp.take_along_axis(logits, (prompt_len - 1)[:, None, None], axis=1)[:, 0], -1)

    def body(carry, _):
        token, cache = carry
        logits, _, cache = forward(model, token[:, None], cache.lengths, cache)
        return (jnp.argmax(logits[:, 0], -1), cache), token

    _, out = jax.lax.scan(body, (token, cache), length=n_new)
    return out.T


def test_greedy_generation_equals_transformers_generate(pair):
    hf, model = pair
    prompt = np.random.default_rng(2).integers(0, model.config.vocab_size, size=(1, 7))
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt), max_new_tokens=48, do_sample=False, eos_token_id=None,
                          pad_token_id=0, min_new_tokens=48)[0, 7:].numpy()
    got = greedy_generate(model, jnp.asarray(prompt), jnp.array([7]), 48)[0]
    np.testing.assert_array_equal(got, ref)


def test_ragged_batch_equals_rows_alone(pair):
    _, model = pair
    rng = np.random.default_rng(3)
    lengths = [5, 11, 8]
    prompt = np.zeros((3, 11), np.int64)
    for i, n in enumerate(lengths):
        prompt[i, :n] = rng.integers(1, model.config.vocab_size, n)
    batch = greedy_generate(model, jnp.asarray(prompt), jnp.array(lengths), 12)
    for i, n in enumerate(lengths):
        alone = greedy_generate(model, jnp.asarray(prompt[i:i + 1, :n]), jnp.array([n]), 12)
        np.testing.assert_array_equal(batch[i], alone[0])


def test_masked_tokens_are_not_written(pair):
    _, model = pair
    cache = model.init_cache(2, 16)
    ids = jnp.ones((2, 6), jnp.int32)
    _, _, cache = forward(model, ids, jnp.array([0, 0]), cache, jnp.array([6, 2]))
    np.testing.assert_array_equal(cache.lengths, [6, 2])
    assert not np.any(np.asarray(cache.k[:, 1, :, 2:]))  # row 1 wrote slots 0..1 only
    assert np.any(np.asarray(cache.k[:, 0, :, :6]))


def test_rollback_is_lowering_the_length(pair):
    _, model = pair
    rng = np.random.default_rng(4)
    ids = jnp.asarray(rng.integers(0, model.config.vocab_size, size=(1, 12)))
    other = jnp.asarray(rng.integers(0, model.config.vocab_size, size=(1, 4)))
    cache = model.init_cache(1, 16)
    _, _, cache = forward(model, ids[:, :8], jnp.array([0]), cache)
    _, _, cache = forward(model, other, cache.lengths, cache)  # a step that gets rejected
    cache = cache.with_lengths(jnp.array([8]))
    logits, _, _ = forward(model, ids[:, 8:], cache.lengths, cache)
    full, _ = full_forward(model, ids)
    assert rel_err(logits, full[:, 8:]) < 1e-5


def test_value_head_prm_matches_torch(tmp_path):
    lm, v_head = save_skywork_prm(tmp_path)
    prm = load_hf_model(tmp_path)
    assert prm.config.head == "value" and not prm.config.has_lm_head
    ids = np.random.default_rng(5).integers(0, prm.config.vocab_size, size=(2, 30))
    with torch.no_grad():
        hidden = lm.model(torch.tensor(ids), output_hidden_states=True).hidden_states[-1]
        ref = torch.sigmoid(v_head(hidden))[..., 0].numpy()
    _, hidden, _ = forward(prm, jnp.asarray(ids), jnp.zeros(2, jnp.int32), prm.init_cache(2, 30))
    rewards = prm.rewards(hidden)  # as the decoding loops score a step
    np.testing.assert_allclose(rewards, ref, rtol=1e-5, atol=1e-6)


def test_token_logit_prm_matches_torch(tmp_path):
    hf = save_causal_lm(qwen2_config(), tmp_path)
    prm = load_hf_model(tmp_path, head="token_logit", good_token_id=10, bad_token_id=20)
    ids = np.random.default_rng(6).integers(0, prm.config.vocab_size, size=(2, 16))
    probs = torch.softmax(torch.tensor(hf_logits(hf, ids), dtype=torch.float64), -1).numpy()
    ref = probs[..., 10] / (probs[..., 10] + probs[..., 20])
    _, hidden, _ = forward(prm, jnp.asarray(ids), jnp.zeros(2, jnp.int32), prm.init_cache(2, 16))
    rewards = prm.rewards(hidden)
    np.testing.assert_allclose(rewards, ref, rtol=1e-5, atol=1e-6)


def test_sharded_safetensors_index(tmp_path):
    hf = save_causal_lm(llama_config(), tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = load_hf_model(tmp_path)
    ids = np.random.default_rng(7).integers(0, model.config.vocab_size, size=(1, 9))
    assert rel_err(full_forward(model, jnp.asarray(ids))[0], hf_logits(hf, ids)) < 1e-5


def test_bfloat16_weights_load_as_configured_dtype(tmp_path):
    hf = save_causal_lm(qwen2_config(), tmp_path)
    hf.to(torch.bfloat16).save_pretrained(tmp_path)
    model = load_hf_model(tmp_path, dtype="bfloat16")
    leaves = jax.tree.leaves(model.params)
    assert all(x.dtype == jnp.bfloat16 for x in leaves)
    logits, _ = full_forward(model, jnp.ones((1, 4), jnp.int32))
    assert np.isfinite(np.asarray(logits)).all()
