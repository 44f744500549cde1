"""A self-scoring draft's training data and loss: one model with an LM head and a value head ("lm+value").

It reads the draft's own view (BOS + question + "\\n" + the solution, steps separated by the delimiter token, the
last step ending in EOS), which is what the RSD loop feeds it, and learns sigmoid(v_head(h)) = P(step correct) at
the last token of each step (its delimiter, or EOS for the final step): the reward it gives the step it has just
written (rsd_jax.decoding.rsd, Engine.self_scoring). The labelled solutions are the LMs' own samples and greedy
solutions, labelled by the exact checker (the same draws as the PRM's data, rsd_jax.training.prm_data); the LM loss
on the correct part of each solution (its steps before the first wrong one: the draft's own correct work) keeps it
a draft, in the same forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import jax
import numpy as np

from rsd_jax.data import arith
from rsd_jax.models.model import Model
from rsd_jax.training import prm
from rsd_jax.training.prm_data import continue_prefixes

if TYPE_CHECKING:
    from rsd_jax.tokenizer import Tokenizer


def draft_view_example(tok: "Tokenizer", problem: arith.Problem, text: str) -> tuple[list[int], list[int], list[float]]:
    """(draft-view tokens, the position of each step's last token, each step's label) of one solution: each step
    re-encoded from its text (as the PRM protocol does), the last one ending in EOS, the others in the delimiter."""
    steps = arith.split_steps(text)
    labels = arith.check_steps(problem, steps)
    tokens = [tok.bos_id] + tok.encode(arith.format_prompt(problem))
    positions = []
    for i, step in enumerate(steps):
        tokens += tok.encode(step) + [tok.eos_ids[0] if i == len(steps) - 1 else tok.delimiter_id]
        positions.append(len(tokens) - 1)
    return tokens, positions, [float(x) for x in labels]


def encode_draft_view(tok: "Tokenizer", problems: Sequence[arith.Problem], texts: Sequence[str],
                      length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tokens [N, length], label mask [N, length], labels [N, length] in the draft's view, and the LM loss's
    weights [N, length]: 1 at the solution's tokens up to the last token of the last step before the first wrong
    one (the model is taught only what a correct solution continues with). Longer examples and solutions with no
    step are dropped."""
    rows = [draft_view_example(tok, p, t) for p, t in zip(problems, texts)]
    rows = [(r, len(tok.encode(arith.format_prompt(p))) + 1) for r, p in zip(rows, problems)]
    rows = [(r, start) for r, start in rows if r[1] and len(r[0]) <= length]
    tokens = np.zeros((len(rows), length), np.int32)
    mask = np.zeros((len(rows), length), np.float32)
    labels = np.zeros((len(rows), length), np.float32)
    weights = np.zeros((len(rows), length), np.float32)
    for i, ((t, pos, lab), start) in enumerate(rows):
        tokens[i, :len(t)] = t
        mask[i, pos] = 1.0
        labels[i, pos] = lab
        correct = next((k for k, x in enumerate(lab) if x < 0.5), len(lab))  # steps before the first wrong one
        if correct:
            weights[i, start:pos[correct - 1] + 1] = 1.0
    return tokens, mask, labels, weights


def self_scoring_dataset(tok: "Tokenizer", problems: list[arith.Problem], lms: Sequence[Model], *, seed: int,
                         temperature: float, copies: int, greedy: bool, sequence_length: int):
    """Draft-view (tokens, mask, labels, lm weights) of `copies` sampled solutions per problem and LM, plus each LM's greedy
    one when `greedy` (the same draws as rsd_jax.training.prm_data.prm_dataset with no prefix cuts)."""
    rows_p, rows_t = [], []
    for k, model in enumerate(lms):
        for c, temp in enumerate([temperature] * copies + [0.0] * greedy):
            rows_t += continue_prefixes(model, tok, problems, [0] * len(problems), temperature=temp,
                                        seed=seed + 97 * k + c)
            rows_p += problems
    return encode_draft_view(tok, rows_p, rows_t, sequence_length)


def self_scoring_loss(model: Model, batch, lm_weight: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The value head's binary cross-entropy at the labelled step ends plus lm_weight times the next-token loss on
    the correct part of each solution, from one forward; batch: (tokens, mask, labels, lm weights) [B, T] each
    (`encode_draft_view`)."""
    return prm.prm_loss(model, batch, lm_weight=lm_weight)


def value_auroc(model: Model, tok: "Tokenizer", problems: list[arith.Problem], texts: Sequence[str],
                sequence_length: int) -> tuple[float, float]:
    """(AUROC of the model's own rewards on the steps of `texts` in the draft's view, share of correct steps)."""
    tokens, mask, labels, _ = encode_draft_view(tok, problems, texts, sequence_length)
    steps = labels[mask > 0]
    return prm.auroc(prm.score_examples(model, tokens, mask), steps), float(steps.mean()) if steps.size else 0.0
