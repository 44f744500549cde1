"""Evaluate methods on a dataset: `python -m rsd_jax.evaluate --config FILE [key=value ...] --out DIR`.

For every method (rsd.methods; default rsd, target and draft) and every extra threshold (rsd.thresholds,
run as "rsd@δ"), each problem's record is appended to DIR/<method>.jsonl as soon as its batch finishes, so
an interrupted run resumes where it stopped. At the end: DIR/summary.json (per method: accuracy,
n_problems, draft_acceptance_rate, tokens by model, useful and executed FLOPs, flops_vs_target_only and its
inverse flops_ratio_vs_target, wall_seconds), DIR/summary.md (a table) and PNG plots (accuracy against FLOPs;
accuracy and acceptance against δ).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config, to_yaml
from rsd_jax.data.problems import load_items
from rsd_jax.errors import InputError, RSDError
from rsd_jax.loading import load_models, load_tokenizers, start_devices
from rsd_jax.methods import parse_method, run_method, summarize

DEFAULT_METHODS = ("rsd", "target", "draft")


def method_keys(cfg: RunConfig) -> list[tuple[str, str, RunConfig, float | None]]:
    """(key, method, config, δ) for each run: the methods (with their overrides), then "rsd@δ" per threshold."""
    runs = [(m, *parse_method(m, cfg), None) for m in (cfg.rsd.methods or DEFAULT_METHODS)]
    runs += [(f"rsd@{d:g}", "rsd", cfg, d) for d in cfg.rsd.thresholds]
    return runs


def read_records(path: Path) -> list[dict]:
    """Records already written (a torn last line from an interruption is dropped)."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(path.read_text(encoding="utf-8").splitlines()):
                raise InputError(f"{path} line {number} is not JSON; delete the file to start over") from None
    return records


def evaluate(cfg: RunConfig, out: Path, config_file: str | None) -> dict:
    mesh = start_devices(cfg.mesh)  # multi-host: joins the other processes before anything else uses JAX
    tokenizers = load_tokenizers(cfg, config_file)
    items = load_items(cfg.data, config_file, tokenizers[0])
    models = load_models(cfg, config_file, mesh, tokenizers)  # weights straight into their shardings
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    summaries = {}
    for key, method, run_cfg, delta in method_keys(cfg):
        path = out / f"{key}.jsonl"
        records = read_records(path)
        done = {r["uid"] for r in records}
        todo = [i for i in items if i.uid not in done]
        with path.open("a", encoding="utf-8") as sink, tqdm(total=len(items), initial=len(items) - len(todo),
                                                              desc=key) as bar:
            start = time.time()
            for batch in run_method(models, todo, method, run_cfg, delta=delta, mesh=mesh):
                seconds = time.time() - start
                for record in batch:
                    record["wall_seconds"] = seconds / len(batch)
                    sink.write(json.dumps(record) + "\n")
                sink.flush()
                records += batch
                bar.update(len(batch))
                start = time.time()
        order = {i.uid: n for n, i in enumerate(items)}
        records = sorted((r for r in records if r["uid"] in order), key=lambda r: order[r["uid"]])
        summary = summarize(records)
        summary["wall_seconds"] = sum(r.get("wall_seconds", 0.0) for r in records)
        if delta is not None or method == "rsd":
            summary["delta"] = records[0].get("delta") if records else delta
        summaries[key] = summary
    if "target" in summaries:  # measured target-only FLOPs, not the analytic estimate
        for s in summaries.values():
            s["flops_vs_target_only"] = s["useful_flops"] / summaries["target"]["useful_flops"]
            s["flops_ratio_vs_target"] = summaries["target"]["useful_flops"] / s["useful_flops"]
    (out / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    (out / "summary.md").write_text(markdown_table(summaries))
    plot(summaries, out)
    return summaries


def markdown_table(summaries: dict) -> str:
    lines = ["| method | accuracy | draft acceptance | FLOPs vs target-only | target-only FLOPs / method | n |",
             "|---|---|---|---|---|---|"]
    for key, s in summaries.items():
        ratio = s["flops_ratio_vs_target"]
        acc = f"{100 * s['accuracy']:.1f}" if "accuracy" in s else "–"
        acceptance = f"{100 * s['draft_acceptance_rate']:.1f}%" if "draft_acceptance_rate" in s else "–"
        lines.append(f"| {key} | {acc} | {acceptance} | {1 / ratio:.3f} | {ratio:.2f}x | {s['n_problems']} |")
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
    fig.savefig(out / "accuracy_vs_flops.png", dpi=120)
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
        fig.savefig(out / "accuracy_vs_delta.png", dpi=120)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config")
    parser.add_argument("--out", help="results folder (default: the config's output)")
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(RunConfig, args.config, args.overrides)
        out = args.out or cfg.output
        if not out:
            raise InputError("give --out DIR (or output: in the config)")
        summaries = evaluate(cfg, Path(out), args.config)
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(summaries), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
