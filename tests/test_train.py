"""The train command: an LM and a PRM on tiny settings, resume after an interruption, manifests."""

from __future__ import annotations

import json

from rsd_jax.config import TrainConfig
from rsd_jax.configlib import load_config
from rsd_jax.data import arith
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.train import main, prm, prm_dataset
from rsd_jax.weights import load_model

TINY = ["model.hidden_size=16", "model.intermediate_size=32", "optim.warmup_steps=1", "optim.batch_size=4",
        "data.n_train=32", "data.n_eval=8", "checkpoint_every=2"]


def test_lm_then_prm_with_resume(tmp_path):
    lm = [f"out={tmp_path / 'lm'}", f"work_dir={tmp_path / 'lm_work'}", "kind=lm"] + TINY
    assert main(lm + ["optim.total_steps=2"]) == 0  # "interrupted" after 2 steps
    assert main(lm + ["optim.total_steps=4"]) == 0  # resumes at step 2
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


def test_a_prm_needs_sample_sources(tmp_path, capsys):
    assert main([f"out={tmp_path / 'p'}", "kind=prm"] + TINY) == 2
    assert "data.sample_from" in capsys.readouterr().err


def test_prm_data_holds_sampled_and_greedy_solutions_of_every_lm(monkeypatch):
    calls = []

    def fake_sample(model, tok, problems, *, temperature, seed):  # greedy: the reference; sampled: a slip
        calls.append((model, temperature))
        return [arith.solution_text(p) if temperature == 0 else arith.solution_text(p).replace("=", "=1", 1)
                for p in problems]

    monkeypatch.setattr(prm, "sample_solutions", fake_sample)
    cfg = load_config(TrainConfig, None, TINY + ["data.sequence_length=160"])
    problems = arith.generate_problems(3, seed=0)
    tokens, mask, labels = prm_dataset(cfg, CharTokenizer(), problems, 5, ["draft", "target"], temperature=1.0,
                                       copies=2, greedy=True)
    assert calls == [("draft", 1.0), ("draft", 1.0), ("draft", 0.0), ("target", 1.0), ("target", 1.0),
                     ("target", 0.0)]
    first_step_label = [row[m > 0][0] for row, m in zip(labels, mask)]
    assert len(tokens) == 18 and first_step_label == ([0.0] * 6 + [1.0] * 3) * 2
    calls.clear()
    assert len(prm_dataset(cfg, CharTokenizer(), problems, 5, ["draft"], 1.0, copies=2)[0]) == 6 and \
        calls == [("draft", 1.0)] * 2
