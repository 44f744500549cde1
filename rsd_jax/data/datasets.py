"""The paper's evaluation sets in their published JSONL formats, prompt templates, answer extraction, grading.

Sets: MATH500, GSM8K, GaoKao2023-En, OlympiadBench, Minerva Math (free-form, graded with math-verify) and
GPQA, MMLU-STEM (multiple choice, graded by letter). Files are read by path (`data.path`), never bundled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rsd_jax.config import DataConfig
from rsd_jax.data.problems import Item, path_of
from rsd_jax.errors import InputError

MULTIPLE_CHOICE = ("gpqa", "mmlu_stem")
QWEN25_MATH_COT = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
                   "<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
LETTERS = "ABCDE"


def format_prompt(question: str, template: str) -> str:
    """The draft's and target's prompt: "plain" (question + newline) or the paper's Qwen2.5-Math CoT template."""
    if template == "qwen25-math-cot":
        return QWEN25_MATH_COT.replace("{question}", question)
    return question + "\n"


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a malformed line is an error naming its number."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 (byte {e.start})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} line {number}: malformed JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path} line {number}: expected a JSON object")
        rows.append(row)
    if not rows:
        raise InputError(f"{path} has no problems")
    return rows


def last_boxed(text: str) -> str | None:
    """The content of the last brace-matched \\boxed{...} (or \\fbox{...}) in text."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def extract_answer(text: str, multiple_choice: bool = False) -> str | None:
    """The final answer of a response: the last \\boxed{}, else "The answer is X", else the last number
    (multiple choice: a letter A-E)."""
    boxed = last_boxed(text)
    said = re.findall(r"[Tt]he (?:final )?answer is[:\s]*(.+?)(?:\.\s|\.$|\n|$)", text)
    candidate = boxed if boxed is not None else (said[-1].strip() if said else None)
    if multiple_choice:
        for source in (candidate or "", text):
            letters = re.findall(r"\(?\b([A-E])\b\)?", source)
            if letters:
                return letters[-1] if source is text else letters[0]
        return None
    if candidate is not None:
        return candidate.strip().rstrip(".")
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return numbers[-1].replace(",", "") if numbers else None


def grade(response: str, reference: str, multiple_choice: bool = False) -> bool:
    """Is the response's final answer equal to the reference? (math-verify for free-form answers)."""
    predicted = extract_answer(response, multiple_choice)
    if predicted is None:
        return False
    if multiple_choice:
        return predicted.upper() == reference.strip().upper()
    if predicted.strip() == reference.strip():  # identical strings (also the two empty references of GaoKao)
        return True
    from math_verify import parse, verify

    try:
        gold = parse(f"${reference}$", parsing_timeout=3)
        pred = parse(f"${predicted}$", parsing_timeout=3)
        if verify(gold, pred, timeout_seconds=3):
            return True
        gold_b, pred_b = parse(f"\\boxed{{{reference}}}", parsing_timeout=3), parse(f"\\boxed{{{predicted}}}",
                                                                                  parsing_timeout=3)
        return bool(verify(gold_b, pred_b, timeout_seconds=3))
    except Exception:  # math-verify parses arbitrary LaTeX; any failure is a wrong answer
        return False


def _choices_question(row: dict) -> str:
    options = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(row["choices"]))
    return f"{row['question'].strip()}\nAnswer Choices: {options}"


def question_and_answer(source: str, row: dict) -> tuple[str, str]:
    """(question text, reference answer) of one row of a dataset in its published format."""
    try:
        if source == "math500":
            return row["problem"], row["answer"]
        if source == "gsm8k":
            return row["question"], row["answer"].split("####")[-1].strip().replace(",", "")
        if source == "gaokao2023en":
            return row["question"], row["answer"].strip().strip("$")
        if source == "olympiadbench":
            return row["question"], row["final_answer"][0].strip().strip("$")
        if source == "minerva_math":
            return row["problem"], last_boxed(row["solution"]) or ""
        if source in MULTIPLE_CHOICE:
            return _choices_question(row), LETTERS[int(row["answer"])]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise InputError(f"{source}: a row lacks the expected field ({e})") from None
    raise InputError(f"unknown dataset {source!r}")


def dataset_items(data: DataConfig, config_file: str | None) -> list[Item]:
    path = path_of(data, config_file)
    rows = read_jsonl(path)
    rows = rows[: data.n] if data.n else rows
    mc = data.source in MULTIPLE_CHOICE
    items = []
    for k, row in enumerate(rows):
        question, answer = question_and_answer(data.source, row)
        items.append(Item(uid=f"{data.source}-{row.get('unique_id', row.get('idx', row.get('id', k)))}",
                          question=question, prompt=format_prompt(question, data.template), answer=answer,
                          grade=lambda text, a=answer: grade(text, a, mc), level=row.get("level"),
                          extract=lambda text: extract_answer(text, mc)))
    return items
