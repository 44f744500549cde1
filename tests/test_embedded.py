"""The shipped embedded default: checkpoints that match the task's data version, and the README's main job."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rsd_jax import decode
from rsd_jax.data import arith
from rsd_jax.weights import load_model

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("arith_draft", "arith_target", "arith_prm", "arith_self_scoring")


@pytest.mark.parametrize("name", NAMES)
def test_each_shipped_checkpoint_has_a_manifest_for_the_current_task(name):
    manifest = json.loads((ROOT / "checkpoints" / name / "manifest.json").read_text())
    kind = name.removeprefix("arith_")
    assert manifest["command"].startswith(f"python -m rsd_jax.train --config configs/train_{kind}.yaml")
    assert manifest["data_version"] == arith.DATA_VERSION, "retrain the embedded models after a task change"
    assert isinstance(manifest["seed"], int) and manifest["metrics"] and manifest["train_seconds"] > 0
    model = load_model(ROOT / "checkpoints" / name)
    assert json.loads(json.dumps(model.config.to_dict())) == manifest["model"]
    assert model.num_params() == manifest["params"]


def test_the_merged_draft_and_prm_records_its_merge():
    manifest = json.loads((ROOT / "checkpoints" / "arith_merged_draft_prm" / "manifest.json").read_text())
    assert manifest["command"].startswith("python -m rsd_jax.merge --a checkpoints/arith_draft")
    assert manifest["merge"]["a"]["command"].startswith("python -m rsd_jax.train --config configs/train_draft.yaml")
    assert manifest["merge"]["b"]["command"].startswith("python -m rsd_jax.train --config "
                                                        "configs/train_prm_draft_arch.yaml")
    model = load_model(ROOT / "checkpoints" / "arith_merged_draft_prm")
    assert model.config.head == "lm+value" and model.num_params() == manifest["params"]
    assert json.loads(json.dumps(model.config.to_dict())) == manifest["model"]


def test_shipped_checkpoints_fit_the_budget_and_the_target_is_eight_drafts():
    size = sum(f.stat().st_size for f in (ROOT / "checkpoints").rglob("*") if f.is_file())
    assert size <= 30 * 2**20
    per_token = {n: json.loads((ROOT / "checkpoints" / n / "manifest.json").read_text())["flops_per_token_at_128"]
                 for n in NAMES}
    assert per_token["arith_target"] >= 8 * per_token["arith_draft"]


def test_the_readme_main_job_runs_on_the_shipped_models(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert decode.main(["--config", "configs/arith_tiny.yaml", "data.n=4", "decoding.batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert out.count("── arith-") == 4 and "[draft  r=" in out and "→ correct" in out
    assert "accuracy" in out and "draft_acceptance_rate" in out and "flops_vs_target_only" in out


def test_the_readme_python_api_example_runs_as_written(capsys, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    section = section[:section.index("\n## ", 1)]
    blocks = [b.split("\n```")[0] for b in section.split("```python\n")[1:]]  # rsd_jax.run / load, then generate
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, "README.md: Python API", "exec"), namespace)  # noqa: S102 (the project's own README)
    printed = capsys.readouterr().out
    assert namespace["summary"]["n_problems"] == 16 and len(namespace["loaded"].problems) == 16
    assert "0.5 " in printed and "0.9 " in printed  # the δ sweep's accuracies
    assert "The answer is" in printed and "draft" in printed
    best = namespace["best"]
    assert best.accounting["samples"] == 4 and best.steps and all(s.source == "draft" for s in best.steps)


def relative_links(markdown: str) -> list[str]:
    """The targets of a markdown text's links that are paths in this repository (no scheme, no bare anchor)."""
    return [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", markdown)
            if "://" not in t and not t.startswith("#")]


def test_the_readme_is_for_users_and_every_page_it_or_docs_links_exists():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 400, "the README holds at most 400 lines: move measurements to docs/"
    pages = [(ROOT / "README.md", readme)] + [(p, p.read_text()) for p in sorted((ROOT / "docs").glob("*.md"))]
    missing = [f"{page.relative_to(ROOT)} -> {link}" for page, text in pages for link in relative_links(text)
               if not (page.parent / link).exists()]
    assert not missing, "links to nothing: " + ", ".join(missing)
    assert relative_links("[a](docs/x.md#y) [b](https://h/z) [c](#tests)") == ["docs/x.md"]
