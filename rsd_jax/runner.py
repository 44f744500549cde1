"""Running a decoding method over a list of problems in batches, and summarising the results.

Shared by `decode` and `evaluate`: each batch becomes a list of JSON-ready records with the response, its
steps (source, reward, text, tokens), the accounting and, when the problem has a reference, the grade.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

from rsd_jax.api import generate
from rsd_jax.calibration import BudgetCalibration, calibrate_budget
from rsd_jax.config import RSDConfig, RunConfig, split_method_variant
from rsd_jax.data.problems import Item
from rsd_jax.engine import Engine
from rsd_jax.harness import harness_fields
from rsd_jax.results import GenerationResult


def to_record(item: Item, result: GenerationResult, method: str) -> dict:
    """One problem's record: ours, then the official harness's fields beside them (rsd_jax.harness)."""
    steps = [{"source": s.source, "reward": s.reward, "text": s.text, "n_tokens": s.n_tokens} for s in result.steps]
    correct = item.grade(result.text) if item.grade is not None else None
    return {
        "uid": item.uid, "method": method, "question": item.question, "prompt": item.prompt,
        "text": result.text, "token_ids": list(result.token_ids), "steps": steps,
        "accounting": result.accounting, "answer": item.answer, "correct": correct,
        "level": item.level, "error": result.error,
        **harness_fields(item, result.text, steps, result.accounting, correct),
    }


def parse_method(text: str, cfg: RunConfig) -> tuple[str, RunConfig]:
    """'name' or 'name:key=value,key=value' (keys of the rsd section) -> (name, config with the overrides)."""
    import yaml

    from rsd_jax.configlib import build, to_dict

    name, overrides = split_method_variant(text)
    if not overrides:
        return name, cfg
    rsd = {**to_dict(cfg.rsd), **{k: yaml.safe_load(v) for k, v in overrides.items()}}
    return name, dataclasses.replace(cfg, rsd=build(RSDConfig, rsd, "rsd."))


def run_method(engine: Engine, items: Sequence[Item], method: str, cfg: RunConfig,
               delta: float | None = None, done: frozenset[str] = frozenset(), *,
               calibration: BudgetCalibration | None = None) -> Iterator[list[dict]]:
    """Yields the records of each batch of `items` decoded with `method` (a name of rsd_jax.methods.NAMES, its
    options from the config's rsd section).

    Batches are fixed slices of `items` (batch_size each), seeded by their position. RSD with a budget is
    calibrated first, once, on rsd.calibration's split (never `items`' own: rsd_jax.calibration; or `calibration`
    given, e.g. shared by several budgets), and its records carry the (δ, q, μ_M) it decoded with. A resume passes every item with `done` (the uids already on disk) and
    gets the same batches, skipping those whose records are all done (a batch with some done is decoded whole
    again, so each record is what an uninterrupted run writes)."""
    if not items:
        return
    bs = cfg.decoding.batch_size
    delta = cfg.rsd.delta if delta is None else delta
    calibrate = method == "rsd" and cfg.rsd.budget is not None and (cfg.rsd.calibration or not cfg.rsd.online_budget)
    calibration = calibration if calibrate else None
    for start in range(0, len(items), bs):
        chunk = items[start:start + bs]
        if all(i.uid in done for i in chunk):
            continue
        if calibrate and calibration is None:
            calibration = calibrate_budget(engine, cfg, tokenizer=engine.models.tokenizer)
        value = cfg.rsd.method_value(method, delta=delta, extract=chunk[0].extract)
        value = calibration.method(value) if calibration is not None else value
        results = generate(engine, [i.prompt for i in chunk], questions=[i.question for i in chunk],
                           method=value, decoding=cfg.decoding.spec(), seed=cfg.decoding.seed + start,
                           pad_batch_to=bs)
        records = [to_record(i, res, method) for i, res in zip(chunk, results)]
        for rec in records:
            rec["delta"] = value.delta if calibration is not None else delta
            if calibration is not None:
                rec["q"], rec["mu_target"] = value.q, value.mu_target
                rec["calibration_shares"] = list(calibration.shares)
        yield records
