"""The runs of one evaluation over one set of problems: the (key, method, config, δ) of each run, each run's record
log (checked against the problems before any model loads), decoding the problems a log does not hold yet into it,
and the summaries recomputed from the records on disk. Used by rsd_jax.evaluate (one set) and rsd_jax.evaluate_sets
(several sets, the paper's table).
"""

from __future__ import annotations

import dataclasses
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
#: methods that run on one device only for now (rsd_jax.methods: an engine without a mesh)
ONE_DEVICE = ("speculative", "beam_search")


def rows_per_problem(method: str, cfg: RunConfig) -> int:
    """How many rows of the decoding batch one problem takes: its samples (best_of_n, majority: rsd.n), its beams'
    expansions (beam_search: rsd.beam_width * rsd.beam_expansions), else 1."""
    if method in ("best_of_n", "majority"):
        return cfg.rsd.n
    if method == "beam_search":
        return cfg.rsd.beam_width * cfg.rsd.beam_expansions
    return 1


def in_batches_of_rows(method: str, cfg: RunConfig) -> RunConfig:
    """`cfg` with decoding.batch_size counted in rows: a method that takes k rows per problem decodes
    batch_size // k problems a batch (at least 1), so its batches hold batch_size rows as every other method's do
    (the memory rsd_jax.capacity estimates) instead of k times as many, most of them padding where a set has fewer
    problems than a batch."""
    rows = rows_per_problem(method, cfg)
    if rows == 1:
        return cfg
    problems = max(1, cfg.decoding.batch_size // rows)
    return dataclasses.replace(cfg, decoding=dataclasses.replace(cfg.decoding, batch_size=problems))


def method_keys(cfg: RunConfig) -> list[tuple[str, str, RunConfig, float | None]]:
    """(key, method, config, δ) for each run: the methods (with their overrides; a sampling method's batch counted
    in rows, `in_batches_of_rows`), then "rsd@δ" per threshold."""
    runs = []
    for text in cfg.rsd.methods or DEFAULT_METHODS:
        method, run_cfg = parse_method(text, cfg)
        runs.append((text, method, in_batches_of_rows(method, run_cfg), None))
    runs += [(f"rsd@{d:g}", "rsd", cfg, d) for d in cfg.rsd.thresholds]
    return runs


def check_one_device(runs: list[tuple], mesh) -> None:
    """A method that runs on one device only, in a run on a mesh, is refused before anything is decoded (one line
    naming the two ways out)."""
    refused = [key for key, method, _, _ in runs if method in ONE_DEVICE]
    if mesh is not None and refused:
        raise InputError(f"{', '.join(refused)} run(s) on one device only for now, and this run has a mesh "
                         f"({dict(mesh.shape)}): drop them from rsd.methods, or run them apart with mesh.model=1 and "
                         "one visible device (e.g. CUDA_VISIBLE_DEVICES=0)")


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
