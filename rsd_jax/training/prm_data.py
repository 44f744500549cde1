"""The PRM's training set: the LMs' own solutions, each step labelled by the embedded task's exact checker.

Solutions are sampled from each LM (and its greedy one), from the question or continuing a prefix of the reference
solution (the states RSD reaches once the target has written a step; only the LM's own steps are labelled), plus
reference solutions cut after one near-miss wrong step (hard negatives). Every draw is seeded, so the same settings
give the same arrays (rsd_jax.training.prm encodes them).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rsd_jax.data import arith
from rsd_jax.models.model import Model
from rsd_jax.training import prm

if TYPE_CHECKING:
    from rsd_jax.tokenizer import Tokenizer


def reference_cuts(problems: list[arith.Problem], seed: int, cut: int) -> list[int]:
    """How many reference steps each problem's solution starts from: none for cut 0 (the whole solution is the
    LM's own), otherwise k uniform in 1..level, drawn from (seed, cut)."""
    if cut == 0:
        return [0] * len(problems)
    return [1 + int(r) for r in np.random.default_rng([seed, cut]).integers(0, [p.level for p in problems])]


def continue_prefixes(model: Model, tok: "Tokenizer", problems: list[arith.Problem], ks: list[int], *,
                      temperature: float, seed: int) -> list[str]:
    """Each problem's first k reference steps followed by the LM's continuation (the whole solution for k = 0)."""
    prefixes = [arith.reference_prefix(p, k) for p, k in zip(problems, ks)]
    texts = prm.sample_solutions(model, tok, problems, temperature=temperature, seed=seed,
                                 prefixes=prefixes if any(ks) else None)
    return [prefix + text for prefix, text in zip(prefixes, texts)]


def perturbed_share(problems: list[arith.Problem], share: float, rng: np.random.Generator) -> list[arith.Problem]:
    """round(share * len(problems)) of the problems, drawn without replacement, in their order."""
    picked = rng.choice(len(problems), round(share * len(problems)), replace=False)
    return [problems[i] for i in sorted(picked)]


@dataclasses.dataclass(frozen=True)
class Labelling:
    """Which solutions a PRM's training set holds, per problem and LM: `copies` sampled at `temperature`, plus the
    greedy one when `greedy`; the same again continuing each of `cuts` reference prefixes (only the LM's own steps
    labelled); and `perturbed` reference solutions cut after one near-miss wrong step of one of `perturb_kinds` (its
    fractional part: one for that share of the problems, drawn at random)."""

    copies: int = 1
    temperature: float = 1.0
    greedy: bool = False
    cuts: int = 0
    perturbed: float = 0.0
    perturb_kinds: tuple[str, ...] = arith.PERTURBATIONS


def prm_dataset(tok: "Tokenizer", problems: list[arith.Problem], lms: Sequence[Model], labelling: Labelling, *,
                seed: int, sequence_length: int):
    """Token, mask and label arrays [N, sequence_length] of the solutions `labelling` names, from each LM, every
    step labelled by the exact checker; every draw seeded from `seed`."""
    copies, temperature, cuts = labelling.copies, labelling.temperature, labelling.cuts
    greedy, perturbed = labelling.greedy, labelling.perturbed
    rows_p, rows_t, rows_first = [], [], []
    for cut in range(cuts + 1):
        ks = reference_cuts(problems, seed, cut)
        for k, model in enumerate(lms):
            for c, temp in enumerate([temperature] * copies + [0.0] * greedy):
                rows_t += continue_prefixes(model, tok, problems, ks, temperature=temp,
                                            seed=seed + 97 * k + c + 7919 * cut)
                rows_p += problems
                rows_first += ks
    rng = np.random.default_rng([seed, 1 + cuts, 271828])
    whole, part = divmod(perturbed, 1.0)
    for copy in range(int(whole) + (part > 0)):  # the whole copies first: their draws do not depend on `part`
        chosen = problems if copy < whole else perturbed_share(problems, part, rng)
        rows_t += [arith.perturbed_solution(p, rng, labelling.perturb_kinds) for p in chosen]
        rows_p += chosen
        rows_first += [0] * len(chosen)
    return prm.encode_prm_examples(tok, rows_p, rows_t, sequence_length, rows_first)
