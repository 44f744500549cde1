"""python -m rsd_jax.merge: exact linear merges of tiny random checkpoints, heads kept, mismatches named."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from rsd_jax.errors import InputError
from rsd_jax.merge import main
from rsd_jax.models import Model, ModelConfig, full_forward
from rsd_jax.weights import restore_model, save_model
from rsd_jax.weights.merging import merge_models


def tiny(head: str, hidden: int = 16, tie: bool = True) -> ModelConfig:
    return ModelConfig(vocab_size=24, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=hidden // 4, head=head, tie_word_embeddings=tie,
                       max_position_embeddings=256)


def randomised(config: ModelConfig, seed: int) -> Model:
    """Every parameter (norm weights included) drawn at random, so no two models share a value."""
    model = Model.init(config, seed)
    leaves, treedef = jax.tree.flatten(model.params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return model.with_params(jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                                         for k, x in zip(keys, leaves)]))


def flat(model: Model) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(model.pure_dict())}


@pytest.fixture()
def pair(tmp_path):
    """An LM (A) and a value-head PRM (B) of one architecture, saved as checkpoints."""
    a, b = randomised(tiny("lm"), seed=1), randomised(tiny("value"), seed=2)
    save_model(a, tmp_path / "a")
    save_model(b, tmp_path / "b")
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({"command": "train A"}))
    return a, b, tmp_path


def test_merge_is_the_weighted_sum_and_keeps_the_value_head(pair, capsys):
    a, b, tmp = pair
    argv = ["--a", str(tmp / "a"), "--b", str(tmp / "b"), "--weight", "0.25", "--out", str(tmp / "m")]
    assert main(argv) == 0
    merged = restore_model(tmp / "m")
    assert merged.config.head == "lm+value" and merged.config.has_lm_head and merged.config.has_value_head
    fa, fb, fm = flat(a), flat(b), flat(merged)
    assert set(fm) == set(fa) | set(fb) and any("v_head" in k for k in fm) and not any("v_head" in k for k in fa)
    for name, value in fm.items():
        if name in fa and name in fb:
            expected = np.float32(0.25) * fa[name] + np.float32(0.75) * fb[name]
            np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7, err_msg=name)
            assert not np.array_equal(value, fa[name])
        else:
            np.testing.assert_array_equal(value, fb[name], err_msg=name)  # only the PRM has it: kept as is
    manifest = json.loads((tmp / "m" / "manifest.json").read_text())
    assert manifest["command"] == "python -m rsd_jax.merge " + " ".join(argv)
    assert manifest["merge"]["weight_a"] == 0.25 and manifest["merge"]["a"]["command"] == "train A"
    # the merged model both writes (LM head: the merged tied embedding) and scores
    tokens = jax.numpy.asarray([[1, 5, 7, 9]])
    logits, hidden = full_forward(merged, tokens)
    assert logits.shape == (1, 4, 24) and merged.rewards(hidden).shape == (1, 4)


def test_weight_one_gives_a_back_with_b_only_parameters(pair):
    a, b, _ = pair
    merged = merge_models(a, b, 1.0)
    fa, fm = flat(a), flat(merged)
    for name in fa:
        np.testing.assert_array_equal(fm[name], fa[name])


def test_a_shape_mismatch_names_the_first_parameter(pair, capsys):
    a, _, tmp = pair
    save_model(Model.init(tiny("value", hidden=32), seed=3), tmp / "wide")
    rc = main(["--a", str(tmp / "a"), "--b", str(tmp / "wide"), "--weight", "0.5", "--out", str(tmp / "m")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: cannot merge: parameter ['embed_tokens']['embedding'] has shape")
    assert "(24, 16) in A and (24, 32) in B" in err
    assert not (tmp / "m").exists()


def test_other_architecture_fields_and_weights_out_of_range_are_refused(pair):
    a, b, _ = pair
    other = Model.init(tiny("value").replace(rms_norm_eps=1e-5), seed=4)
    with pytest.raises(InputError, match="rms_norm_eps"):
        merge_models(a, other, 0.5)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        merge_models(a, b, 1.5)


def test_an_existing_out_is_refused(pair, capsys):
    _, _, tmp = pair
    (tmp / "m").mkdir()
    (tmp / "m" / "x").write_text("keep")
    assert main(["--a", str(tmp / "a"), "--b", str(tmp / "b"), "--weight", "0.5", "--out", str(tmp / "m")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp / "m" / "x").read_text() == "keep"
