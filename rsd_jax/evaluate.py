"""Evaluate methods on a dataset: `python -m rsd_jax.evaluate --config FILE [key=value ...] --out DIR`.

With data.sources (several sets) the run is rsd_jax.evaluate_sets': a folder per set, the paper's table. With one
data.source, as follows.

For every method (rsd.methods; default rsd, target and draft) and every extra threshold (rsd.thresholds,
run as "rsd@δ"), each problem's record is appended to DIR/<method>.jsonl (and fsynced) as soon as its batch
finishes, so an interrupted run resumes where it stopped; DIR/run.json records the run (its result-changing
config keys and model digests, rsd_jax.runs) and a resume of another run is refused (--new-run: a fresh folder
beside DIR). At the end, from the records on disk: DIR/summary.json (per method: accuracy, n_problems, n_errors,
n_nonfinite_rewards, draft_acceptance_rate, tokens by model, useful and executed FLOPs, flops_vs_target_only and
its inverse flops_ratio_vs_target, wall_seconds), DIR/summary.md (a table) and PNG plots (accuracy against
FLOPs; accuracy and acceptance against δ). See rsd_jax.exits for the exit codes.
"""

from __future__ import annotations

if __name__ == "__main__":  # SIGINT / SIGTERM during the imports below: one line, 130 / 143
    from rsd_jax.signals import on_signals_while_starting

    on_signals_while_starting("rsd_jax.evaluate")

import argparse
import contextlib
import json
from pathlib import Path

from rsd_jax import exits, signals
from rsd_jax.config import RunConfig
from rsd_jax.configlib import add_config_flags, describe_if_asked, load_config, print_config_if_asked, to_yaml
from rsd_jax.data.problems import load_items
from rsd_jax.errors import InputError, RSDError
from rsd_jax.loading import kv_heads_of, load_engine, load_tokenizers, start_devices
from rsd_jax.summary import health_warning
from rsd_jax.outputs import check_output_dir, save_figure, write_text_atomic
from rsd_jax.run_lock import claim_locked
from rsd_jax.runs import run_identity
from rsd_jax.signals import Interrupted, interruptible
from rsd_jax.evaluation_runs import (check_one_device, decode_into, method_keys, open_logs, summarize_log,
                                     versus_target)

def evaluate(cfg: RunConfig, out: Path, config_file: str | None) -> dict:
    """Every method's records into `out` (a folder claimed and locked for this run: rsd_jax.run_lock), resuming
    what is there; the summaries, recomputed from the records on disk."""
    # multi-host: joins the other processes before anything else uses JAX
    mesh = start_devices(cfg.mesh, kv_heads_of(cfg, config_file))
    check_one_device(method_keys(cfg), mesh)  # before any work
    tokenizers = load_tokenizers(cfg, config_file)
    items = load_items(cfg.data, config_file, tokenizers[0])
    logs = open_logs(cfg, out, items)
    engine = load_engine(cfg, config_file, mesh, tokenizers)  # weights straight into their shardings
    write_text_atomic(out / "config.yaml", to_yaml(cfg))
    summaries = {}
    for key, method, run_cfg, delta in method_keys(cfg):
        decode_into(logs[key], engine, items, (key, method, run_cfg, delta))
        summaries[key] = summarize_log(logs[key].path, items, method, delta)
    versus_target(summaries)
    write_text_atomic(out / "summary.json", json.dumps(summaries, indent=2) + "\n")
    write_text_atomic(out / "summary.md", markdown_table(summaries))
    plot(summaries, out)
    return summaries


def markdown_table(summaries: dict) -> str:
    lines = ["| method | accuracy | draft acceptance | FLOPs vs target-only | target-only FLOPs / method | n | "
             "errors / non-finite rewards |", "|---|---|---|---|---|---|---|"]
    for key, s in summaries.items():
        ratio = s["flops_ratio_vs_target"]
        acc = f"{100 * s['accuracy']:.1f}" if "accuracy" in s else "–"
        acceptance = f"{100 * s['draft_acceptance_rate']:.1f}%" if "draft_acceptance_rate" in s else "–"
        lines.append(f"| {key} | {acc} | {acceptance} | {1 / ratio:.3f} | {ratio:.2f}x | {s['n_problems']} | "
                     f"{s.get('n_errors', 0)} / {s.get('n_nonfinite_rewards', 0)} |")
    return "\n".join(lines) + "\n"


def plot(summaries: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graded = {k: s for k, s in summaries.items() if "accuracy" in s}
    if not graded:
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    for key, s in graded.items():
        ax.scatter(1 / s["flops_ratio_vs_target"], 100 * s["accuracy"])
        ax.annotate(key, (1 / s["flops_ratio_vs_target"], 100 * s["accuracy"]), fontsize=8)
    ax.set_xlabel("useful FLOPs relative to target-only")
    ax.set_ylabel("accuracy (%)")
    fig.tight_layout()
    save_figure(fig, out / "accuracy_vs_flops.png")  # whole or not at all
    plt.close(fig)
    sweep = sorted(((s["delta"], s) for k, s in graded.items() if (k == "rsd" or k.startswith("rsd@"))
                    and s.get("delta") is not None), key=lambda pair: pair[0])
    if len(sweep) > 1:
        fig, ax = plt.subplots(figsize=(5, 4))
        deltas = [d for d, _ in sweep]
        ax.plot(deltas, [100 * s["accuracy"] for _, s in sweep], "o-", label="accuracy")
        ax.plot(deltas, [100 * s.get("draft_acceptance_rate", 0) for _, s in sweep], "s--", label="steps from draft")
        ax.set_xlabel("threshold δ")
        ax.set_ylabel("%")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, out / "accuracy_vs_delta.png")  # whole or not at all
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config")
    parser.add_argument("--out", help="results folder (default: the config's output); resumed when it holds the "
                                      "same run")
    parser.add_argument("--new-run", action="store_true", help="the folder holds a run: write into a fresh "
                                                                 "DIR-2, ... instead")
    parser.add_argument("--strict", action="store_true",
                        help="exit 3 when a record has an error or non-finite PRM rewards")
    add_config_flags(parser)
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    args = parser.parse_intermixed_args(argv)
    if describe_if_asked(args, RunConfig):
        return 0
    kept = "nothing was written yet"
    handling = contextlib.ExitStack()  # SIGINT / SIGTERM: one line, exit 130 / 143
    handling.enter_context(interruptible("rsd_jax.evaluate", lambda: kept))
    try:
        cfg = load_config(RunConfig, args.config, args.overrides)
        if print_config_if_asked(args, cfg):
            return 0
        out = args.out or cfg.output
        if not out:
            raise InputError("give --out DIR (or output: in the config)")
        # before any work; the folder's lock is held to the end: one writer per run folder (rsd_jax.run_lock)
        out, lock = claim_locked(check_output_dir(out), run_identity(cfg, args.config), args.new_run)
        handling.enter_context(lock)
        kept = f"the records written so far are kept in {out}; run the same command to resume"
        if cfg.data.sources:  # several sets, the paper's layout (rsd_jax.evaluate_sets)
            from rsd_jax.evaluate_sets import evaluate_sets

            table = evaluate_sets(cfg, out, args.config)
            text, summaries = table.markdown, table.flat()
        else:
            summaries = evaluate(cfg, out, args.config)
            text = markdown_table(summaries)
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    except (Interrupted, KeyboardInterrupt) as e:
        return exits.interrupted("rsd_jax.evaluate", e, kept)
    finally:
        handling.close()
    print(text, end="")
    return exits.health([w for key, s in summaries.items() if (w := health_warning(s, f"{key}: "))], args.strict)


if __name__ == "__main__":
    signals.leave(main())  # os._exit after an interruption (rsd_jax.signals)
