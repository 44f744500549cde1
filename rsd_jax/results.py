"""What the loops return, as per-prompt results: the response, its steps (source, reward, text, tokens) and the
accounting (tokens and FLOPs by model, useful and executed, and the FLOPs target-only decoding of the same
tokens takes). Host side: numpy arrays in, frozen records out."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Sequence

from rsd_jax import flops
from rsd_jax.decoding.rsd_state import RSDOutput
from rsd_jax.decoding.single import SingleOutput
from rsd_jax.decoding.usage import Usage
from rsd_jax.models.model import Model
from rsd_jax.tokenizer import SplitDelimiterTable, split_delimiter_table, step_stop_ids

if TYPE_CHECKING:
    from rsd_jax.engine import RSDModels

SOURCES = {0: "draft", 1: "target"}


@dataclasses.dataclass(frozen=True)
class StepRecord:
    source: str  # "draft" or "target"
    reward: float  # the PRM's reward of the draft's proposal for this step
    text: str
    n_tokens: int
    token_ids: tuple[int, ...]
    target_reward: float = float("nan")  # the PRM's reward of the target's step where it wrote one (the loop's
    #                                      record_target_reward; NaN otherwise)


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    prompt: str
    token_ids: tuple[int, ...]  # the response
    text: str
    steps: tuple[StepRecord, ...]
    accounting: dict[str, Any]
    error: str | None = None  # e.g. NaN logits in this row: its output is not to be trusted


def target_only_flops(target: Model, prompt_length: int, length: int) -> float:
    """FLOPs the target alone spends to write the same tokens (prefill all but the last prompt token,
    then one decode step with the LM head per response token)."""
    cfg = target.config
    return float(flops.span_flops(cfg, 0, length - 1, with_head=False)
                 + (length - prompt_length) * flops.head_flops_per_token(cfg))


def _steps_from_trace(models: RSDModels, out: RSDOutput, row: int) -> tuple[StepRecord, ...]:
    tokens = out.tokens[row]
    start = int(out.prompt_length[row])
    steps, scored = [], out.trace.target_reward
    for k in range(int(out.n_steps[row])):
        end = int(out.trace.end[row, k])
        ids = tuple(int(t) for t in tokens[start:end])
        steps.append(StepRecord(source=SOURCES[int(out.trace.source[row, k])],
                                reward=float(out.trace.reward[row, k]),
                                text=models.tokenizer.decode(ids), n_tokens=len(ids), token_ids=ids,
                                target_reward=float("nan") if scored is None else float(scored[row, k])))
        start = end
    return tuple(steps)


def split_steps(ids: tuple[int, ...], stop_ids: frozenset[int],
                split: SplitDelimiterTable | None = None) -> list[tuple[int, ...]]:
    """Cuts a response after every step-delimiter token, and with `split` also where two tokens of a step write
    the delimiter across their boundary (the last part may end without one)."""
    parts, start = [], 0
    for k, token in enumerate(ids):
        if token in stop_ids or (split is not None and k > start and split.split_at(ids[k - 1], token) is not None):
            parts.append(ids[start:k + 1])
            start = k + 1
    if start < len(ids):
        parts.append(ids[start:])
    return parts


def batch_passes(usage: Usage) -> dict[str, int]:
    """A model's sequential forward passes over the batch and the rows they carried, summed (the same figures in
    every record of a batch: where a batch's time goes, not a row's)."""
    return {"passes": int(usage.forwards), "rows": int(usage.rows)}


def nonfinite_message(flags: int) -> str | None:
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
            "batch_passes": {n: batch_passes(getattr(st, n)) for n in ("draft", "target", "prm")},
            "cut_off": bool(st.cut_off[i]),  # ended by the batch-wide patience cut-off (decoding.patience)
        }
        results.append(GenerationResult(prompt=prompt, token_ids=ids, text=models.tokenizer.decode(ids),
                                        steps=steps, accounting=accounting,
                                        error=nonfinite_message(int(st.nonfinite[i]))))
    return results


def single_results(models: RSDModels, prompts: Sequence[str], out: SingleOutput, method: str, *,
                   split_stop: bool = False) -> list[GenerationResult]:
    """split_stop: the response's steps (for display) also end where the delimiter is split over two tokens."""
    stops = frozenset(step_stop_ids(models.tokenizer, models.delimiter))
    split = split_delimiter_table(models.tokenizer, models.delimiter) if split_stop else None
    results = []
    for i, prompt in enumerate(prompts):
        plen, length = int(out.prompt_length[i]), int(out.length[i])
        ids = tuple(int(t) for t in out.tokens[i, plen:length])
        text = models.tokenizer.decode(ids)
        useful = float(out.usage.useful_flops[i])
        target_only = target_only_flops(models.target, plen, length)
        accounting = {
            "executed_flops": float(out.usage.executed_flops) / len(prompts),
            f"{method}_tokens": len(ids), "tokens_processed": {method: int(out.usage.tokens[i])},
            "useful_flops": {method: useful}, "useful_flops_total": useful,
            "target_only_flops": target_only,
            "flops_ratio_vs_target": target_only / useful if useful else float("nan"),
            "batch_passes": {method: batch_passes(out.usage)},
        }
        steps = tuple(StepRecord(source=method, reward=float("nan"), text=models.tokenizer.decode(part),
                                 n_tokens=len(part), token_ids=part) for part in split_steps(ids, stops, split))
        results.append(GenerationResult(prompt=prompt, token_ids=ids, text=text, steps=steps,
                                        accounting=accounting,
                                        error="non-finite logits" if bool(out.nonfinite[i]) else None))
    return results


def grouped(group: list[GenerationResult], chosen: int, n: int, total: float | None = None) -> GenerationResult:
    """The chosen sample of a group, with the whole group's usage in its accounting."""
    best = group[chosen]
    acc = dict(best.accounting)
    models = ("draft", "prm")
    acc["useful_flops"] = {m: sum(r.accounting["useful_flops"].get(m, 0.0) for r in group) for m in models}
    acc["tokens_processed"] = {m: sum(r.accounting["tokens_processed"].get(m, 0) for r in group) for m in models}
    acc["useful_flops_total"] = total if total is not None else sum(acc["useful_flops"].values())
    acc["samples"] = n
    acc["flops_ratio_vs_target"] = acc["target_only_flops"] / acc["useful_flops_total"]
    return dataclasses.replace(best, accounting=acc)
