"""The paper's datasets read from ../shared/data: grading against reality, templates, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsd_jax.config import DataConfig
from rsd_jax.data.datasets import QWEN25_MATH_COT, dataset_items, format_prompt, grade, last_boxed
from rsd_jax.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("math500", "gsm8k", "gaokao2023en", "olympiadbench", "minerva_math", "gpqa", "mmlu_stem")


def items(source: str, n: int | None = None):
    return dataset_items(DataConfig(source=source, path=str(DATA / f"{source}.jsonl"), n=n), None)


@pytest.mark.parametrize("source", SETS)
def test_reference_answers_score_100_percent(source):
    # every row; the two large sets (GSM8K 1319 integers, MMLU-STEM 3018 letters) are cheap to grade
    rows = items(source)
    wrong = [i.uid for i in rows if not i.grade(f"The answer is \\boxed{{{i.answer}}}.")]
    assert not wrong, wrong[:5]


def test_math500_solutions_grade_at_least_99_percent():
    import json

    rows = [json.loads(line) for line in (DATA / "math500.jsonl").read_text().splitlines()]
    right = sum(grade(r["solution"], r["answer"]) for r in rows)
    assert right / len(rows) >= 0.99, right


@pytest.mark.parametrize("source", SETS)
def test_wrong_answers_are_rejected(source):
    rows = [i for i in items(source, 60) if i.answer][:50]
    for i in rows:
        if source in ("gpqa", "mmlu_stem"):
            wrongs = ["ABCD"[("ABCD".index(i.answer) + 1) % 4]]
        else:
            wrongs = ["-987654321"]
            try:
                wrongs.append(str(float(i.answer) + 1))  # a numeric reference plus one
            except ValueError:
                pass
        for wrong in wrongs:
            assert not i.grade(f"The answer is \\boxed{{{wrong}}}."), (i.uid, i.answer, wrong)


def test_templates_and_extraction():
    assert format_prompt("What is 1+1?", "qwen25-math-cot") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
    assert QWEN25_MATH_COT.count("{question}") == 1
    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}}") == "x^{2}"
    assert grade("so the answer is 42.", "42") and grade("... 3, 5, 8", "8") and not grade("no digits", "8")
    assert grade("The answer is (C)", "C", multiple_choice=True)


def test_bad_files(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"problem": "x", "answer": "1"}\n{not json}\n')
    with pytest.raises(InputError, match="line 2"):
        dataset_items(DataConfig(source="math500", path=str(bad)), None)
    bad.write_text("")
    with pytest.raises(InputError, match="no problems"):
        dataset_items(DataConfig(source="math500", path=str(bad)), None)
    bad.write_bytes(b'{"problem": "\xff"}\n')
    with pytest.raises(InputError, match="not UTF-8"):
        dataset_items(DataConfig(source="math500", path=str(bad)), None)
    with pytest.raises(InputError, match="not found"):
        dataset_items(DataConfig(source="math500", path=str(tmp_path / "none.jsonl")), None)
