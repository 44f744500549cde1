"""How well a trained model does on held-out problems: an LM's greedy accuracy, a PRM's step AUROCs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from rsd_jax.data import arith
from rsd_jax.models.model import Model
from rsd_jax.training import prm
from rsd_jax.training.prm_data import Labelling, continue_prefixes, prm_dataset, reference_cuts

if TYPE_CHECKING:
    from rsd_jax.tokenizer import Tokenizer

LM_NAMES = ("draft", "target", "lm2", "lm3")  # how the metrics name the PRM's source LMs, in order


def lm_accuracy(model: Model, tok: "Tokenizer", problems: list[arith.Problem]) -> dict[str, float]:
    """Greedy accuracy overall and per level, and the share of correct steps by kind (each step judged given
    the previous ones): easy "+"/"-" steps, hard "*" steps, answer steps."""
    texts = prm.sample_solutions(model, tok, problems, temperature=0.0, seed=0)
    right = np.array([arith.is_correct(p, t) for p, t in zip(problems, texts)])
    levels = np.array([p.level for p in problems])
    by_kind: dict[str, list[bool]] = {"add_sub": [], "multiply": [], "answer": []}
    for p, t in zip(problems, texts):
        for i, ok in enumerate(arith.check_steps(p, arith.split_steps(t))):
            kind = "answer" if i >= p.level else "multiply" if p.operations[i][0] == "*" else "add_sub"
            by_kind[kind].append(ok)
    return {"accuracy": float(right.mean()),
            **{f"accuracy_level_{L}": float(right[levels == L].mean()) for L in sorted(set(levels.tolist()))},
            **{f"step_accuracy_{k}": float(np.mean(v)) for k, v in by_kind.items() if v}}


def prm_metrics(model: Model, tok: "Tokenizer", lms: Sequence[Model], problems: list[arith.Problem], *, seed: int,
                temperature: float, sequence_length: int) -> dict[str, float]:
    """Per source LM (named by LM_NAMES): the PRM's step AUROC and the share of correct steps on its greedy and
    sampled solutions, and the AUROC on its greedy continuations of reference prefixes (RSD's states after a
    target step)."""
    metrics = {}
    for name, lm in zip(LM_NAMES, lms):
        for label, temp in (("greedy", 0.0), ("sampled", temperature)):
            labelling = Labelling(copies=1, temperature=temp)
            tokens, mask, labels = prm_dataset(tok, problems, [lm], labelling, seed=seed,
                                               sequence_length=sequence_length)
            steps = labels[mask > 0]
            metrics[f"auroc_{name}_{label}"] = prm.auroc(prm.score_examples(model, tokens, mask), steps)
            metrics[f"step_accuracy_{name}_{label}"] = float(steps.mean()) if steps.size else float("nan")
        cuts = reference_cuts(problems, seed, 1)
        texts = continue_prefixes(lm, tok, problems, cuts, temperature=0.0, seed=0)
        tokens, mask, labels = prm.encode_prm_examples(tok, problems, texts, sequence_length, cuts)
        metrics[f"auroc_{name}_continued"] = prm.auroc(prm.score_examples(model, tokens, mask), labels[mask > 0])
    return metrics
