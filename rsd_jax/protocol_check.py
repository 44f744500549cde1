"""How often the PRM's view of a generated step differs from what the official code feeds the PRM, on the paper's
evaluation sets: `python -m rsd_jax.protocol_check [--sets math500 gsm8k ...]`.

Every reference solution (and every question) is taken as a model would generate it: its text, each step ending in
"\\n\\n", encoded with the Qwen2.5 tokenizer and cut after each step-stop token, as the loop cuts steps. For every
step, three id sequences are compared:
- official: the step's text cut at "\\n\\n", encoded on its own, then the "\\n\\n" token (Skywork's prepare_input);
- tables: the in-graph view (the step's ids but the last, the last token's text part, the delimiter);
- text: what `PRMTextView` gives inside a jitted computation (the view the loop uses for BPE tokenizers).
Sets that are not available (not shipped, not cached, RSD_DATA_DIR unset) are listed as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.data.sources import NAMES
from rsd_jax.decoding.prm_view import PRMTables, PRMTextView
from rsd_jax.errors import RSDError
from rsd_jax.qwen_vocabulary import qwen_tokenizer
from rsd_jax.tokenizer import DELIMITER, StepTextEncoder, Tokenizer, build_prm_stop_table, step_stop_ids

TEXT_FIELDS = {"math500": "solution", "minerva_math": "solution", "gsm8k": "answer", "olympiadbench": "solution"}


@dataclasses.dataclass(frozen=True)
class Counts:
    steps: int = 0
    tables_differ: int = 0
    text_differ: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def generated_steps(tok: Tokenizer, text: str) -> list[list[int]]:
    """A text's steps as a model generates them: the text (each step closed by the delimiter) encoded as one
    sequence and cut after each step-stop token."""
    stops = set(step_stop_ids(tok))
    steps, current = [], []
    for token in tok.encode(text.rstrip("\n") + DELIMITER):
        current.append(token)
        if token in stops:
            steps.append(current)
            current = []
    return steps + ([current] if current else [])


def compare(tok: Tokenizer, texts: list[str], width: int = 2048) -> Counts:
    """Counts of steps whose in-graph and text views differ from the official ids."""
    encoder = StepTextEncoder(tok, tok)
    table = build_prm_stop_table(tok)
    tables = PRMTables.build(tok.vocab_size, table.stop_ids, table.text_ids, table.text_len, table.delimiter_id,
                             tok.eos_ids)
    steps = [s for text in texts for s in generated_steps(tok, text) if len(s) <= width - 8]
    official = [encoder.step_ids(s) for s in steps]
    counts = Counts()
    for start in range(0, len(steps), 256):
        batch = steps[start:start + 256]
        m = max(map(len, batch))
        ids = np.zeros((len(batch), m), np.int32)
        for i, s in enumerate(batch):
            ids[i, :len(s)] = s
        lengths = jnp.asarray([len(s) for s in batch], jnp.int32)
        views = {name: jax.device_get(jax.jit(lambda v, t, n: v(t, n)[:2])(view, jnp.asarray(ids), lengths))
                 for name, view in (("tables", tables), ("text", PRMTextView(encode=encoder, width=width)))}
        differ = {name: sum(list(v[0][i, :v[1][i]]) != official[start + i] for i in range(len(batch)))
                  for name, v in views.items()}
        counts += Counts(len(batch), differ["tables"], differ["text"])
    return counts


def texts_of(name: str) -> tuple[list[str], list[str]] | None:
    """(reference solutions, questions) of a set, or None when the set is not available here."""
    from rsd_jax.data.datasets import dataset_rows, question_and_answer

    try:
        rows = dataset_rows(name)
    except RSDError:
        return None
    field = TEXT_FIELDS.get(name)
    solutions = []
    if field is not None:
        for row in rows:
            value = row[field]
            solutions += value if isinstance(value, list) else [value]
    return solutions, [question_and_answer(name, row)[0] for row in rows]


def report(names: list[str]) -> str:
    tok = qwen_tokenizer()
    lines = ["| set | text | steps | in-graph tables differ | text view differs |", "|---|---|---|---|---|"]
    total = Counts()
    for name in names:
        texts = texts_of(name)
        if texts is None:
            lines.append(f"| {name} | not available here (set RSD_DATA_DIR) | | | |")
            continue
        for kind, group in zip(("solutions", "questions"), texts):
            if not group:
                lines.append(f"| {name} | {kind}: none in the set | | | |")
                continue
            c = compare(tok, group)
            total += c if kind == "solutions" else Counts()
            lines.append(f"| {name} | {kind} | {c.steps} | {c.tables_differ} ({100 * c.tables_differ / c.steps:.1f}%)"
                         f" | {c.text_differ} ({100 * c.text_differ / c.steps:.1f}%) |")
    if total.steps:
        lines.append(f"| all | solutions | {total.steps} | {total.tables_differ} "
                     f"({100 * total.tables_differ / total.steps:.1f}%) | {total.text_differ} "
                     f"({100 * total.text_differ / total.steps:.1f}%) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.protocol_check", description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(NAMES), choices=NAMES, help="evaluation sets")
    args = parser.parse_args(argv)
    print(report(args.sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
