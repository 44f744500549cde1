"""The train command: an LM and a PRM on tiny settings, resume after an interruption, manifests."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from rsd_jax import train as train_module
from rsd_jax.config import TrainConfig
from rsd_jax.configlib import load_config
from rsd_jax.data import arith
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.errors import RSDError
from rsd_jax.models import Model, ModelConfig
from rsd_jax.train import main, prm
from rsd_jax.training import lm, run_dir
from rsd_jax.training.backbone import initial_params
from rsd_jax.training.loop import trim_padding
from rsd_jax.training.prm_data import Labelling, prm_dataset
from rsd_jax.weights import load_model, save_model

TINY = ["model.hidden_size=16", "model.intermediate_size=32", "optim.warmup_steps=1", "optim.batch_size=4",
        "data.n_train=32", "data.n_eval=8", "checkpoint_every=2"]


def interrupt_at(monkeypatch, at: int) -> None:
    """The next training run stops with a KeyboardInterrupt when it asks for the batch of step `at`."""
    real = train_module.train

    def interrupted(config, init, loss_fn, batch_at, *args, **kwargs):
        def batch_or_stop(step):
            if step == at:
                raise KeyboardInterrupt
            return batch_at(step)
        return real(config, init, loss_fn, batch_or_stop, *args, **kwargs)

    monkeypatch.setattr(train_module, "train", interrupted)


def test_lm_then_prm_with_resume(tmp_path, monkeypatch):
    lm = [f"out={tmp_path / 'lm'}", f"work_dir={tmp_path / 'lm_work'}", "kind=lm", "optim.total_steps=4"] + TINY
    with monkeypatch.context() as m:
        interrupt_at(m, 3)  # after the checkpoint at step 2
        with pytest.raises(KeyboardInterrupt):
            main(lm)
    assert not (tmp_path / "lm").exists()
    assert main(lm) == 0  # resumes at step 2
    manifest = json.loads((tmp_path / "lm" / "manifest.json").read_text())
    assert manifest["resumed_from_step"] == 2 and 0.0 <= manifest["metrics"]["accuracy"] <= 1.0
    assert manifest["data_version"] == arith.DATA_VERSION and manifest["command"].startswith("python -m rsd_jax.train")
    assert load_model(tmp_path / "lm").config.hidden_size == 16
    prm = [f"out={tmp_path / 'prm'}", f"work_dir={tmp_path / 'prm_work'}", "kind=prm", "optim.total_steps=2",
           f"data.sample_from=[{tmp_path / 'lm'}]", f"init_from={tmp_path / 'lm'}", "data.temperature=2.0"] + TINY
    assert main(prm) == 0

    def no_nan(constant):
        raise AssertionError(f"{constant} in the manifest: not JSON")

    metrics = json.loads((tmp_path / "prm" / "manifest.json").read_text(), parse_constant=no_nan)["metrics"]
    assert "auroc_draft_greedy" in metrics
    assert load_model(tmp_path / "prm").config.head == "value"


def test_a_self_scoring_draft_starts_from_an_lm_and_gains_a_value_head(tmp_path):
    lm_args = [f"out={tmp_path / 'lm'}", f"work_dir={tmp_path / 'lm_work'}", "kind=lm", "optim.total_steps=2"] + TINY
    assert main(lm_args) == 0
    args = [f"out={tmp_path / 'ss'}", f"work_dir={tmp_path / 'ss_work'}", "kind=self_scoring", "optim.total_steps=2",
            f"data.sample_from=[{tmp_path / 'lm'}]", f"init_from={tmp_path / 'lm'}", "lm_loss_weight=1.0"] + TINY
    assert main(args) == 0
    model, start = load_model(tmp_path / "ss"), load_model(tmp_path / "lm")
    assert model.config.head == "lm+value" and model.config == start.config.replace(head="lm+value")
    metrics = json.loads((tmp_path / "ss" / "manifest.json").read_text())["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "auroc_self_greedy" in metrics
    no_sources = [a for a in args if not a.startswith("data.sample_from")] + [f"out={tmp_path / 'ss2'}",
                                                                                f"work_dir={tmp_path / 'ss2_work'}"]
    assert main(no_sources) == 2


def test_init_from_continues_an_lm_or_starts_a_prm_and_refuses_another_architecture(tmp_path):
    lm_cfg = load_config(TrainConfig, None, TINY + ["kind=lm", "seed=7"])
    source = Model.init(train_module.model_config(lm_cfg, CharTokenizer().vocab_size), 7)
    save_model(source, tmp_path / "lm")
    want = jax.tree_util.tree_leaves(source.pure_dict())
    cont = load_config(TrainConfig, None, TINY + ["kind=lm", f"init_from={tmp_path / 'lm'}"])  # seed 0: other init
    got = initial_params(train_module.model_config(cont, CharTokenizer().vocab_size), cont.seed, tmp_path / "lm")
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(got), want))
    prm_cfg = load_config(TrainConfig, None, TINY + ["kind=prm", f"init_from={tmp_path / 'lm'}"])
    got = initial_params(train_module.model_config(prm_cfg, CharTokenizer().vocab_size), prm_cfg.seed, tmp_path / "lm")
    assert np.array_equal(got["layers"]["mlp"]["down_proj"]["kernel"],
                          source.pure_dict()["layers"]["mlp"]["down_proj"]["kernel"])
    assert "v_head" in got and "v_head" not in source.pure_dict()
    wide = load_config(TrainConfig, None, TINY + ["kind=prm", f"init_from={tmp_path / 'lm'}", "model.hidden_size=32"])
    with pytest.raises(RSDError, match="do not match the model's architecture.*embed_tokens"):
        initial_params(train_module.model_config(wide, CharTokenizer().vocab_size), wide.seed, tmp_path / "lm")


def test_a_work_dir_is_resumed_only_by_its_own_run(tmp_path, monkeypatch, capsys):
    lm = [f"out={tmp_path / 'lm'}", f"work_dir={tmp_path / 'work'}", "kind=lm", "optim.total_steps=4"] + TINY
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        main(lm)
    capsys.readouterr()
    assert main(lm + ["data.seed=5"]) == 2  # another run's checkpoints: refused, not silently resumed
    err = capsys.readouterr().err
    assert "different run" in err and "data.seed: 1 there, 5 now" in err
    assert main(lm + ["optim.total_steps=6"]) == 2 and "optim.total_steps" in capsys.readouterr().err
    (tmp_path / "work" / run_dir.RUN_FILE).unlink()  # checkpoints of an unknown run
    assert main(lm) == 2 and "cannot tell whose run" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["2"]  # nothing was deleted


def test_a_retrained_source_model_is_a_different_run(tmp_path, monkeypatch):
    source = tmp_path / "lm"
    source.mkdir()
    (source / "manifest.json").write_text("{}")
    cfg = load_config(TrainConfig, None, TINY + ["kind=prm", f"data.sample_from=[{source}]"])
    before = train_module.run_identity(cfg, None)
    (source / "manifest.json").write_text('{"retrained": true}')
    assert train_module.run_identity(cfg, None)["sources"] != before["sources"]


def test_a_prm_needs_sample_sources(tmp_path, capsys):
    assert main([f"out={tmp_path / 'p'}", "kind=prm"] + TINY) == 2
    assert "data.sample_from" in capsys.readouterr().err


def test_the_auxiliary_lm_loss_needs_tied_embeddings_and_says_so_before_sampling(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "restore_model", lambda *a: pytest.fail("sampled before the config check"))
    args = [f"out={tmp_path / 'p'}", "kind=prm", "data.sample_from=[somewhere]", "lm_loss_weight=1.0",
            "model.tie_word_embeddings=false"]
    assert main(args + TINY) == 2
    assert "tie_word_embeddings" in capsys.readouterr().err


def prm_data(problems, lms, **options):
    """The PRM's training arrays of `problems` from `lms` at temperature 1 (seed 5, 160 tokens a row)."""
    return prm_dataset(CharTokenizer(), problems, lms, Labelling(temperature=1.0, **options), seed=5,
                       sequence_length=160)


def test_prm_data_holds_sampled_and_greedy_solutions_of_every_lm(monkeypatch):
    calls = []

    def fake_sample(model, tok, problems, *, temperature, seed, prefixes=None):  # greedy: right; sampled: a slip
        assert prefixes is None
        calls.append((model, temperature))
        return [arith.solution_text(p) if temperature == 0 else arith.solution_text(p).replace("=", "=1", 1)
                for p in problems]

    monkeypatch.setattr(prm, "sample_solutions", fake_sample)
    problems = arith.generate_problems(3, seed=0)
    tokens, mask, labels = prm_data(problems, ["draft", "target"], copies=2, greedy=True)
    assert calls == [("draft", 1.0), ("draft", 1.0), ("draft", 0.0), ("target", 1.0), ("target", 1.0),
                     ("target", 0.0)]
    first_step_label = [row[m > 0][0] for row, m in zip(labels, mask)]
    assert len(tokens) == 18 and first_step_label == ([0.0] * 6 + [1.0] * 3) * 2
    calls.clear()
    assert len(prm_data(problems, ["draft"], copies=2)[0]) == 6 and calls == [("draft", 1.0)] * 2


def test_prm_data_from_reference_prefixes_labels_only_the_lms_own_steps(monkeypatch):
    seen = []

    def fake_continue(model, tok, problems, *, temperature, seed, prefixes=None):  # the LM slips on its 1st step
        seen.append(prefixes)
        if prefixes is None:
            return [arith.solution_text(p) for p in problems]
        out = []
        for p, prefix in zip(problems, prefixes):
            k = prefix.count(arith.DELIMITER)
            rest = list(p.steps[k:])
            rest[0] = "1" + rest[0]  # a wrong step: the stated left operand is not the previous result
            out.append(arith.DELIMITER.join(rest))
        return out

    monkeypatch.setattr(prm, "sample_solutions", fake_continue)
    problems = arith.generate_problems(40, seed=0)
    tokens, mask, labels = prm_data(problems, ["draft"], copies=0, greedy=True, cuts=1)
    assert seen[0] is None and len(seen) == 2 and len(tokens) == 80
    ks = [prefix.count(arith.DELIMITER) for prefix in seen[1]]
    assert all(1 <= k <= p.level for k, p in zip(ks, problems)) and len(set(ks)) > 1
    for i, (p, k) in enumerate(zip(problems, ks)):
        whole, continued = labels[i][mask[i] > 0], labels[40 + i][mask[40 + i] > 0]
        assert whole.tolist() == [1.0] * (p.level + 1)  # the whole reference solution, every step labelled
        assert len(continued) == p.level + 1 - k and continued[0] == 0.0  # the prefix is read, not labelled
        assert (tokens[40 + i] != 0).sum() > (tokens[i] != 0).sum()  # ... and read: one character more


def test_prefix_continuations_extend_the_prompt():
    from rsd_jax.training.prm import lm_prompts

    problems = arith.generate_problems(2, seed=1)
    tok = CharTokenizer()
    batch = lm_prompts(tok, problems, 8, [arith.reference_prefix(problems[0], 1), ""])
    first = [tok.bos_id] + tok.encode(arith.format_prompt(problems[0]) + problems[0].steps[0]) + [tok.delimiter_id]
    assert batch.tokens[0, :len(first)].tolist() == first and int(batch.length[0]) == len(first)
    assert int(batch.length[1]) == 1 + len(tok.encode(arith.format_prompt(problems[1])))


def test_prm_data_adds_perturbed_references_after_the_samples(monkeypatch):
    monkeypatch.setattr(prm, "sample_solutions", lambda model, tok, problems, **kw: [arith.solution_text(p)
                                                                                  for p in problems])
    problems = arith.generate_problems(20, seed=0)
    tokens, mask, labels = prm_data(problems, ["draft"], copies=1, perturbed=2)
    assert len(tokens) == 60
    for i in range(20, 60):
        row = labels[i][mask[i] > 0]
        assert row[-1] == 0.0 and row[:-1].tolist() == [1.0] * (len(row) - 1)  # correct steps, one near miss
    again = prm_data(problems, ["draft"], copies=1, perturbed=2)[0]
    assert (again == tokens).all() and not (tokens[20:40] == tokens[40:60]).all()  # seeded; two copies differ
    flips = prm_data(problems, ["draft"], copies=1, perturbed=1, perturb_kinds=("operator",))[0]
    for p, row in zip(problems, flips[20:]):
        steps = arith.split_steps(CharTokenizer().decode([t for t in row.tolist() if t > 2])[len(p.question) + 1:])
        assert arith.step_errors(p, steps, len(steps) - 1) == ("operator",)
    share = prm_data(problems, ["draft"], copies=1, perturbed=2.25)
    assert len(share[0]) == 65 and (share[0][:60] == tokens).all()  # whole copies as before, then 5 problems
    picked = [CharTokenizer().decode([t for t in row.tolist() if t > 2]).split("\n")[0] for row in share[0][60:]]
    assert len(set(picked)) == 5 and set(picked) <= {p.question for p in problems}
    assert share[2][60:][share[1][60:] > 0].tolist().count(0.0) == 5  # one near miss each


def test_trimmed_batches_keep_every_token_and_the_loss():
    tok = CharTokenizer()
    problems = arith.generate_problems(6, seed=5, levels=(3,))
    tokens, mask = lm.encode_examples(tok, problems, 128)
    trimmed = trim_padding((tokens, mask))
    used = int(np.nonzero(tokens.any(0))[0].max()) + 1
    assert trimmed[0].shape[1] % 16 == 0 and used <= trimmed[0].shape[1] < used + 16
    assert trim_padding((tokens[:, :40], mask[:, :40]))[0].shape[1] == 40  # never wider than given
    model = Model.init(ModelConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_layers=2,
                                   num_heads=2, num_kv_heads=1, head_dim=8), 0)
    full, cut = lm.lm_loss(model, (tokens, mask)), lm.lm_loss(model, trimmed)
    np.testing.assert_allclose(cut[0], full[0], rtol=1e-5)
    t, m, y = prm.encode_prm_examples(tok, problems, [arith.solution_text(p) for p in problems], 128)
    value = Model.init(dataclasses.replace(model.config, head="value"), 1)
    np.testing.assert_allclose(prm.prm_loss(value, trim_padding((t, m, y)))[0], prm.prm_loss(value, (t, m, y))[0],
                               rtol=1e-5)


def test_the_auxiliary_lm_loss_reads_each_solution_up_to_its_first_wrong_step():
    tok = CharTokenizer()
    problems = arith.generate_problems(3, seed=5, levels=(3,))
    wrong = arith.reference_prefix(problems[1], 1) + "1+1=7\n\nThe answer is 7."
    texts = [arith.solution_text(problems[0]), wrong, arith.solution_text(problems[2])]
    t, m, y = prm.encode_prm_examples(tok, problems, texts, 64, [0, 0, 2])
    w = prm.solution_lm_weights(t, m, y, tok.encode("\n")[0], tok.delimiter_id)
    read = [tok.decode([int(x) for x, k in zip(t[i], w[i]) if k]) for i in range(3)]
    assert read[0] == arith.solution_text(problems[0]) + "\n\n"  # all correct: the whole solution
    assert read[1] == arith.reference_prefix(problems[1], 1)  # stops before the wrong step
    assert read[2] == arith.solution_text(problems[2]) + "\n\n"  # the unlabelled prefix is correct: read too
    model = Model.init(ModelConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_layers=1,
                                   num_heads=2, num_kv_heads=1, head_dim=8, head="value",
                                   tie_word_embeddings=True), 0)
    plain, _ = prm.prm_loss(model, (t, m, y))
    both, metrics = prm.prm_loss(model, (t, m, y, w), lm_weight=0.5)
    np.testing.assert_allclose(both, plain + 0.5 * metrics["lm_loss"], rtol=1e-5)
    assert float(metrics["lm_loss"]) > 0
