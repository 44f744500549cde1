"""The shipped paper config, with only its model paths changed, on folders laid out as the hub's snapshots (their
config.json with max_position_embeddings 4096, the real Qwen2.5 tokenizer files, sharded bfloat16 safetensors, a
Skywork PRM whose tokenizer has a BOS): RSD rejecting every step is transformers' greedy target on the
Qwen2.5-Math CoT prompt, accepting every step the draft's, and every step reward is the official protocol's
(Skywork's prepare_input and v_head.summary, run by transformers), on steps that end in merged tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

import paper_models
from rsd_jax import decode
from rsd_jax.data.datasets import dataset_rows
from rsd_jax.data.templates import QWEN25_MATH_COT
from rsd_jax.qwen_vocabulary import qwen_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "paper" / "qwen25_math_1.5b_7b_skywork1.5b.yaml")
NEW_TOKENS = 40


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    tok = qwen_tokenizer()
    draft = paper_models.cycle_lm("Qwen2.5-Math-1.5B-Instruct", root / "draft", paper_models.DRAFT_CYCLE, tok)
    target = paper_models.cycle_lm("Qwen2.5-Math-7B-Instruct", root / "target", paper_models.TARGET_CYCLE, tok)
    prm = paper_models.skywork_prm(root / "prm")
    question = dataset_rows("math500")[0]["problem"]
    return {"draft": draft, "target": target, "prm": prm}, question


def run_decode(folders, out: Path, delta: float) -> dict:
    paths, question = folders
    prompt = qwen_tokenizer().encode(QWEN25_MATH_COT.replace("{question}", question))
    budget = len(prompt) + NEW_TOKENS  # the config counts the prompt in its budget, as the official code does
    # patience off: the official cut-off would end this one-row batch after 5 steps (tests/test_official_defaults.py)
    args = ["--config", CONFIG, *(f"models.{k}.path={v}" for k, v in paths.items()), "data.n=1",
            f"decoding.max_new_tokens={budget}", f"rsd.delta={delta}", "decoding.patience=0", "--out", str(out),
            "--quiet"]
    assert decode.main(args) == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["prompt"] == QWEN25_MATH_COT.replace("{question}", question)
    return record


def hf_greedy(folder: Path, question: str) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    ids = qwen_tokenizer().encode(QWEN25_MATH_COT.replace("{question}", question))
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=[151645, 151643], pad_token_id=151643)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("delta, role", [(2.0, "target"), (0.0, "draft")])
def test_rsd_is_the_greedy_model_of_every_step(folders, tmp_path, delta, role):
    record = run_decode(folders, tmp_path / role, delta)
    assert record["token_ids"] == hf_greedy(folders[0][role], folders[1])
    assert {s["source"] for s in record["steps"]} == {role}
    assert "<|im_end|>" not in record["text"]  # the EOS ends the draft's answer; the text carries no special token
    if role == "target":
        assert len(record["token_ids"]) == NEW_TOKENS  # the budget, counting the prompt, ends it


def official_rewards(prm_folder: Path, question: str, steps: list[str]) -> list[float]:
    """Skywork's protocol: encode(bos_token + question + "\\n"), then each step's text alone and the "\\n\\n"
    token, the reward sigmoid(v_head.summary(h)) at each of those tokens; transformers runs the backbone."""
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(prm_folder / "tokenizer.json"),
                                               bos_token="<|endoftext|>")
    step_token = tok.encode("\n\n", add_special_tokens=False)[-1]
    ids = tok.encode(tok.bos_token + question + "\n", add_special_tokens=False)
    flags = []
    for step in steps:
        ids += tok.encode(step, add_special_tokens=False) + [step_token]
        flags.append(len(ids) - 1)
    backbone = transformers.Qwen2Model.from_pretrained(prm_folder, dtype=torch.bfloat16).eval()
    tensors = {k: v for shard in prm_folder.glob("model-*.safetensors") for k, v in load_file(str(shard)).items()}
    v_head = torch.nn.Linear(backbone.config.hidden_size, 1, dtype=torch.bfloat16)
    v_head.weight.data, v_head.bias.data = tensors["v_head.summary.weight"], tensors["v_head.summary.bias"]
    with torch.no_grad():
        hidden = backbone(torch.tensor([ids])).last_hidden_state
        rewards = torch.sigmoid(v_head(hidden)[0, :, 0].float())
    return rewards[flags].tolist()


def test_step_rewards_are_the_official_protocols(folders, tmp_path):
    paths, question = folders
    record = run_decode(folders, tmp_path / "draft", 0.0)  # every draft step kept: each reward is of a kept step
    steps = [s["text"].split("\n\n")[0] for s in record["steps"]]
    assert steps[0] == "We have $x$." and record["steps"][0]["text"].endswith("$.\n\n")  # "$" + ".\n\n" generated
    assert len(steps) == 3  # "...$.", "...:", and the answer ended by EOS
    ours = [s["reward"] for s in record["steps"]]
    np.testing.assert_allclose(ours, official_rewards(paths["prm"], question, steps), atol=2e-3)


def test_the_chat_template_is_rendered_as_transformers_renders_it(tmp_path):
    from rsd_jax.data.templates import format_prompt
    from rsd_jax.hub_layout import write_tokenizer
    from rsd_jax.hf_tokenizer import HFTokenizer

    write_tokenizer(tmp_path)
    ours = HFTokenizer.from_folder(tmp_path)
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                                  chat_template=ours.chat_template)
    question = dataset_rows("math500")[3]["problem"]
    expected = theirs.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                          add_generation_prompt=True)
    assert format_prompt(question, "chat", ours) == expected == QWEN25_MATH_COT.replace("{question}", question)
