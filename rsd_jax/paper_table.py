"""A multi-set run's summary in the paper's layout (Table 2, Table B.1): one row per method, one column per set,
accuracy in percent (rounded to 0.1 as the official harness prints it) and the row's average over the sets, then
the row's FLOPs against target-only decoding and the draft's acceptance, pooled over every set's records.

With RSD at two or more fixed thresholds (rsd.delta and rsd.thresholds) a last row "RSD δ*" takes, per set, the
best of them: how the paper's δ* rows are made (Table 2 and the sweep of Table B.2: the threshold is chosen on the
test set itself, an oracle; the δ = 0.7 row is the fair one). Pure functions of the summaries and records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from rsd_jax.outputs import save_figure
from rsd_jax.summary import summarize

#: how the paper's tables head each set's column
SET_TITLES = {"math500": "MATH500", "gsm8k": "GSM8K", "gaokao2023en": "GaoKao", "olympiadbench": "Olymp.",
              "gpqa": "GPQA", "mmlu_stem": "MMLU", "minerva_math": "Minerva Math",
              "cn_middle_school": "CN Middle School 24", "college_math": "College Math"}
DELTA_STAR = "rsd@best"


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """One row: the run's key (its record files' name), the paper's name for it, its method and fixed δ."""

    key: str
    label: str
    method: str
    delta: float | None  # RSD at a fixed threshold: δ; otherwise None


@dataclasses.dataclass(frozen=True)
class Row:
    spec: RowSpec
    accuracy: dict[str, float | None]  # set -> percent
    average: float | None
    flops_vs_target: float | None  # pooled useful FLOPs / target-only's (measured when a target row exists)
    acceptance: float | None  # pooled share of steps the draft wrote
    acceptance_tokens: float | None  # pooled accepted draft tokens / draft tokens written (the official measure)
    problems: dict[str, int]
    errors: int
    chosen: dict[str, float] | None = None  # the δ* row: the δ each set's accuracy comes from


@dataclasses.dataclass(frozen=True)
class Table:
    sets: tuple[str, ...]
    rows: tuple[Row, ...]
    per_set: dict  # set -> key -> that set's summary (rsd_jax.summary.summarize, plus versus-target FLOPs)

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.spec.key == key)

    @property
    def markdown(self) -> str:
        return markdown(self)

    def as_json(self) -> dict:
        rows = {r.spec.key: {"label": r.spec.label, "method": r.spec.method, "delta": r.spec.delta,
                             "accuracy": r.accuracy, "average": r.average, "flops_vs_target_only": r.flops_vs_target,
                             "draft_acceptance_rate": r.acceptance, "draft_acceptance_rate_tokens": r.acceptance_tokens,
                             "n_problems": r.problems, "n_errors": r.errors,
                             **({"delta_per_set": r.chosen} if r.chosen is not None else {})} for r in self.rows}
        return {"sets": list(self.sets), "rows": rows, "per_set": self.per_set}

    def flat(self) -> dict[str, dict]:
        """'set/key' -> that set's summary (for the health warnings)."""
        return {f"{name}/{key}": s for name, by_key in self.per_set.items() for key, s in by_key.items()}


def label(method: str, cfg, delta: float | None) -> str:
    """The paper's name of a method with its options (rsd_jax.config.RSDConfig `cfg.rsd`)."""
    rsd = cfg.rsd
    if method == "target":
        return "Single (target)"
    if method == "draft":
        return "Single (draft)"
    if method == "speculative":
        return "SD"
    if method == "majority":
        return f"Majority (maj@{rsd.n})"
    if method == "best_of_n":
        return f"Best-of-N (N={rsd.n})"
    if method == "beam_search":
        return f"Beam search (bs={rsd.beam_width})"
    if rsd.budget is not None:
        return f"RSD (budget {rsd.budget:g}, calibrated on {rsd.calibration or 'the run'})"
    if rsd.weighting != "binary":
        return f"RSD ({rsd.weighting} ω)"
    return f"RSD δ={rsd.delta if delta is None else delta:g}"


def row_labels(runs: Sequence[tuple]) -> list[RowSpec]:
    """A RowSpec per run of rsd_jax.evaluate.method_keys ((key, method, config, δ) each)."""
    specs = []
    for key, method, cfg, delta in runs:
        fixed = method == "rsd" and cfg.rsd.budget is None and cfg.rsd.weighting == "binary"
        specs.append(RowSpec(key, label(method, cfg, delta), method,
                             (cfg.rsd.delta if delta is None else delta) if fixed else None))
    return specs


def _percent(summary: dict) -> float | None:
    return round(100 * summary["accuracy"], 1) if "accuracy" in summary else None


def _average(values: Sequence[float | None]) -> float | None:
    return round(float(np.mean(values)), 1) if values and all(v is not None for v in values) else None


def build(sets: Sequence[str], specs: Sequence[RowSpec], per_set: dict, records: dict) -> Table:
    """The table of `specs` over `sets`: per_set[set][key] the set's summary, records[(set, key)] its records."""
    pooled = {s.key: summarize([r for name in sets for r in records[(name, s.key)]]) for s in specs}
    target_flops = pooled["target"]["useful_flops"] if "target" in pooled else None
    rows = []
    for spec in specs:
        accuracy = {name: _percent(per_set[name][spec.key]) for name in sets}
        p = pooled[spec.key]
        if target_flops:
            vs_target = p["useful_flops"] / target_flops
        else:
            vs_target = p["flops_vs_target_only"] if np.isfinite(p["flops_vs_target_only"]) else None
        rows.append(Row(spec, accuracy, _average(list(accuracy.values())), vs_target,
                        p.get("draft_acceptance_rate"), p.get("draft_acceptance_rate_tokens"),
                        {name: per_set[name][spec.key]["n_problems"] for name in sets}, p["n_errors"]))
    fixed = [r for r in rows if r.spec.delta is not None]
    if len(fixed) >= 2:
        rows.append(best_threshold_row(sets, fixed))
    return Table(tuple(sets), tuple(rows), per_set)


def best_threshold_row(sets: Sequence[str], fixed: Sequence[Row]) -> Row:
    """Per set, the best accuracy over the fixed-threshold RSD rows (ties: the lower δ): the paper's δ*."""
    accuracy, chosen = {}, {}
    for name in sets:
        graded = [(r.accuracy[name], -r.spec.delta, r) for r in fixed if r.accuracy[name] is not None]
        if graded:
            best = max(graded, key=lambda t: (t[0], t[1]))[2]
            accuracy[name], chosen[name] = best.accuracy[name], best.spec.delta
        else:
            accuracy[name] = None
    spec = RowSpec(DELTA_STAR, "RSD δ* (best δ per set: an oracle)", "rsd", None)
    return Row(spec, accuracy, _average(list(accuracy.values())), None, None, None,
               dict(fixed[0].problems), 0, chosen)


def _cell(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(table: Table) -> str:
    """The table as markdown: accuracy (%) per set and the average, FLOPs against target-only (and how many times
    fewer), the draft's share of steps, problems per set, records with errors."""
    titles = [SET_TITLES.get(name, name) for name in table.sets]
    head = ["method", "run", *titles, "Avg", "FLOPs vs target-only", "target-only / method",
            "steps from draft", "problems", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.rows:
        ratio = None if not r.flops_vs_target else 1 / r.flops_vs_target
        problems = "/".join(str(r.problems[name]) for name in table.sets)
        cells = [r.spec.label, r.spec.key, *(_cell(r.accuracy[name], ".1f") for name in table.sets),
                 _cell(r.average, ".1f"), _cell(r.flops_vs_target, ".3f"), _cell(ratio, ".2f") + ("x" if ratio else ""),
                 _cell(None if r.acceptance is None else 100 * r.acceptance, ".1f") + ("%" if r.acceptance is not None
                                                                                      else ""),
                 problems, str(r.errors)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["δ* per set: " + ", ".join(f"{SET_TITLES.get(k, k)} {v:g}" for k, v in r.chosen.items())
             for r in table.rows if r.chosen]
    return "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)


def plot(table: Table, out: Path) -> None:
    """out/accuracy_vs_flops.png (each row's average accuracy against its FLOPs relative to target-only) and
    out/accuracy_by_set.png (each row's accuracy per set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in table.rows if r.average is not None and r.flops_vs_target]
    if points:
        fig, ax = plt.subplots(figsize=(5, 4))
        for r in points:
            ax.scatter(r.flops_vs_target, r.average)
            ax.annotate(r.spec.label, (r.flops_vs_target, r.average), fontsize=7)
        ax.set_xlabel("useful FLOPs relative to target-only")
        ax.set_ylabel(f"average accuracy over {len(table.sets)} sets (%)")
        fig.tight_layout()
        save_figure(fig, out / "accuracy_vs_flops.png")  # whole or not at all
        plt.close(fig)
    graded = [r for r in table.rows if any(v is not None for v in r.accuracy.values())]
    if graded:
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(table.sets) * max(1, len(graded)) / 4, 4))
        width = 0.8 / len(graded)
        for k, r in enumerate(graded):
            xs = np.arange(len(table.sets)) + k * width
            ax.bar(xs, [r.accuracy[s] or 0.0 for s in table.sets], width, label=r.spec.label)
        ax.set_xticks(np.arange(len(table.sets)) + 0.4 - width / 2)
        ax.set_xticklabels([SET_TITLES.get(s, s) for s in table.sets], fontsize=8)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        save_figure(fig, out / "accuracy_by_set.png")  # whole or not at all
        plt.close(fig)
