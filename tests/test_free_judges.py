"""Which judge comes free: the draft's confidence and value head of its own steps, against the separate PRM."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsd_jax.data import arith
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.models.model import full_forward
from rsd_jax.theory import free_judges
from rsd_jax.theory.__main__ import main
from rsd_jax.training.prm import auroc
from rsd_jax.weights import load_model

ROOT = Path(__file__).resolve().parent.parent
TOK = CharTokenizer.load(ROOT / "checkpoints" / "arith_draft" / "char_tokenizer.json")


def _record(steps, rewards):
    return {"steps": [{"text": s + arith.DELIMITER, "reward": r, "source": "draft"} for s, r in zip(steps, rewards)]}


def _slipped():
    """A problem, its reference steps and the same steps with step 1 wrong."""
    p = arith.generate_problems(1, seed=0)[0]
    _, wrong = arith.corrupt_step(p, 1, np.random.default_rng(0))
    return p, list(p.steps), list(p.steps[:1]) + [wrong] + list(p.steps[2:])


@pytest.mark.parametrize("name", ["arith_draft", "arith_self_scoring"])
def test_each_judge_reads_the_step_the_draft_wrote(name):
    draft = load_model(ROOT / "checkpoints" / name)
    p, right, slipped = _slipped()
    judged = free_judges.judge_steps(draft, TOK, [p, p], [_record(right, [0.9] * len(right)),
                                                         _record(slipped, [0.8, 0.3, 0.7, 0.6])])
    assert judged.problem.tolist() == [0] * len(right) + [1, 1]  # nothing after the first wrong step
    assert judged.correct.tolist() == [True] * len(right) + [True, False]
    assert judged.scores[free_judges.PRM].tolist() == [0.9] * len(right) + [0.8, 0.3]
    # independently: the draft's view, token by token, and its log-probabilities from one forward
    tokens, ends = [TOK.bos_id] + TOK.encode(arith.format_prompt(p)), []
    for i, step in enumerate(slipped[:2]):
        tokens += TOK.encode(step) + [TOK.delimiter_id]
        ends.append(len(tokens) - 1)
    logits, hidden = full_forward(draft, jnp.asarray([tokens]))
    logp = np.asarray(jax.nn.log_softmax(logits[0], -1))
    start = len(TOK.encode(arith.format_prompt(p))) + 1
    for k, end in enumerate(ends):
        expected = np.exp(min(logp[t - 1, tokens[t]] for t in range(start, end + 1)))
        np.testing.assert_allclose(judged.scores[free_judges.CONFIDENCE][len(right) + k], expected, rtol=1e-4)
        if draft.config.has_value_head:
            np.testing.assert_allclose(judged.scores[free_judges.VALUE_HEAD][len(right) + k],
                                       np.asarray(draft.rewards(hidden))[0, end], rtol=1e-4)
        start = end + 1
    assert (free_judges.VALUE_HEAD in judged.scores) == draft.config.has_value_head


def test_wrong_kept_is_read_at_the_share_of_correct_steps_kept():
    correct = np.array([True] * 10 + [False] * 4)
    separating = np.r_[np.linspace(0.6, 1.0, 10), [0.1, 0.2, 0.3, 0.4]]
    assert free_judges.wrong_kept(separating, correct, 1.0) == 0.0
    reversed_ = np.r_[np.linspace(0.0, 0.4, 10), [0.7, 0.8, 0.9, 1.0]]
    assert free_judges.wrong_kept(reversed_, correct, 0.1) == 1.0
    mixed = np.r_[np.linspace(0.1, 1.0, 10), [0.05, 0.35, 0.65, 0.95]]  # a threshold at 0.5 keeps 6 of 10
    assert free_judges.wrong_kept(mixed, correct, 0.6) == 0.5


def test_compare_gives_each_judge_its_auroc_and_an_interval_over_problems():
    rng = np.random.default_rng(0)
    problem = np.repeat(np.arange(40), 5)
    correct = rng.random(200) < 0.8
    good, noise = correct + 0.3 * rng.standard_normal(200), rng.random(200)
    judged = free_judges.JudgedSteps(problem, correct, {"good": good, "noise": noise})
    rows = {r["judge"]: r for r in free_judges.compare(judged, [0.9])["judges"]}
    for name, scores in (("good", good), ("noise", noise)):
        a = rows[name]["auroc"]
        assert a["value"] == pytest.approx(auroc(scores, correct)) and a["low"] <= a["value"] <= a["high"]
        assert a["n"] == 40
    assert rows["good"]["auroc"]["low"] > rows["noise"]["auroc"]["high"]
    assert rows["good"]["wrong_kept"]["0.9"] < rows["noise"]["wrong_kept"]["0.9"]


def test_the_command_tables_the_judges(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "judges"
    assert main(["--config", "configs/theory_free_judges.yaml", "--out", str(out), "run.data.n=24",
                 "run.models.draft.path=checkpoints/arith_self_scoring", "keeps=[0.9]"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["judge"] for r in summary["judges"]] == [free_judges.PRM, free_judges.CONFIDENCE, free_judges.VALUE_HEAD]
    assert summary["n_problems"] == 24 and summary["n_steps"] >= 24
    assert all(0.0 <= r["wrong_kept"]["0.9"] <= 1.0 for r in summary["judges"])
    assert "| draft's confidence (free) |" in (out / "report.md").read_text()


@pytest.mark.parametrize("override, message", [
    ("run.models.prm.self_scoring=true", "free_judges compares the draft's own judges with a separate PRM"),
    ("keeps=[0.0]", "keeps must lie in (0, 1]"),
])
def test_the_command_refuses_what_it_cannot_compare(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(ROOT)
    argv = ["--config", "configs/theory_free_judges.yaml", "--out", str(tmp_path), "run.data.n=4", override]
    if "self_scoring" in override:
        argv.append("run.models.draft.path=checkpoints/arith_self_scoring")
    assert main(argv) == 2
    assert message in capsys.readouterr().err
