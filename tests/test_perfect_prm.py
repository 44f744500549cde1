"""RSD with the exact checker as the PRM: only correct draft steps are kept, its accounting, and its command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsd_jax import flops
from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.data import arith
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.loading import load_engine
from rsd_jax.theory import perfect_prm as perfect
from rsd_jax.theory.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
SPEC = DecodeSpec(max_new_tokens=112, max_steps=12, max_step_tokens=24, chunk=32)


@pytest.fixture(scope="module")
def shipped():
    config = ROOT / "configs" / "arith_dev.yaml"
    return load_engine(load_config(RunConfig, config), str(config))


def test_only_correct_draft_steps_are_kept_and_every_rejection_was_wrong(shipped):
    problems = arith.generate_problems(6, seed=777)
    runs = perfect.decode(shipped, problems, SPEC, batch_size=8)
    for problem, run in zip(problems, runs):
        labels = arith.check_steps(problem, run.steps)
        assert all(ok for ok, source in zip(labels, run.sources) if source == "draft")
        for k, proposal in run.rejected:
            assert run.sources[k] == "target" and not arith.check_steps(problem, run.steps[:k] + [proposal])[-1]
        assert len(run.steps) == problem.level + 1 and run.steps[-1].startswith("The answer is")
    assert any(run.rejected for run in runs) and any(not run.rejected for run in runs)


def test_the_target_pays_for_everything_up_to_its_last_step(shipped):
    problem = arith.generate_problems(1, seed=0)[0]
    tok, draft, target = shipped.models.tokenizer, shipped.draft.config, shipped.target.config
    prompt = len(tok.encode(arith.format_prompt(problem)))
    total = prompt + sum(len(tok.encode(s + arith.DELIMITER)) for s in problem.steps)
    alone = perfect.useful_flops(shipped.models, problem, perfect.Trajectory(list(problem.steps),
                                                                      ["draft"] * len(problem.steps)))
    assert alone["target"] == 0.0
    assert alone["draft"] == pytest.approx(float(flops.span_flops(draft, 0, total, with_head=False)
                                                 + (total - prompt) * flops.head_flops_per_token(draft)))
    wrong = "1" + problem.steps[0]
    first = perfect.useful_flops(shipped.models, problem, perfect.Trajectory(
        list(problem.steps), ["target"] + ["draft"] * (len(problem.steps) - 1), [(0, wrong)]))
    last = perfect.useful_flops(shipped.models, problem, perfect.Trajectory(
        list(problem.steps), ["draft"] * (len(problem.steps) - 1) + ["target"]))
    first_end = prompt + len(tok.encode(problem.steps[0] + arith.DELIMITER))
    head = flops.head_flops_per_token(target)
    assert first["target"] == pytest.approx(float(flops.span_flops(target, 0, first_end, with_head=False)
                                                  + (first_end - prompt) * head))
    last_start = total - len(tok.encode(problem.steps[-1] + arith.DELIMITER))
    assert last["target"] == pytest.approx(float(flops.span_flops(target, 0, total, with_head=False)
                                                 + (total - last_start) * head))
    assert first["draft"] > alone["draft"]  # the rejected proposal was written too
    assert alone["target_only"] == first["target_only"] and last["target"] > first["target"]


def test_the_command_compares_the_perfect_prm_with_the_learned_one(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "perfect"
    assert main(["--config", "configs/theory_perfect_prm.yaml", "--out", str(out), "run.data.n=4",
                 "deltas=[0.0, 1.01]"]) == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    best, accept_all, reject_all = rows
    assert best["delta"] is None and accept_all["draft_acceptance"] == 1.0 and reject_all["draft_acceptance"] == 0.0
    assert best["accuracy"] >= accept_all["accuracy"]
    assert best["flops_vs_target_only"] < reject_all["flops_vs_target_only"]
    assert "perfect (exact checker)" in (out / "report.md").read_text()


def test_the_command_needs_the_embedded_task(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["--config", "configs/theory_perfect_prm.yaml", "--out", str(tmp_path), "run.data.source=prompts",
                 "run.data.prompts=[1+1]"]) == 2
    assert "perfect_prm needs the embedded task" in capsys.readouterr().err
