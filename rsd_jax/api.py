"""The public Python API: `generate(models, prompts, ...)` runs RSD (or one model alone) on text prompts.

    from rsd_jax.api import RSDModels, generate
    from rsd_jax.data.char_tokenizer import CharTokenizer
    from rsd_jax.weights import load_model
    models = RSDModels(draft=load_model("checkpoints/arith_draft"), target=load_model("checkpoints/arith_target"),
                       prm=load_model("checkpoints/arith_prm"), tokenizer=CharTokenizer())
    for r in generate(models, ["37*6+4-3+8\n"], delta=0.85):
        print(r.text, [(s.source, s.reward) for s in r.steps], r.accounting["flops_ratio_vs_target"])

Host side only: tokenise, lay the batch out in bucketed buffers, call the jitted loop once, and turn the
arrays it returns into per-prompt records.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax import flops
from rsd_jax.decoding import acceptance
from rsd_jax.decoding.generator import TokenTables
from rsd_jax.decoding.prm_view import PRMTables, PRMTextView, PRMView
from rsd_jax.decoding.prompts import Prompts
from rsd_jax.decoding.rsd import RSDOutput, rsd_decode
from rsd_jax.decoding.single import SingleOutput, single_decode
from rsd_jax.decoding.spec import DecodeSpec
from rsd_jax.errors import InputError
from rsd_jax.models.model import Model
from rsd_jax.parallel import rsd_decode_on_mesh, single_decode_on_mesh, to_host
from rsd_jax.tokenizer import StepTextEncoder, Tokenizer, build_prm_stop_table, prm_prompt_ids, step_stop_ids

METHODS = ("rsd", "target", "draft", "speculative", "best_of_n", "majority", "beam_search")
SOURCES = {0: "draft", 1: "target"}


@dataclasses.dataclass(frozen=True)
class RSDModels:
    """Draft, target and PRM, the tokenizer the draft and target share, and the PRM's own tokenizer (default: the
    same). The models' embeddings may have more rows than the tokenizer has tokens (padded vocabularies: the
    Qwen2.5-Math 1.5B and 7B differ there); only the tokenizer's tokens are ever drawn."""

    draft: Model
    target: Model
    prm: Model
    tokenizer: Tokenizer
    prm_tokenizer: Tokenizer | None = None
    delimiter: str = "\n\n"

    def __post_init__(self) -> None:
        for role in ("draft", "target"):
            rows = getattr(self, role).config.vocab_size
            if self.tokenizer.vocab_size > rows:
                raise InputError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the {role}'s vocabulary "
                                 f"only {rows}: they do not belong together")
        if self.prm_tok.vocab_size > self.prm.config.vocab_size:
            raise InputError(f"the PRM's tokenizer has {self.prm_tok.vocab_size} tokens but the PRM's vocabulary only "
                             f"{self.prm.config.vocab_size}")

    @property
    def prm_tok(self) -> Tokenizer:
        return self.prm_tokenizer or self.tokenizer

    @functools.cached_property
    def step_encoder(self) -> StepTextEncoder:
        """The host side of the PRM's text view (one object per models: the compiled loop is reused)."""
        return StepTextEncoder(self.tokenizer, self.prm_tok, self.delimiter)

    @property
    def prm_view_in_graph(self) -> bool:
        """True when the in-graph tables reproduce the PRM protocol: one tokenizer whose re-encoding of a step's
        text gives back its ids (character-level); BPE tokenizers use the host text view."""
        return self.prm_tok is self.tokenizer and getattr(self.tokenizer, "exact_reencoding", False)


@dataclasses.dataclass(frozen=True)
class StepRecord:
    source: str  # "draft" or "target"
    reward: float  # the PRM's reward of the draft's proposal for this step
    text: str
    n_tokens: int
    token_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    prompt: str
    token_ids: tuple[int, ...]  # the response
    text: str
    steps: tuple[StepRecord, ...]
    accounting: dict[str, Any]
    error: str | None = None  # e.g. NaN logits in this row: its output is not to be trusted


def _bucket(n: int, minimum: int = 16) -> int:
    return max(minimum, 1 << (max(n, 1) - 1).bit_length())


def host_tables(models: RSDModels, spec: DecodeSpec) -> tuple[TokenTables, PRMView]:
    """The token tables of the tokenizer's vocabulary, and the PRM's view of a step (rsd_jax.decoding.prm_view)."""
    tok, vocab = models.tokenizer, models.tokenizer.vocab_size
    stop = np.zeros((vocab,), bool)
    stop[list(step_stop_ids(tok, models.delimiter))] = True
    eos = np.zeros((vocab,), bool)
    eos[list(tok.eos_ids)] = True
    tables = TokenTables(stop=jnp.asarray(stop), eos=jnp.asarray(eos))
    if not models.prm_view_in_graph:
        return tables, PRMTextView(encode=models.step_encoder, width=text_view_width(spec))
    table = build_prm_stop_table(tok, models.delimiter)
    return tables, PRMTables.build(vocab, table.stop_ids, table.text_ids, table.text_len, table.delimiter_id,
                                   tok.eos_ids)


def buffer_widths(spec: DecodeSpec, prompt_tokens: int, prm_prompt_tokens: int, growth: int,
                  prm_excess: int | None = None) -> tuple[int, int]:
    """(T, Tp): the committed-token buffer of the draft and target (and their caches' capacity), and the PRM's
    view buffer, for a batch whose longest prompt and PRM prompt have these many tokens.

    Prompts are bucketed to a power of two (one compilation per bucket); with the budget counting the prompt, T is
    the budget itself. The PRM's buffer holds its prompt, the response and `growth` more ids per step
    (rsd_jax.decoding.prm_view); with the budget counting the prompt, a row's response is at most the budget less
    its prompt, so the PRM needs the budget plus `prm_excess` (the most a row's PRM prompt exceeds its prompt,
    rounded up to 64; None: the PRM prompt's bucket) plus the steps' growth.
    """
    steps = spec.max_steps * growth
    if not spec.budget_includes_prompt:
        return _bucket(prompt_tokens) + spec.max_new_tokens, _bucket(prm_prompt_tokens) + spec.max_new_tokens + steps
    excess = _bucket(prm_prompt_tokens) if prm_excess is None else -(-max(prm_excess, 0) // 64) * 64
    return spec.max_new_tokens, spec.max_new_tokens + excess + steps


def view_growth_per_step(models: RSDModels) -> int:
    """At most how many more ids than generated tokens one step takes in the PRM's view (its buffer's slack)."""
    if not models.prm_view_in_graph:
        return PRMTextView.growth_per_step
    return max(1, int(np.max(build_prm_stop_table(models.tokenizer, models.delimiter).text_len, initial=0)))


def text_view_width(spec: DecodeSpec) -> int:
    """Most ids one step may take in the PRM's text view: the step, its delimiter, and room for a re-encoding
    that comes out a little longer than the generated ids (longer still is flagged as an overflow)."""
    return spec.step_tokens + 1 + max(8, spec.step_tokens // 8)


def encode_prompts(models: RSDModels, prompts: Sequence[str], questions: Sequence[str] | None,
                   spec: DecodeSpec, batch_multiple: int = 1) -> Prompts:
    """Tokenises prompts (and the PRM's raw questions) into bucketed, right-padded buffers.

    The batch is padded with empty rows (length 0: done from the start) to a multiple of batch_multiple.
    """
    if not prompts:
        raise InputError("no prompts given")
    questions = list(questions) if questions is not None else [p.strip() for p in prompts]
    tok = models.tokenizer
    ids = [([tok.bos_id] if tok.bos_id is not None else []) + tok.encode(p) for p in prompts]
    prm_ids = [prm_prompt_ids(models.prm_tok, q) for q in questions]
    for i, seq in enumerate(ids):
        check_context(models, spec, i, len(seq), len(prm_ids[i]))
    excess = max(len(p) - len(i) for i, p in zip(ids, prm_ids))
    t_cap, tp_cap = buffer_widths(spec, max(map(len, ids)), max(map(len, prm_ids)), view_growth_per_step(models),
                                  excess)
    batch = -(-len(ids) // batch_multiple) * batch_multiple
    tokens = np.zeros((batch, t_cap), np.int32)
    prm_tokens = np.zeros((batch, tp_cap), np.int32)
    length = np.zeros((batch,), np.int32)
    prm_length = np.zeros((batch,), np.int32)
    for i, (seq, pseq) in enumerate(zip(ids, prm_ids)):
        tokens[i, :len(seq)], length[i] = seq, len(seq)
        prm_tokens[i, :len(pseq)], prm_length[i] = pseq, len(pseq)
    return Prompts(tokens=jnp.asarray(tokens), length=jnp.asarray(length),
                   prm_tokens=jnp.asarray(prm_tokens), prm_length=jnp.asarray(prm_length))


def check_context(models: RSDModels, spec: DecodeSpec, i: int, prompt_len: int, prm_prompt_len: int) -> None:
    """Refuses a prompt that leaves no token of the budget, or whose budget runs past a model's context
    (max_position_embeddings, or the models.*.max_context override): an InputError naming the limit."""
    if prompt_len == 0:
        raise InputError(f"prompt {i} is empty")
    budget = spec.max_new_tokens
    if spec.budget_includes_prompt and prompt_len >= budget:
        raise InputError(f"prompt {i} has {prompt_len} tokens, which leaves nothing of the budget of prompt + response "
                         f"(decoding.max_new_tokens={budget} with decoding.budget_includes_prompt)")
    end = budget if spec.budget_includes_prompt else prompt_len + budget
    for role in ("draft", "target"):
        context = getattr(models, role).config.max_position_embeddings
        if end > context:
            raise InputError(f"prompt {i} has {prompt_len} tokens; with decoding.max_new_tokens={budget} it exceeds the "
                             f"models' context: position {end} is past the {role}'s {context} (raise "
                             f"models.{role}.max_context if the model can read further, or lower the budget)")
    prm_end = prm_prompt_len + (end - prompt_len) + spec.max_steps  # the steps' text and one delimiter each
    context = models.prm.config.max_position_embeddings
    if prm_end > context:
        raise InputError(f"prompt {i}: the PRM's view can reach position {prm_end} (its question, the response budget "
                         f"and a delimiter per step), past the PRM's context of {context} (raise "
                         f"models.prm.max_context, or lower decoding.max_new_tokens or decoding.max_steps)")


def generate(models: RSDModels, prompts: Sequence[str], *, method: str = "rsd",
             spec: DecodeSpec = DecodeSpec(), delta: float | Sequence[float] = 0.7, p: float = 0.5,
             alpha: float = 20.0,
             budget: float | None = None, calibration_rewards: np.ndarray | None = None,
             questions: Sequence[str] | None = None, seed: int = 0,
             pad_batch_to: int = 1, mesh: jax.sharding.Mesh | None = None, n: int = 4, aggregate: str = "min",
             gamma: int = 4, beam_width: int = 4, beam_expansions: int = 4,
             extract: Callable[[str], object] | None = None) -> list[GenerationResult]:
    """Decodes each prompt with RSD ("rsd") or one model alone ("target", "draft").

    delta, p, alpha: parameters of spec.weighting (traced: changing them does not recompile); delta may be
    one threshold per prompt.
    budget: the largest fraction of steps that may go to the target; with spec.online_budget δ follows a
    running quantile of the draft's rewards, seeded by calibration_rewards when given.
    questions: the raw question of each prompt, as the PRM reads it (default: the prompt, stripped).
    pad_batch_to: pad the batch with empty rows to a multiple of this (one compilation for every batch).
    mesh: run sharded on this ("data", "model") mesh (the batch is padded to a multiple of its data axis).
    Baselines: "speculative" (token-level, γ = gamma), "best_of_n" (n draft samples, PRM `aggregate`),
    "majority" (n samples, the most common answer by `extract`), "beam_search" (PRM process beam search).
    """
    if method not in METHODS:
        raise InputError(f"method {method!r} is not one of {', '.join(METHODS)}")
    multiple = math.lcm(pad_batch_to, mesh.shape["data"]) if mesh is not None else pad_batch_to
    batch = encode_prompts(models, prompts, questions, spec, batch_multiple=multiple)
    tables, prm_view = host_tables(models, spec)
    key = jax.random.key(seed)
    if method == "rsd":
        histogram = acceptance.RewardHistogram.create(spec.histogram_bins, calibration_rewards)
        if np.ndim(delta) == 1:  # one threshold per prompt (per-context δ): pad rows with the last value
            delta = np.pad(np.asarray(delta, np.float32), (0, batch.length.shape[0] - len(delta)), mode="edge")
        params = acceptance.AcceptanceParams.create(delta=delta, p=p, alpha=alpha)
        args = (models.draft, models.target, models.prm, batch, tables, prm_view, params,
                jnp.float32(budget if budget is not None else 0.0), histogram, key)
        if mesh is not None:
            out = rsd_decode_on_mesh(mesh, *args, spec=spec)
        else:
            out = rsd_decode(*args, spec=spec)
        return rsd_results(models, prompts, to_host(out))
    if method in ("speculative", "best_of_n", "majority", "beam_search"):
        if mesh is not None:
            raise InputError(f"method {method!r} runs on one device (no mesh) for now")
        return baseline_results(models, prompts, batch, tables, prm_view, key, spec, method, n=n,
                                aggregate=aggregate, gamma=gamma, width=beam_width, expansions=beam_expansions,
                                extract=extract)
    model = models.target if method == "target" else models.draft
    if mesh is not None:
        out = single_decode_on_mesh(mesh, model, batch, tables, key, spec=spec)
    else:
        out = single_decode(model, batch, tables, key, spec=spec)
    return single_results(models, prompts, to_host(out), method)


def target_only_flops(target: Model, prompt_length: int, length: int) -> float:
    """FLOPs the target alone spends to write the same tokens (prefill all but the last prompt token,
    then one decode step with the LM head per response token)."""
    cfg = target.config
    return float(flops.span_flops(cfg, 0, length - 1, with_head=False)
                 + (length - prompt_length) * flops.head_flops_per_token(cfg))


def _steps_from_trace(models: RSDModels, out: RSDOutput, row: int) -> tuple[StepRecord, ...]:
    tokens = out.tokens[row]
    start = int(out.prompt_length[row])
    steps = []
    for k in range(int(out.n_steps[row])):
        end = int(out.trace.end[row, k])
        ids = tuple(int(t) for t in tokens[start:end])
        steps.append(StepRecord(source=SOURCES[int(out.trace.source[row, k])],
                                reward=float(out.trace.reward[row, k]),
                                text=models.tokenizer.decode(ids), n_tokens=len(ids), token_ids=ids))
        start = end
    return tuple(steps)


def split_steps(ids: tuple[int, ...], stop_ids: frozenset[int]) -> list[tuple[int, ...]]:
    """Cuts a response after every step-delimiter token (the last part may end without one)."""
    parts, start = [], 0
    for k, token in enumerate(ids):
        if token in stop_ids:
            parts.append(ids[start:k + 1])
            start = k + 1
    if start < len(ids):
        parts.append(ids[start:])
    return parts


def _nonfinite_message(flags: int) -> str | None:
    names = [name for bit, name in ((1, "draft logits"), (2, "target logits"), (4, "PRM reward")) if flags & bit]
    parts = [f"non-finite values in {', '.join(names)}"] if names else []
    if flags & 8:
        parts.append("a step did not fit the PRM's view (the row stopped there)")
    return "; ".join(parts) or None


def rsd_results(models: RSDModels, prompts: Sequence[str], out: RSDOutput) -> list[GenerationResult]:
    st = out.stats
    results = []
    for i, prompt in enumerate(prompts):
        plen, length = int(out.prompt_length[i]), int(out.length[i])
        ids = tuple(int(t) for t in out.tokens[i, plen:length])
        useful = {name: float(getattr(st, name).useful_flops[i]) for name in ("draft", "target", "prm")}
        total = sum(useful.values())
        target_only = target_only_flops(models.target, plen, length)
        steps = _steps_from_trace(models, out, i)
        executed = sum(float(getattr(st, m).executed_flops) for m in ("draft", "target", "prm")) / len(prompts)
        accounting = {
            "executed_flops": executed,  # this row's share of what the batch executed (padding included)
            "draft_accepted_tokens": int(st.draft_accepted_tokens[i]),
            "draft_discarded_tokens": int(st.draft_discarded_tokens[i]),
            "target_tokens": int(st.target_tokens[i]),
            "draft_steps": int(st.draft_steps[i]), "target_steps": int(st.target_steps[i]),
            "tokens_processed": {n: int(getattr(st, n).tokens[i]) for n in ("draft", "target", "prm")},
            "useful_flops": useful, "useful_flops_total": total,
            "target_only_flops": target_only,
            "flops_ratio_vs_target": target_only / total if total else float("nan"),
        }
        results.append(GenerationResult(prompt=prompt, token_ids=ids, text=models.tokenizer.decode(ids),
                                        steps=steps, accounting=accounting,
                                        error=_nonfinite_message(int(st.nonfinite[i]))))
    return results


def single_results(models: RSDModels, prompts: Sequence[str], out: SingleOutput,
                   method: str) -> list[GenerationResult]:
    stops = frozenset(step_stop_ids(models.tokenizer, models.delimiter))
    results = []
    for i, prompt in enumerate(prompts):
        plen, length = int(out.prompt_length[i]), int(out.length[i])
        ids = tuple(int(t) for t in out.tokens[i, plen:length])
        text = models.tokenizer.decode(ids)
        useful = float(out.work.useful_flops[i])
        target_only = target_only_flops(models.target, plen, length)
        accounting = {
            "executed_flops": float(out.work.executed_flops) / len(prompts),
            f"{method}_tokens": len(ids), "tokens_processed": {method: int(out.work.tokens[i])},
            "useful_flops": {method: useful}, "useful_flops_total": useful,
            "target_only_flops": target_only,
            "flops_ratio_vs_target": target_only / useful if useful else float("nan"),
        }
        steps = tuple(StepRecord(source=method, reward=float("nan"), text=models.tokenizer.decode(part),
                                 n_tokens=len(part), token_ids=part) for part in split_steps(ids, stops))
        results.append(GenerationResult(prompt=prompt, token_ids=ids, text=text, steps=steps,
                                        accounting=accounting,
                                        error="non-finite logits" if bool(out.nonfinite[i]) else None))
    return results


def baseline_results(models: RSDModels, prompts: Sequence[str], batch: Prompts, tables: TokenTables,
                     prm_view: PRMView, key: jax.Array, spec: DecodeSpec, method: str, *, n: int,
                     aggregate: str, gamma: int, width: int, expansions: int,
                     extract: Callable[[str], object] | None) -> list[GenerationResult]:
    """Token-level speculative decoding, Best-of-N, majority voting and beam search, with RSD's accounting."""
    from rsd_jax.decoding.beam_search import beam_search
    from rsd_jax.decoding.best_of_n import aggregate_rewards, majority_vote, sample_n
    from rsd_jax.decoding.speculative import speculative_decode

    if method == "speculative":
        out = jax.device_get(speculative_decode(models.draft, models.target, batch, tables, key, spec=spec,
                                                gamma=gamma))
        single = SingleOutput(tokens=out.tokens, length=out.length, prompt_length=out.prompt_length,
                              ended_eos=out.ended_eos, nonfinite=np.zeros_like(out.ended_eos), work=out.target)
        results = single_results(models, prompts, single, "target")
        for r, i in zip(results, range(len(prompts))):
            draft = float(out.draft.useful_flops[i])
            acc = r.accounting
            acc["useful_flops"]["draft"] = draft
            acc["tokens_processed"]["draft"] = int(out.draft.tokens[i])
            acc["draft_kept_tokens"] = int(out.draft_kept[i])
            acc["executed_flops"] += float(out.draft.executed_flops) / len(prompts)
            acc["useful_flops_total"] += draft
            acc["flops_ratio_vs_target"] = acc["target_only_flops"] / acc["useful_flops_total"]
        return results
    if method == "beam_search":
        out = jax.device_get(beam_search(models.draft, models.prm, batch, tables, prm_view, key, spec=spec,
                                         width=width, expansions=expansions))
        k = width * expansions
        rows = rsd_results(models, [p for p in prompts for _ in range(k)], out.beams)
        beam_work = np.asarray(out.beams.stats.draft.useful_flops) + np.asarray(out.beams.stats.prm.useful_flops)
        share = beam_work / max(beam_work.sum(), 1.0) * float(out.useful_flops)
        return [_grouped(rows[b * k:(b + 1) * k], 0, k, float(share[b * k:(b + 1) * k].sum()))
                for b in range(len(prompts))]
    out = jax.device_get(sample_n(models.draft, models.prm, batch, tables, prm_view, key, spec=spec, n=n))
    rows = rsd_results(models, [p for p in prompts for _ in range(n)], out)
    if method == "best_of_n":
        scores = np.asarray(aggregate_rewards(out, aggregate)).reshape(-1, n)
        chosen = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1)
    else:
        if extract is None:
            raise InputError("majority voting needs an answer extractor for these problems")
        chosen = []
        for b in range(len(prompts)):
            answers = [extract(r.text) for r in rows[b * n:(b + 1) * n]]
            winner = majority_vote(answers)
            chosen.append(answers.index(winner) if winner is not None else 0)
    return [_grouped(rows[b * n:(b + 1) * n], int(chosen[b]), n) for b in range(len(prompts))]


def _grouped(group: list[GenerationResult], chosen: int, n: int, total: float | None = None) -> GenerationResult:
    """The chosen sample of a group, with the whole group's work in its accounting."""
    best = group[chosen]
    acc = dict(best.accounting)
    models = ("draft", "prm")
    acc["useful_flops"] = {m: sum(r.accounting["useful_flops"].get(m, 0.0) for r in group) for m in models}
    acc["tokens_processed"] = {m: sum(r.accounting["tokens_processed"].get(m, 0) for r in group) for m in models}
    acc["useful_flops_total"] = total if total is not None else sum(acc["useful_flops"].values())
    acc["samples"] = n
    acc["flops_ratio_vs_target"] = acc["target_only_flops"] / acc["useful_flops_total"]
    return dataclasses.replace(best, accounting=acc)
