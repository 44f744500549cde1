"""The paper's evaluation sets in their published JSONL formats, prompt templates, answer extraction, grading.

Sets: MATH500, GSM8K, GaoKao2023-En, OlympiadBench, Minerva Math, College Math (free-form, graded with
math-verify), GPQA, MMLU-STEM (multiple choice, graded by letter) and CN Middle School 24 (a letter where the row has
a `choice_answer`, else free-form). Where a set's file comes from (data.path, RSD_DATA_DIR, the shipped copy, the
cache, a download) is rsd_jax.data.sources' concern; this module reads its format. A file of any other name is read
in one of these formats (`data.format`), or the one its rows' fields show (`detect_format`).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from rsd_jax.data import sources
from rsd_jax.data.item import Item, ProblemSource
from rsd_jax.data.templates import format_prompt
from rsd_jax.errors import InputError
from rsd_jax.paths import resolve_path

MULTIPLE_CHOICE = ("gpqa", "mmlu_stem")
LETTERS = "ABCDE"
#: the formats a set's file may have: each known set's own (data.format names one; "auto" detects it)
FORMATS = sources.NAMES
#: (fields a row must have, a test on the row, the format): the first that fits names a file's format
_SIGNATURES = (
    (("question", "choice_answer"), None, "cn_middle_school"),
    (("question", "choices", "answer"), None, "mmlu_stem"),
    (("question", "final_answer"), None, "olympiadbench"),
    (("question", "answer"), lambda row: "####" in str(row["answer"]), "gsm8k"),
    (("question", "answer"), None, "college_math"),
    (("problem", "answer"), None, "math500"),
    (("problem", "solution"), None, "minerva_math"),
)


def parse_jsonl(raw: bytes, where: str) -> list[dict]:
    """Rows of JSONL bytes read from `where` (named in errors); a malformed line is an error naming its number."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{where} is not UTF-8 (byte {e.start})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where} line {number}: malformed JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where} line {number}: expected a JSON object")
        rows.append(row)
    if not rows:
        raise InputError(f"{where} has no problems")
    return rows


def dataset_rows(source: str, path: Path | None = None) -> list[dict]:
    """Every row of a paper dataset in its published format: from path when given, else found by name
    (RSD_DATA_DIR, the shipped copy, the cache or a download; rsd_jax.data.sources)."""
    return parse_jsonl(*sources.dataset_bytes(source, path))


def detect_format(rows: list[dict], where: str) -> str:
    """The known format (a set's name) whose fields the first row has; none: an InputError naming the fields."""
    row = rows[0]
    for fields, test, name in _SIGNATURES:
        if all(f in row for f in fields) and (test is None or test(row)):
            return name
    raise InputError(f"{where}: cannot tell the format from the fields {sorted(row)}; set data.format to one of "
                     f"{', '.join(FORMATS)} (the known sets' formats)")


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
        return strip_math(candidate)
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return numbers[-1].replace(",", "") if numbers else None


def strip_math(text: str) -> str:
    """An answer without its math delimiters ($, not an escaped \\$), surrounding spaces or a final period."""
    return re.sub(r"(?<!\\)\$", "", text).strip().rstrip(".").strip()


def equivalent(reference: str, predicted: str, timeout: int | None = 3) -> bool:
    """math-verify's judgement (symbolic, numeric, sets, intervals) of two LaTeX answers; an error or a timeout is
    "not equal" (the timeout is 3 s per call in the main thread, none elsewhere). The answers are tried as inline math
    and as \\boxed{}; verify(gold, prediction) is asymmetric."""
    from math_verify import parse, verify

    if threading.current_thread() is not threading.main_thread():
        timeout = None  # math-verify times out with SIGALRM, which only the main thread may set
    try:
        for wrap in ("${}$", "\\boxed{{{}}}"):
            gold = parse(wrap.format(reference), parsing_timeout=timeout)
            pred = parse(wrap.format(predicted), parsing_timeout=timeout)
            if gold and pred and verify(gold, pred, timeout_seconds=timeout):
                return True
    except Exception:  # math-verify parses arbitrary LaTeX; any failure is a wrong answer
        return False
    return False


def grade(response: str, reference: str, multiple_choice: bool = False) -> bool:
    """Is the response's final answer equal to the reference? Multiple choice compares letters; free-form answers
    are equal as strings (after stripping delimiters, as the Qwen harness checks first) or by math-verify."""
    predicted = extract_answer(response, multiple_choice)
    if predicted is None:
        return False
    if multiple_choice:
        return predicted.upper() == reference.strip().upper()
    if strip_math(predicted) == strip_math(reference):  # identical strings (also the two empty GaoKao references)
        return True
    return equivalent(strip_math(reference), strip_math(predicted))


def _choices_question(row: dict) -> str:
    options = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(row["choices"]))
    return f"{row['question'].strip()}\nAnswer Choices: {options}"


def is_multiple_choice(fmt: str, row: dict) -> bool:
    """Is a row of format `fmt` answered by a letter? GPQA and MMLU-STEM always; CN Middle School where the row
    has a choice_answer (as the official harness's parse_ground_truth reads it)."""
    return fmt in MULTIPLE_CHOICE or (fmt == "cn_middle_school" and bool(str(row.get("choice_answer") or "").strip()))


def question_and_answer(source: str, row: dict) -> tuple[str, str]:
    """(question text, reference answer) of one row of a dataset in its published format `source` (a set's name)."""
    try:
        if source == "cn_middle_school":
            letter = str(row.get("choice_answer") or "").strip()
            return row["question"], letter.upper() if letter else strip_math(str(row["answer"]))
        if source == "college_math":
            return row["question"], str(row["answer"]).replace("$", "").strip()
        if source == "math500":
            return row["problem"], row["answer"].strip()
        if source == "gsm8k":
            return row["question"], row["answer"].split("####")[-1].strip().replace(",", "")
        if source == "gaokao2023en":
            return row["question"], strip_math(row["answer"])
        if source == "olympiadbench":
            return row["question"], strip_math(row["final_answer"][0])
        if source == "minerva_math":
            return row["problem"], (last_boxed(row["solution"]) or "").strip()
        if source in MULTIPLE_CHOICE:
            return _choices_question(row), LETTERS[int(row["answer"])]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise InputError(f"{source}: a row lacks the expected field ({e})") from None
    raise InputError(f"unknown dataset format {source!r}; known formats: {', '.join(FORMATS)}")


def set_rows(data: ProblemSource, config_file: str | None) -> tuple[list[dict], str]:
    """(the rows of data's set, their format): data.path (relative to the config file; any set name) when set,
    else the known set data.source; the format is data.format, else the known set's, else detected."""
    if data.path:
        path = resolve_path(data.path, config_file)
        raw, where = sources.read_file(path), str(path)
    else:
        raw, where = sources.dataset_bytes(data.source)
    rows = parse_jsonl(raw, where)
    fmt = getattr(data, "format", "auto")
    if fmt == "auto":
        fmt = data.source if data.source in FORMATS else detect_format(rows, where)
    elif fmt not in FORMATS:
        raise InputError(f"data.format must be auto or one of {', '.join(FORMATS)}; got {fmt!r}")
    return rows, fmt


def dataset_items(data: ProblemSource, config_file: str | None, tokenizer=None) -> list[Item]:
    """The problems of an evaluation set (see set_rows), prompts in data.template (the chat template reads
    `tokenizer`'s). Each Item keeps its row and the row's `idx` (its position when the file has none), as the
    official harness numbers problems."""
    rows, fmt = set_rows(data, config_file)
    rows = rows[: data.n] if data.n else rows
    items = []
    for k, row in enumerate(rows):
        question, answer = question_and_answer(fmt, row)
        mc = is_multiple_choice(fmt, row)
        idx = row.get("idx", k)
        items.append(Item(uid=f"{data.source}-{row.get('unique_id', row.get('idx', row.get('id', k)))}",
                          question=question, prompt=format_prompt(question, data.template, tokenizer), answer=answer,
                          grade=lambda text, a=answer, mc=mc: grade(text, a, mc), level=row.get("level"),
                          extract=lambda text, mc=mc: extract_answer(text, mc), idx=idx, row=row))
    return items
