"""The budget mode measured against fixed thresholds: does the theory's optimum spend the budget, and is it as
accurate as the best fixed δ with the same target share?

Inputs are decoded records (rsd_jax.runner's: steps with their source, `correct`). A budget run is RSD in the
calibrated budget mode at budget b (its (δ, q) from a calibration split); a sweep point is RSD at a fixed δ. The
target share of a run is the fraction of its steps the target wrote (steps, not tokens, as the budget counts them).
The fixed-δ accuracy at a budget run's share is read off the sweep by linear interpolation between the two sweep
points whose shares bracket it (the binary rule's share grows with δ); the best fixed δ at no more target share is
the most accurate sweep point whose share does not exceed the budget run's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class RunPoint:
    """One decoded run: its label, threshold (δ, q), target share of steps, accuracy and their sizes."""

    label: str
    delta: float
    q: float
    target_share: float
    accuracy: float
    steps: int
    problems: int

    @property
    def accuracy_sd(self) -> float:
        """Binomial standard error of the accuracy."""
        return math.sqrt(max(self.accuracy * (1 - self.accuracy), 0.0) / max(self.problems, 1))


def run_point(label: str, delta: float, q: float, records: Sequence[dict]) -> RunPoint:
    """The RunPoint of a run's records (each with steps [{source}] and a boolean `correct`)."""
    sources = [s["source"] for r in records for s in r["steps"]]
    graded = [bool(r["correct"]) for r in records if r.get("correct") is not None]
    return RunPoint(label=label, delta=float(delta), q=float(q),
                    target_share=float(np.mean([s == "target" for s in sources])) if sources else float("nan"),
                    accuracy=float(np.mean(graded)) if graded else float("nan"), steps=len(sources),
                    problems=len(records))


def interpolated_accuracy(sweep: Sequence[RunPoint], share: float) -> float:
    """The fixed-δ sweep's accuracy at target share `share` [], linear between the bracketing sweep points; NaN
    outside the sweep's range of shares."""
    points = sorted(sweep, key=lambda p: p.target_share)
    shares = np.array([p.target_share for p in points])
    if not points or share < shares[0] or share > shares[-1]:
        return float("nan")
    return float(np.interp(share, shares, [p.accuracy for p in points]))


def best_fixed_at_most(sweep: Sequence[RunPoint], share: float) -> RunPoint | None:
    """The most accurate sweep point whose target share is at most `share` (None if none is)."""
    fits = [p for p in sweep if p.target_share <= share + 1e-12]
    return max(fits, key=lambda p: (p.accuracy, -p.target_share)) if fits else None


def compare(budget_rows: Sequence[tuple[float, RunPoint]], sweep: Sequence[RunPoint]) -> list[dict]:
    """One row per budget run (budget, its point): its share against the budget (the steps' binomial sd for
    reference), its accuracy against the sweep's at the same share and the best fixed δ at no more share."""
    rows = []
    for budget, point in budget_rows:
        best = best_fixed_at_most(sweep, point.target_share)
        rows.append({
            "budget": budget, "label": point.label, "delta": point.delta, "q": point.q,
            "target_share": point.target_share,
            "share_sd": math.sqrt(budget * (1 - budget) / max(point.steps, 1)),
            "within_2_points": abs(point.target_share - budget) <= 0.02,
            "accuracy": point.accuracy, "accuracy_sd": point.accuracy_sd,
            "fixed_delta_accuracy_at_share": interpolated_accuracy(sweep, point.target_share),
            "best_fixed_at_most_share": dataclasses.asdict(best) if best else None,
            "steps": point.steps, "problems": point.problems,
        })
    return rows


def report(rows: Sequence[dict], sweep: Sequence[RunPoint], *, mu_target: float | None, calibration: str,
           calibration_problems: int, evaluated: str, calibrations: Sequence[dict] = ()) -> str:
    """The markdown report: the budget table, then the fixed-δ sweep it is read against."""
    mu = f"{mu_target:.4f}" if mu_target is not None else "not measured"
    lines = [f"# Budget mode: the theory's optimum against fixed thresholds\n",
             f"Calibrated on {calibration} ({calibration_problems} problems; μ_M = {mu}), evaluated on {evaluated}.",
             "δ_γ: the budget's randomised threshold alone; δ*: min(μ_M, δ_γ) (the budget may go unspent).\n",
             "| budget | rule | δ | q | target share | within 2 points | accuracy (± sd) | fixed δ at that share "
             "(interpolated) | best fixed δ at no more share | n |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = r["best_fixed_at_most_share"]
        best_text = (f"{100 * best['accuracy']:.2f} (δ = {best['delta']:g}, share {best['target_share']:.3f})"
                     if best else "none")
        lines.append(f"| {r['budget']:g} | {r['label']} | {r['delta']:.4f} | {r['q']:.3f} | {r['target_share']:.3f} "
                     f"(sd {r['share_sd']:.3f}) | {'yes' if r['within_2_points'] else 'no'} | "
                     f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_sd']:.2f} | "
                     f"{100 * r['fixed_delta_accuracy_at_share']:.2f} | {best_text} | {r['problems']} |")
    if calibrations:
        lines += ["\nThe target share RSD realised on the calibration split in each calibration round (the first "
                  "round's (δ, q) comes from draft-only contexts):\n"]
        lines += [f"- budget {c['budget']:g}, {c['rule']}: " + (", ".join(f"{v:.3f}" for v in c["calibration_shares"])
                                                                or "no rounds") for c in calibrations]
    lines += ["\nThe fixed-δ sweep:\n", "| δ | target share | accuracy | steps | n |", "|---|---|---|---|---|"]
    for p in sorted(sweep, key=lambda p: p.delta):
        lines.append(f"| {p.delta:g} | {p.target_share:.3f} | {100 * p.accuracy:.2f} | {p.steps} | {p.problems} |")
    return "\n".join(lines) + "\n"
