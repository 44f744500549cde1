"""One problem as every source gives it (`Item`), and what the data layer reads of a run's `data` section.

`ProblemSource` names the fields the loaders read (rsd_jax.config.DataConfig has them): the data layer states what it
needs and the config schema, a layer above, provides it, so that no loader imports the schema.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol


@dataclasses.dataclass(frozen=True)
class Item:
    uid: str
    question: str  # the raw question (what the PRM reads)
    prompt: str  # what the draft and the target read
    answer: str | None = None  # the reference answer, when known
    grade: Callable[[str], bool] | None = dataclasses.field(default=None, compare=False)  # response -> correct?
    level: int | str | None = None
    extract: Callable[[str], object] | None = dataclasses.field(default=None, compare=False)  # response -> answer
    idx: int | None = None  # the problem's number in its set, as the official harness writes it (an evaluation set)
    row: dict | None = dataclasses.field(default=None, compare=False, repr=False)  # its row in the set's file


class ProblemSource(Protocol):
    """Which problems a run decodes and how they are prompted (the fields of rsd_jax.config.DataConfig)."""

    source: str  # "arith", a paper dataset's name (rsd_jax.data.sources.NAMES), "prompts", or any name with path
    path: str | None  # an evaluation set's JSONL file; None: a known set found by name
    format: str  # the file's format: a known set's name, or "auto" (the known set's own, else detected)
    prompts: tuple[str, ...]  # source "prompts": the questions
    prompts_file: str | None  # source "prompts": a file of questions, one a line ("-": standard input)
    n: int | None  # only the first n problems
    seed: int  # arith: the seed of the problems
    levels: tuple[int, ...]  # arith: operations per problem
    template: str  # the draft's and target's prompt (rsd_jax.data.templates.TEMPLATES)
