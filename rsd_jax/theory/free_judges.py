"""Which judge of the draft's own steps comes free, against the separate PRM (the embedded task only).

RSD's PRM pass is the part of its cost a self-scoring draft removes; the question is whether a judge that costs
nothing judges as well. On the draft's greedy solutions (RSD at δ = 0 keeps every draft step and records the
separate PRM's reward of each), up to and including each solution's first wrong step (the states RSD's judge is
asked about, as in `checker.prm_errors`), every step is scored by

- the separate PRM: its reward in the records (a PRM pass over every token);
- the draft's confidence: the probability of the least likely token it wrote in the step, its delimiter or EOS
  included, exp(min log p). The draft computes these logits to write the step, so this judge is free;
- the draft's value head, when the draft is a self-scoring one (`lm+value`): sigmoid(v_head) at the step's last
  token (`rsd_jax.training.self_scoring`; one draft token per step in the loop).

Each judge gets its step AUROC against the exact checker's labels, with a bootstrap interval over problems
(`rsd_jax.theory.bootstrap`), and, at the threshold that keeps a given share of the correct steps, the share of
the wrong steps it keeps: RSD's operating points are where few correct steps are rejected, and there the judges
part most.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.data import arith
from rsd_jax.models.model import Model, full_forward
from rsd_jax.theory import bootstrap
from rsd_jax.training.prm import auroc
from rsd_jax.training.self_scoring import draft_view_example

if TYPE_CHECKING:
    from rsd_jax.tokenizer import Tokenizer

PRM, CONFIDENCE, VALUE_HEAD = "separate PRM", "draft's confidence (free)", "draft's value head (free)"


@dataclasses.dataclass(frozen=True)
class JudgedSteps:
    """The steps judged, flattened in problem order: problem [S] (its index), correct [S], and each judge's
    score [S] by name."""

    problem: np.ndarray
    correct: np.ndarray
    scores: dict[str, np.ndarray]


def step_confidences(draft: Model, tokens: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(log p of each token under the draft given the tokens before it [N, T] (0 at position 0), the value head's
    reward at each position [N, T] (NaN without a value head)) of draft-view sequences tokens [N, T] (padded)."""

    @jax.jit
    def score(toks):
        logits, hidden = full_forward(draft, toks)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1)[:, :-1], toks[:, 1:, None], -1)[..., 0]
        logp = jnp.pad(logp, ((0, 0), (1, 0)))
        values = draft.rewards(hidden) if draft.config.has_value_head else jnp.full(toks.shape, jnp.nan)
        return logp, values

    logps, values = [], []
    for s in range(0, len(tokens), batch_size):
        chunk = tokens[s:s + batch_size]
        pad = batch_size - len(chunk)  # one shape, one compilation
        lp, v = score(jnp.asarray(np.pad(chunk, ((0, pad), (0, 0)))))
        logps.append(np.asarray(lp)[:len(chunk)]), values.append(np.asarray(v)[:len(chunk)])
    return np.concatenate(logps), np.concatenate(values)


def judge_steps(draft: Model, tok: "Tokenizer", problems: Sequence[arith.Problem], records: Sequence[dict],
                ) -> JudgedSteps:
    """Every judge's score of each draft step of `records` (RSD's records at δ = 0, one per problem) up to and
    including the solution's first wrong step."""
    rows, prm_rewards = [], []
    for p, r in zip(problems, records):
        steps = [s["text"].strip() for s in r["steps"]]
        tokens, ends, labels = draft_view_example(tok, p, arith.DELIMITER.join(steps))
        first_wrong = next((k for k, x in enumerate(labels) if x < 0.5), len(labels) - 1)
        rows.append((tokens, ends[:first_wrong + 1], labels[:first_wrong + 1]))
        prm_rewards.append([float(s["reward"]) for s in r["steps"][:first_wrong + 1]])
    length = -(-max(len(t) for t, _, _ in rows) // 32) * 32  # the longest solution, in steps of 32 (few shapes)
    padded = np.zeros((len(rows), length), np.int32)
    for i, (tokens, _, _) in enumerate(rows):
        padded[i, :len(tokens)] = tokens
    logp, values = step_confidences(draft, padded)
    problem, correct, confidence, value = [], [], [], []
    for i, (tokens, ends, labels) in enumerate(rows):
        start = len(tok.encode(arith.format_prompt(problems[i]))) + 1  # the first step's first token
        for end, label in zip(ends, labels):
            problem.append(i), correct.append(label > 0.5)
            confidence.append(float(np.exp(logp[i, start:end + 1].min())))
            value.append(float(values[i, end]))
            start = end + 1
    scores = {PRM: np.concatenate([np.asarray(x, np.float64) for x in prm_rewards]),
              CONFIDENCE: np.asarray(confidence)}
    if draft.config.has_value_head:
        scores[VALUE_HEAD] = np.asarray(value)
    if len(scores[PRM]) != len(problem):
        raise ValueError(f"the records hold {len(scores[PRM])} PRM rewards for {len(problem)} steps re-read from "
                         "their text: a step's text does not re-encode to the step the draft wrote")
    return JudgedSteps(np.asarray(problem), np.asarray(correct), scores)


def wrong_kept(scores: np.ndarray, correct: np.ndarray, keep: float) -> float:
    """The share of the wrong steps a judge keeps at the threshold that keeps `keep` of the correct ones."""
    threshold = np.quantile(scores[correct], 1.0 - keep)
    return float(np.mean(scores[~correct] >= threshold))


def compare(judged: JudgedSteps, keeps: Sequence[float]) -> dict:
    """Per judge: its step AUROC with a bootstrap interval over problems, and the wrong steps it keeps at each
    share of correct steps kept."""
    n = int(judged.problem.max()) + 1 if len(judged.problem) else 0
    by_problem = [np.nonzero(judged.problem == i)[0] for i in range(n)]

    def auroc_of(scores):
        return lambda idx: auroc(scores[np.concatenate([by_problem[i] for i in idx])],
                                 judged.correct[np.concatenate([by_problem[i] for i in idx])])

    rows = []
    for name, scores in judged.scores.items():
        estimate = bootstrap.statistic(auroc_of(scores), n, resamples=500)
        rows.append({"judge": name, "auroc": estimate.as_dict(),
                     "wrong_kept": {f"{k:g}": wrong_kept(scores, judged.correct, k) for k in keeps}})
    return {"n_problems": n, "n_steps": int(len(judged.correct)), "n_wrong": int((~judged.correct).sum()),
            "judges": rows}
