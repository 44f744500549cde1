"""The problems a run decodes, from any source (the embedded task, a paper dataset, prompts), as `Item`s: what the
models read, and how an answer is graded."""

from __future__ import annotations

import sys

from rsd_jax.data import arith
from rsd_jax.data.datasets import dataset_items
from rsd_jax.data.item import Item, ProblemSource
from rsd_jax.data.templates import format_prompt
from rsd_jax.errors import InputError
from rsd_jax.paths import resolve_path


def arith_items(data: ProblemSource, tokenizer=None) -> list[Item]:
    problems = arith.generate_problems(data.n or 500, data.seed, data.levels)
    return [Item(uid=p.uid, question=p.question, prompt=format_prompt(p.question, data.template, tokenizer),
                 answer=str(p.answer),
                 grade=lambda text, p=p: arith.is_correct(p, text), level=p.level, extract=arith.extract_answer)
            for p in problems]


def prompt_items(data: ProblemSource, config_file: str | None, tokenizer=None) -> list[Item]:
    lines = list(data.prompts)
    if data.prompts_file:
        if data.prompts_file == "-":
            raw = sys.stdin.buffer.read()
            where = "standard input"
        else:
            path = resolve_path(data.prompts_file, config_file)
            if not path.is_file():
                raise InputError(f"prompts file not found: {path}")
            raw, where = path.read_bytes(), str(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{where} is not UTF-8 (byte {e.start})") from None
        lines += [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("no prompts: set data.prompts or data.prompts_file")
    lines = lines[: data.n] if data.n else lines
    return [Item(uid=f"prompt-{i}", question=q, prompt=format_prompt(q, data.template, tokenizer))
            for i, q in enumerate(lines)]


def load_items(data: ProblemSource, config_file: str | None = None, tokenizer=None) -> list[Item]:
    """The problems a run decodes, from data.source, each prompt in data.template (whatever the source; the chat
    template is `tokenizer`'s, the draft's)."""
    if data.source == "arith":
        items = arith_items(data, tokenizer)
    elif data.source == "prompts":
        items = prompt_items(data, config_file, tokenizer)
    else:
        items = dataset_items(data, config_file, tokenizer)
    if not items:
        raise InputError(f"the dataset {data.source!r} has no problems")
    return items
