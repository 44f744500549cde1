"""The decode and evaluate commands: real-model path against transformers, resume, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from hf_models import qwen2_config, save_causal_lm, save_skywork_prm
from rsd_jax import decode, evaluate
from rsd_jax.data.char_tokenizer import CharTokenizer
from rsd_jax.models import Model, ModelConfig
from rsd_jax.qwen_vocabulary import qwen_tokenizer
from rsd_jax.weights import save_model

QWEN_VOCAB = 151936


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    small = dict(vocab_size=QWEN_VOCAB, hidden_size=32, intermediate_size=48, num_attention_heads=4)
    save_causal_lm(qwen2_config(**small, num_hidden_layers=1), root / "draft", seed=1)
    target = save_causal_lm(qwen2_config(**small), root / "target", seed=2)
    save_skywork_prm(root / "prm", seed=3, **small)
    return root, target


def test_decode_matches_transformers_generate_for_the_target(hf_folders, tmp_path, capsys):
    root, target = hf_folders
    question = "What is 7 times 6?"
    common = [f"models.draft.path={root / 'draft'}", f"models.target.path={root / 'target'}",
              f"models.prm.path={root / 'prm'}", "models.tokenizer=qwen", "data.source=prompts",
              f"data.prompts=[{json.dumps(question)}]", "decoding.max_new_tokens=16", "decoding.chunk=8"]
    ids = qwen_tokenizer().encode(question + "\n")
    with torch.no_grad():
        ref = target.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=[151643, 151645],
                              pad_token_id=151643)[0, len(ids):].tolist()
    for method in (["rsd.method=target"], ["rsd.method=rsd", "rsd.delta=2.0"]):
        out = tmp_path / method[-1]
        assert decode.main(common + method + ["--out", str(out), "--quiet"]) == 0
        record = json.loads((out / "results.jsonl").read_text())
        assert record["token_ids"] == ref[:len(record["token_ids"])] and len(record["token_ids"]) == len(ref)


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    tok = CharTokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4,
                      num_kv_heads=2, head_dim=8)
    for name, c, seed in (("draft", cfg, 1), ("target", cfg.replace(num_layers=2), 2), ("prm", cfg.replace(head="value"), 3)):
        save_model(Model.init(c, seed), root / name)
        tok.save(root / name / "char_tokenizer.json")
    return [f"models.{n}.path={root / n}" for n in ("draft", "target", "prm")]


def test_evaluate_resumes_to_the_same_summary(tiny_checkpoints, tmp_path):
    args = tiny_checkpoints + ["data.n=6", "decoding.batch_size=2", "decoding.max_new_tokens=12", "rsd.thresholds=[0.3]"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert evaluate.main(args + ["--out", str(full)]) == 0
    assert evaluate.main(args + ["--out", str(part)]) == 0
    for name in ("rsd", "target", "draft", "rsd@0.3"):  # cut every log to its first 3 records, with a torn line
        lines = (part / f"{name}.jsonl").read_text().splitlines()
        (part / f"{name}.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    assert evaluate.main(args + ["--out", str(part)]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    for key in a:  # time, and executed work (it depends on how problems share batches), may differ
        for field in ("wall_seconds", "executed_flops"):
            a[key].pop(field), b[key].pop(field)
    assert a == b
    assert (full / "summary.md").is_file() and (full / "accuracy_vs_flops.png").is_file()


def _error(capsys, argv) -> str:
    assert decode.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_input_gives_one_clear_line(tiny_checkpoints, tmp_path, capsys):
    assert "config file not found" in _error(capsys, ["--config", str(tmp_path / "none.yaml")])
    assert "did you mean 'rsd.delta'" in _error(capsys, tiny_checkpoints + ["rsd.deltta=0.5"])
    assert "model folder not found" in _error(capsys, ["models.draft.path=/no/such/dir"] + tiny_checkpoints[1:])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Start with 3.\n\xff\xfe")
    assert "not UTF-8" in _error(capsys, tiny_checkpoints + ["data.source=prompts", f"data.prompts_file={bad}"])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert "no prompts" in _error(capsys, tiny_checkpoints + ["data.source=prompts", f"data.prompts_file={empty}"])
    long = "Add 1. " * 200
    assert "exceeds the models' context" in _error(capsys, tiny_checkpoints + [
        "data.source=prompts", f"data.prompts=[{json.dumps(long)}]", "decoding.max_new_tokens=40000"])
    assert "past the target's 64 (raise models.target.max_context" in _error(capsys, tiny_checkpoints + [
        "data.source=prompts", "data.prompts=['Add 1.']", "models.target.max_context=64", "decoding.max_new_tokens=80"])
    assert "leaves nothing of the budget of prompt + response" in _error(capsys, tiny_checkpoints + [
        "data.source=prompts", f"data.prompts=[{json.dumps(long)}]", "decoding.budget_includes_prompt=true"])


def test_nothing_written_is_lost_on_a_later_error(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    assert decode.main(tiny_checkpoints + ["data.n=2", "decoding.max_new_tokens=8", "--out", str(out), "--quiet"]) == 0
    before = (out / "results.jsonl").read_text()
    _error(capsys, tiny_checkpoints + ["data.source=prompts", "data.prompts=['bad ~ char']", "--out", str(out)])
    assert (out / "results.jsonl").read_text() == before


def test_print_config_round_trips(capsys):
    assert decode.main(["--print-config", "rsd.delta=0.8"]) == 0
    assert "delta: 0.8" in capsys.readouterr().out


