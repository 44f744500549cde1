"""What a list of records adds up to: accuracy, the draft's share of steps, tokens and FLOPs by model, how they
compare with target-only decoding, and the records' health (errors, non-finite rewards). Pure functions of the
records (JSON-ready dicts, rsd_jax.runner.to_record), below every command."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rsd_jax.methods import SCORED


def health(records: Sequence[dict]) -> dict:
    """How many records carry an error (e.g. non-finite logits) and how many, of a method that scores steps
    with the PRM, have a non-finite step reward."""
    nonfinite = sum(1 for r in records if r.get("method") in SCORED
                    and any(not np.isfinite(s["reward"]) for s in r["steps"]))
    return {"n_errors": sum(1 for r in records if r.get("error")), "n_nonfinite_rewards": nonfinite}


def health_warning(summary: dict, what: str = "") -> str | None:
    """A one-line warning when a summary counts errors or non-finite rewards, else None."""
    parts = [f"{summary[k]} of {summary['n_problems']} records {text}" for k, text in
             (("n_errors", "have an error"), ("n_nonfinite_rewards", "have non-finite PRM rewards"))
             if summary.get(k)]
    return f"warning: {what}{'; '.join(parts)} (see each record's error and steps)" if parts else None


def summarize(records: Sequence[dict], wall_seconds: float | None = None) -> dict:
    """Accuracy, how many rows the patience cut-off ended (n_cut_off, present when some were: decoding.patience),
    the draft's acceptance (by steps: draft_acceptance_rate; by tokens, as the official RSD code reports it:
    draft_acceptance_rate_tokens = accepted draft tokens / all draft tokens written), tokens by model, FLOPs,
    their fraction of what target-only decoding of the same outputs takes (flops_vs_target_only) and its inverse
    (flops_ratio_vs_target)."""
    graded = [r["correct"] for r in records if r["correct"] is not None]
    steps = [s for r in records for s in r["steps"]]
    useful = sum(r["accounting"]["useful_flops_total"] for r in records)
    target_only = sum(r["accounting"]["target_only_flops"] for r in records)
    out = {"n_problems": len(records), **health(records)}
    cut_off = sum(1 for r in records if r["accounting"].get("cut_off"))  # rows the patience cut-off ended
    if cut_off:
        out["n_cut_off"] = cut_off
    if graded:
        out["accuracy"] = float(np.mean(graded))
    if steps and all(s["source"] in ("draft", "target") for s in steps):
        out["draft_acceptance_rate"] = float(np.mean([s["source"] == "draft" for s in steps]))
    written = [(r["accounting"]["draft_accepted_tokens"], r["accounting"]["draft_discarded_tokens"]) for r in records
               if "draft_discarded_tokens" in r["accounting"]]
    if written and sum(a + d for a, d in written):
        out["draft_acceptance_rate_tokens"] = sum(a for a, _ in written) / sum(a + d for a, d in written)
    for model in ("draft", "target", "prm"):
        n = sum(r["accounting"].get("tokens_processed", {}).get(model, 0) for r in records)
        if n:
            out[f"tokens_{model}"] = n
    out["useful_flops"] = useful
    out["executed_flops"] = sum(r["accounting"].get("executed_flops", 0.0) for r in records)
    out["flops_vs_target_only"] = useful / target_only if target_only else float("nan")  # < 1: RSD saves
    out["flops_ratio_vs_target"] = target_only / useful if useful else float("nan")  # how many times fewer
    if wall_seconds is not None:
        out["wall_seconds"] = wall_seconds
    return out


