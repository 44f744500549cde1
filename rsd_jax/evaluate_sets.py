"""Several evaluation sets in one `evaluate` run (`data.sources: [math500, gsm8k, ...]`), laid out as the paper's
tables: `python -m rsd_jax.evaluate --config configs/paper/NAME.yaml --out DIR`.

On disk: DIR/run.json (the run, rsd_jax.runs), DIR/config.yaml, and per set DIR/<set>/<method>.jsonl (each
problem's record, appended batch by batch: an interrupted run resumes per set and per method) with
DIR/<set>/summary.json (that set's summaries, as a one-set run writes them). At the end, from the records on disk:
DIR/summary.json, DIR/summary.md and DIR/accuracy_vs_flops.png in the paper's layout (rsd_jax.paper_table).

Every set's problems are read and every record file is checked before any model loads (a bad set name, file or
record is one line, nothing decoded; so is a method that runs on one device only with problems left to decode, in a
run on a mesh). The engine is loaded once, and not at all when every record is on disk (the table is only
recomputed); a budget-mode RSD is calibrated once per method (its calibration split is never one of the evaluated
sets: rsd_jax.config.calibration_data). Batches hold decoding.batch_size rows (a sampling method's problems take n rows
each: rsd_jax.evaluation_runs.in_batches_of_rows).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rsd_jax import evaluation_runs as single
from rsd_jax import paper_table
from rsd_jax.config import RunConfig
from rsd_jax.configlib import to_yaml
from rsd_jax.data.problems import Item, load_items
from rsd_jax.loading import kv_heads_of, load_engine, load_tokenizers, start_devices
from rsd_jax.outputs import write_text_atomic
from rsd_jax.records import read_records


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """One set of a run: its name, its config (data: that set alone), its problems, its folder."""

    name: str
    cfg: RunConfig
    items: list[Item]
    folder: Path


def set_configs(cfg: RunConfig) -> list[tuple[str, RunConfig]]:
    """(set name, the run's config with data narrowed to that set) for each set of data.sources (or data.source)."""
    return [(data.source, dataclasses.replace(cfg, data=data)) for data in cfg.data.sets()]


def needs_calibration(run: tuple) -> bool:
    _, method, run_cfg, _ = run
    return method == "rsd" and run_cfg.rsd.budget is not None and (run_cfg.rsd.calibration
                                                                    or not run_cfg.rsd.online_budget)


def evaluate_sets(cfg: RunConfig, out: Path, config_file: str | None) -> paper_table.Table:
    """Every method on every set into `out` (claimed for this run), resuming what is there; the table recomputed
    from the records on disk."""
    from rsd_jax.calibration import calibrate_budget
    from rsd_jax.compilations import release_programs

    mesh = start_devices(cfg.mesh, kv_heads_of(cfg, config_file))
    runs = single.method_keys(cfg)
    tokenizers = load_tokenizers(cfg, config_file)
    sets = [EvaluationSet(name, set_cfg, load_items(set_cfg.data, config_file, tokenizers[0]), out / name)
            for name, set_cfg in set_configs(cfg)]
    logs = {}
    for s in sets:
        s.folder.mkdir(parents=True, exist_ok=True)
        logs[s.name] = single.open_logs(s.cfg, s.folder, s.items)
    todo = [(run, s) for run in runs for s in sets if any(i.uid not in logs[s.name][run[0]].uids for i in s.items)]
    single.check_one_device([run for run, _ in todo], mesh)  # a finished run's table prints on any devices
    write_text_atomic(out / "config.yaml", to_yaml(cfg))
    if not todo:  # a finished run: the table from its records, no model loaded
        return summarize_sets(cfg, out, sets)
    engine = load_engine(cfg, config_file, mesh, tokenizers)
    calibrations, previous = {}, None
    for run, s in todo:
        key = run[0]
        if previous not in (None, key):  # the previous method is done on every set: its programs too
            release_programs()
        previous = key
        if needs_calibration(run) and key not in calibrations:
            calibrations[key] = calibrate_budget(engine, run[2], tokenizer=engine.models.tokenizer)
        set_run = (key, run[1], dataclasses.replace(run[2], data=s.cfg.data), run[3])
        single.decode_into(logs[s.name][key], engine, s.items, set_run, calibrations.get(key), label=f"{s.name} {key}")
    return summarize_sets(cfg, out, sets)


def summarize_sets(cfg: RunConfig, out: Path, sets: list[EvaluationSet]) -> paper_table.Table:
    """Each set's summaries (DIR/<set>/summary.json), then the paper's table over all sets (DIR/summary.*)."""
    runs = single.method_keys(cfg)
    per_set, records = {}, {}
    for s in sets:
        order = {i.uid: n for n, i in enumerate(s.items)}
        summaries = {}
        for key, method, _, delta in runs:
            path = s.folder / f"{key}.jsonl"
            summaries[key] = single.summarize_log(path, s.items, method, delta)
            records[(s.name, key)] = sorted((r for r in read_records(path) if r["uid"] in order),
                                            key=lambda r: order[r["uid"]])
        single.versus_target(summaries)
        write_text_atomic(s.folder / "summary.json", json.dumps(summaries, indent=2) + "\n")
        per_set[s.name] = summaries
    table = paper_table.build([s.name for s in sets], paper_table.row_labels(runs), per_set, records)
    write_text_atomic(out / "summary.json", json.dumps(table.as_json(), indent=2) + "\n")
    write_text_atomic(out / "summary.md", table.markdown)
    paper_table.plot(table, out)
    return table
