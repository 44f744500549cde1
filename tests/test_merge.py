"""python -m rsd_jax.merge: exact linear merges of tiny random checkpoints, heads kept, mismatches named."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from engine_world import with_params
from rsd_jax.errors import InputError
from rsd_jax.merge import main
from rsd_jax.models import Model, ModelConfig, full_forward
from rsd_jax.weights import restore_model, save_model
from rsd_jax.weights.merging import merge_models, merge_params


def tiny(head: str, hidden: int = 16, tie: bool = True) -> ModelConfig:
    return ModelConfig(vocab_size=24, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=hidden // 4, head=head, tie_word_embeddings=tie,
                       max_position_embeddings=256)


def randomised(config: ModelConfig, seed: int) -> Model:
    """Every parameter (norm weights included) drawn at random, so no two models share a value."""
    model = Model.init(config, seed)
    leaves, treedef = jax.tree.flatten(model.params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return with_params(model, jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
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


# ------------------------------------------------------------------------------------------------ hub-layout folders
HUB_TINY = (("hidden_size", 32), ("intermediate_size", 64), ("num_attention_heads", 4), ("num_key_value_heads", 2),
            ("num_hidden_layers", 2))


@pytest.fixture(scope="module")
def hub_pair(tmp_path_factory):
    """Tiny random hub-layout folders of the paper's Table 4 pair: the Qwen2.5-Math-1.5B-Instruct LM (eos_token_id
    151645, a tokenizer without BOS) and the Skywork 1.5B PRM (eos_token_id 151643, a tokenizer with BOS)."""
    from rsd_jax.hub_layout import Layout, write_snapshot

    root = tmp_path_factory.mktemp("hub-merge")
    lm = write_snapshot(Layout("Qwen2.5-Math-1.5B-Instruct", HUB_TINY), root / "lm", seed=1)
    prm = write_snapshot(Layout("Skywork-o1-Open-PRM-Qwen-2.5-1.5B", HUB_TINY), root / "prm", seed=2, scale=0.05,
                         bos_token="<|endoftext|>")
    return lm, prm


@pytest.fixture(scope="module")
def hub_merged(hub_pair, tmp_path_factory):
    """python -m rsd_jax.merge --a LM --b PRM --weight 0.3 on the hub folders: (its stdout, the merged folder)."""
    import contextlib
    import io

    lm, prm = hub_pair
    out = tmp_path_factory.mktemp("hub-merged") / "merged"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["--a", str(lm), "--b", str(prm), "--weight", "0.3", "--out", str(out)]) == 0
    return json.loads(stdout.getvalue()), out


def test_hub_folders_merge_into_a_hub_folder_the_loaders_read(hub_pair, hub_merged):
    from rsd_jax.hf_tokenizer import HFTokenizer
    from rsd_jax.weights import load_model

    lm, prm = hub_pair
    assert json.loads((lm / "config.json").read_text())["eos_token_id"] == 151645
    assert json.loads((prm / "config.json").read_text())["eos_token_id"] == 151643
    printed, out = hub_merged
    assert printed == {"out": str(out), "head": "lm+value", "format": "hub", "eos_token_id": [151645]}
    hf = json.loads((out / "config.json").read_text())
    assert hf["architectures"] == ["Qwen2ForCausalLMWithValueHead"] and hf["eos_token_id"] == 151645
    merged, a, b = (load_model(p) for p in (out, lm, prm))  # float32 from bfloat16: exact
    assert merged.config.head == "lm+value" and merged.config.eos_token_id == (151645,)
    expected = merge_params(a.pure_dict(), b.pure_dict(), 0.3)  # float32 arithmetic, as the merge does it
    fe, fm = _flat_tree(expected), flat(merged)
    assert set(fm) == set(fe) and any("v_head" in k for k in fm)
    for name, value in fm.items():  # stored in bfloat16, A's dtype
        np.testing.assert_array_equal(value, np.asarray(jax.numpy.asarray(fe[name]).astype("bfloat16"), np.float32),
                                      err_msg=name)
    # the LM side's tokenizer beside the model (stops at <|im_end|>), the PRM's (with its BOS) for models.prm_tokenizer
    assert HFTokenizer.from_folder(out).eos_ids[0] == 151645 and HFTokenizer.from_folder(out).bos_id is None
    assert HFTokenizer.from_folder(out / "prm_tokenizer").bos_id == 151643
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["merge"]["weight_a"] == 0.3 and manifest["config_from"] == "a" and manifest["format"] == "hub"


def _flat_tree(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_transformers_reads_the_merged_folder_as_the_lm(hub_merged):
    import torch
    import transformers

    from rsd_jax.models import full_forward
    from rsd_jax.weights import load_model

    _, out = hub_merged
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = [[151644, 872, 198, 16, 10, 16, 28, 30]]
    with torch.no_grad():
        ref = model(torch.tensor(tokens)).logits.numpy()
    ours, _ = full_forward(load_model(out), jax.numpy.asarray(tokens))
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4, atol=1e-4)


def add_cached(cache, repo: str, folder, commit: str) -> None:
    """A hub-cache snapshot of `folder` (refs/main), as the offline loaders find it."""
    import shutil

    snapshot = cache / ("models--" + repo.replace("/", "--")) / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (snapshot.parents[1] / "refs").mkdir(exist_ok=True)
    (snapshot.parents[1] / "refs" / "main").write_text(commit)


def test_hub_ids_merge_from_the_cache_offline(hub_pair, hub_merged, tmp_path, monkeypatch):
    lm, prm = hub_pair
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    add_cached(tmp_path / "hub", "Qwen/Qwen2.5-Math-1.5B-Instruct", lm, "a" * 40)
    add_cached(tmp_path / "hub", "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B", prm, "b" * 40)
    by_id, by_folder = tmp_path / "by-id", hub_merged[1]
    assert main(["--a", "Qwen/Qwen2.5-Math-1.5B-Instruct", "--b", "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B",
                 "--weight", "0.3", "--out", str(by_id)]) == 0
    shards = sorted(p.name for p in by_id.glob("*.safetensors"))
    assert shards and shards == sorted(p.name for p in by_folder.glob("*.safetensors"))
    assert all((by_id / s).read_bytes() == (by_folder / s).read_bytes() for s in shards)
    source = json.loads((by_id / "manifest.json").read_text())["merge"]["a"]["source"]
    assert source == "Qwen/Qwen2.5-Math-1.5B-Instruct"


def test_hub_merges_refuse_other_vocabularies_other_architectures_and_mixed_kinds(hub_pair, pair, tmp_path, capsys):
    import shutil

    from rsd_jax.hub_layout import Layout, write_snapshot

    lm, prm = hub_pair
    odd = tmp_path / "odd"
    shutil.copytree(prm, odd)
    tok = json.loads((odd / "tokenizer.json").read_text())
    tok["added_tokens"][0]["content"] = "<|other|>"
    (odd / "tokenizer.json").write_text(json.dumps(tok))
    deep = write_snapshot(Layout("Skywork-o1-Open-PRM-Qwen-2.5-1.5B", HUB_TINY[:-1] + (("num_hidden_layers", 3),)),
                          tmp_path / "deep", seed=3)
    orbax = pair[2] / "a"
    for b, message in ((odd, "map ids to different tokens"), (deep, "model config field num_layers is 2 in A and 3"),
                       (orbax, "--a is hub")):
        out = tmp_path / "m"
        assert main(["--a", str(lm), "--b", str(b), "--weight", "0.5", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not out.exists()


def test_special_tokens_come_from_the_side_that_writes():
    from rsd_jax.weights.merging import merged_config

    lm = tiny("lm").replace(eos_token_id=(151645,), bos_token_id=151643)
    prm = tiny("value").replace(eos_token_id=(151643,), bos_token_id=None)
    for a, b in ((lm, prm), (prm, lm)):  # whichever side is A
        merged = merged_config(a, b)
        assert (merged.head, merged.eos_token_id, merged.bos_token_id) == ("lm+value", (151645,), 151643)
    assert merged_config(prm, prm.replace(eos_token_id=(7,))).eos_token_id == (151643,)  # no writer: A's
