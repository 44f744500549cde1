"""PRM training data and loss (Math-Shepherd style, with exact labels).

Solutions are sampled from LMs (the draft, for the embedded PRM), from the question or continuing a reference
prefix (the states RSD reaches once the target has written a step); the exact checker labels every step the LM
wrote (is it correct given the steps before it); the PRM reads its own view of the solution (BOS + question +
"\\n", then each step's text and the delimiter token) and learns sigmoid(v_head(h)) = P(step correct) at each
delimiter by binary cross-entropy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.stats import rankdata

from rsd_jax.data import arith
from rsd_jax.decoding.generator import TokenTables
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.sampling import Sampling
from rsd_jax.decoding.single import decode_model
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.models.model import Model
from rsd_jax.training.lm import next_token_loss

if TYPE_CHECKING:
    from rsd_jax.tokenizer import Tokenizer


def lm_prompts(tok: "Tokenizer", problems: Sequence[arith.Problem], max_new_tokens: int,
               prefixes: Sequence[str] | None = None) -> Prompts:
    """The draft/target prompt of each problem, followed by its prefix (steps already written, each ending in
    the delimiter) when given, in one right-padded buffer (the PRM fields are unused)."""
    prefixes = prefixes if prefixes is not None else [""] * len(problems)
    ids = [[tok.bos_id] + tok.encode(arith.format_prompt(p) + prefix) for p, prefix in zip(problems, prefixes)]
    width = max(map(len, ids)) + max_new_tokens
    tokens = np.zeros((len(ids), width), np.int32)
    for i, seq in enumerate(ids):
        tokens[i, :len(seq)] = seq
    n = len(ids)
    return Prompts(tokens=jnp.asarray(tokens), length=jnp.asarray([len(s) for s in ids], jnp.int32),
                   prm_tokens=jnp.zeros((n, 1), jnp.int32), prm_length=jnp.ones((n,), jnp.int32))


def eos_tables(tok: "Tokenizer", vocab_size: int) -> TokenTables:
    eos = np.zeros((vocab_size,), bool)
    eos[list(tok.eos_ids)] = True
    return TokenTables(stop=jnp.zeros((vocab_size,), bool), eos=jnp.asarray(eos))


def sample_solutions(model: Model, tok: "Tokenizer", problems: Sequence[arith.Problem], *, temperature: float,
                     seed: int, max_new_tokens: int = 128, batch_size: int = 512,
                     prefixes: Sequence[str] | None = None) -> list[str]:
    """One sampled (temperature > 0) or greedy solution text per problem; with `prefixes`, the model continues
    each problem's prefix and the text returned is the continuation only."""
    spec = DecodeSpec(max_new_tokens=max_new_tokens, chunk=32, sampling=Sampling(temperature=temperature))
    tables = eos_tables(tok, model.config.vocab_size)
    prefixes = list(prefixes) if prefixes is not None else [""] * len(problems)
    texts: list[str] = []
    for start in range(0, len(problems), batch_size):
        chunk = list(problems[start:start + batch_size])
        heads = prefixes[start:start + batch_size]
        pad = batch_size - len(chunk)  # one shape: one compilation
        chunk, heads = chunk + [chunk[-1]] * pad, heads + [heads[-1]] * pad
        out = jax.device_get(decode_model(model, prompts=lm_prompts(tok, chunk, max_new_tokens, heads), tables=tables,
                                          key=jax.random.key(seed * 100_003 + start), spec=spec))
        for i in range(min(batch_size, len(problems) - start)):
            ids = [t for t in out.tokens[i, out.prompt_length[i]:out.length[i]] if t not in tok.eos_ids]
            texts.append(tok.decode(ids))
    return texts


def prm_example(tok: "Tokenizer", problem: arith.Problem, text: str,
                first: int = 0) -> tuple[list[int], list[int], list[float]]:
    """(PRM-view tokens, delimiter positions, labels) of one solution; the steps before `first` (a given
    prefix, not the model's own) are read but not labelled."""
    from rsd_jax.tokenizer import prm_delimiter_id, prm_prompt_ids, prm_step_ids

    steps = arith.split_steps(text)
    labels = arith.check_steps(problem, steps)
    tokens = prm_prompt_ids(tok, problem.question)
    positions = []
    delimiter = prm_delimiter_id(tok)
    for step in steps:
        tokens += prm_step_ids(tok, step)
        assert tokens[-1] == delimiter
        positions.append(len(tokens) - 1)
    return tokens, positions[first:], [float(x) for x in labels[first:]]


def encode_prm_examples(tok: "Tokenizer", problems: Sequence[arith.Problem], texts: Sequence[str],
                        length: int, firsts: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tokens [N, length], label mask [N, length], labels [N, length] (examples longer than length dropped);
    firsts: per text, the number of leading steps that are a given prefix (not labelled)."""
    rows = []
    for p, text, first in zip(problems, texts, firsts if firsts is not None else [0] * len(texts)):
        tokens, positions, labels = prm_example(tok, p, text, first)
        if positions and len(tokens) <= length:
            rows.append((tokens, positions, labels))
    tokens = np.zeros((len(rows), length), np.int32)
    mask = np.zeros((len(rows), length), np.float32)
    labels = np.zeros((len(rows), length), np.float32)
    for i, (t, pos, lab) in enumerate(rows):
        tokens[i, :len(t)] = t
        mask[i, pos] = 1.0
        labels[i, pos] = lab
    return tokens, mask, labels


def solution_lm_weights(tokens: np.ndarray, mask: np.ndarray, labels: np.ndarray, newline_id: int,
                        delimiter_id: int) -> np.ndarray:
    """[N, T] float32 next-token targets of the auxiliary LM loss: 1 at the solution's tokens (after the newline
    that closes the PRM prompt) through the delimiter of the last step before the first step labelled wrong (all
    of them when none is), 0 elsewhere. The model is taught only what a correct solution continues with."""
    t = tokens.shape[1]
    pos = np.arange(t)[None, :]
    start = np.argmax(tokens == newline_id, axis=1)[:, None] + 1
    wrong = (mask > 0) & (labels < 0.5)
    first_wrong = np.where(wrong.any(1), np.argmax(wrong, axis=1), t)[:, None]
    kept_delimiters = (tokens == delimiter_id) & (pos < first_wrong)
    end = np.where(kept_delimiters.any(1), t - 1 - np.argmax(kept_delimiters[:, ::-1], axis=1), -1)[:, None]
    return ((pos >= start) & (pos <= end)).astype(np.float32)


def prm_loss(model: Model, batch, lm_weight: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Binary cross-entropy of the value head at the labelled delimiters; batch (tokens, mask, labels) [B, T] each.

    With lm_weight > 0 the batch carries a fourth array, `solution_lm_weights`, and the loss adds lm_weight times
    the next-token cross-entropy there (through the tied embeddings): an auxiliary task that keeps the backbone
    computing the arithmetic it is asked to judge.
    """
    tokens, mask, labels = batch[:3]
    b, t = tokens.shape
    out = model.backbone(tokens, jnp.zeros((b,), jnp.int32), model.init_cache(b, t))
    logits = model.module().v_head(out.hidden)
    bce = optax.sigmoid_binary_cross_entropy(logits, labels)
    loss = jnp.sum(bce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    acc = jnp.sum(((logits > 0) == (labels > 0.5)) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    metrics = {"step_acc": acc}
    if lm_weight:
        lm = next_token_loss(model.logits(out.hidden), tokens, batch[3])
        loss, metrics["lm_loss"] = loss + lm_weight * lm, lm
    return loss, metrics


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(a random positive outscores a random negative), ties counting half; NaN when
    the labels hold one class only (e.g. a target whose every step is correct)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks over ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_examples(prm: Model, tokens: np.ndarray, mask: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The PRM's reward at every masked position, flattened in row order."""
    @jax.jit
    def rewards(toks):
        b, t = toks.shape
        out = prm.backbone(toks, jnp.zeros((b,), jnp.int32), prm.init_cache(b, t))
        return prm.rewards(out.hidden)

    outs = []
    for s in range(0, len(tokens), batch_size):
        r = np.asarray(rewards(jnp.asarray(tokens[s:s + batch_size])))
        outs.append(r[mask[s:s + batch_size] > 0])
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)
