"""The runs of one evaluation over one set of problems: the (key, method, config, δ) of each run, each run's record
log (checked against the problems before any model loads), decoding the problems a log does not hold yet into it,
and the summaries recomputed from the records on disk. Used by rsd_jax.evaluate (one set) and rsd_jax.evaluate_sets
(several sets, the paper's table).
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from rsd_jax.config import RunConfig
from rsd_jax.data.problems import Item
from rsd_jax.errors import InputError
from rsd_jax.records import RecordLog, read_records
from rsd_jax.runner import parse_method, run_method
from rsd_jax.runs import check_records_match
from rsd_jax.summary import summarize

DEFAULT_METHODS = ("rsd", "target", "draft")


def method_keys(cfg: RunConfig) -> list[tuple[str, str, RunConfig, float | None]]:
    """(key, method, config, δ) for each run: the methods (with their overrides), then "rsd@δ" per threshold."""
    runs = [(m, *parse_method(m, cfg), None) for m in (cfg.rsd.methods or DEFAULT_METHODS)]
    runs += [(f"rsd@{d:g}", "rsd", cfg, d) for d in cfg.rsd.thresholds]
    return runs


def open_logs(cfg: RunConfig, out: Path, items: list[Item]) -> dict[str, RecordLog]:
    """Each method's record log in `out` (torn tails cut), checked against the problems: before any model loads."""
    logs = {}
    for key, method, _, _ in method_keys(cfg):
        log = logs[key] = RecordLog(out / f"{key}.jsonl")
        check_records_match(log.records, items, log.path)
        if any(r.get("method") != method for r in log.records):
            raise InputError(f"{log.path} holds records of another method than {method!r}; move it away")
    return logs


def summarize_log(path: Path, items: list[Item], method: str, delta: float | None) -> dict:
    """The summary of the records on disk for this run's problems, in the problems' order."""
    order = {i.uid: n for n, i in enumerate(items)}
    records = sorted((r for r in read_records(path) if r["uid"] in order), key=lambda r: order[r["uid"]])
    summary = summarize(records)
    summary["wall_seconds"] = sum(r.get("wall_seconds", 0.0) for r in records)
    if delta is not None or method == "rsd":
        summary["delta"] = records[0].get("delta") if records else delta
    return summary


def decode_into(log: RecordLog, engine, items: list[Item], run: tuple, calibration=None, label: str = "") -> None:
    """Decodes the problems of `items` that `log` does not hold yet with one run of method_keys (key, method,
    config, δ), appending each batch's records (their wall seconds shared out) as it finishes."""
    key, method, run_cfg, delta = run
    done = frozenset(log.uids)
    with tqdm(total=len(items), initial=sum(i.uid in done for i in items), desc=label or key) as bar:
        start = time.time()
        shared = {"calibration": calibration} if calibration is not None else {}  # one calibration for every set
        for batch in run_method(engine, items, method, run_cfg, delta=delta, done=done, **shared):
            seconds = time.time() - start
            for record in batch:
                record["wall_seconds"] = seconds / len(batch)
            bar.update(len(log.append(batch)))  # a batch decoded again after a torn write adds only its rest
            start = time.time()


def versus_target(summaries: dict) -> None:
    """With a target-only run among the summaries, each one's FLOPs against its measured FLOPs (not the analytic
    estimate): flops_vs_target_only and its inverse flops_ratio_vs_target, in place."""
    if "target" in summaries:
        for s in summaries.values():
            s["flops_vs_target_only"] = s["useful_flops"] / summaries["target"]["useful_flops"]
            s["flops_ratio_vs_target"] = summaries["target"]["useful_flops"] / s["useful_flops"]
