"""The theory experiments' figures, each drawn from an experiment's results into a PNG file."""

from __future__ import annotations

from pathlib import Path

from rsd_jax.theory.analytic import FAMILIES, RATES, Frontiers, cell_name
from rsd_jax.theory.measured import Empirical, EndToEnd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frontiers(result: Frontiers, path: Path) -> None:
    """One panel per (μ_M, distribution): the threshold frontier and each family's, reward against target rate."""
    plt = _pyplot()
    rows, cols = len(result.mu_target), len(result.distributions)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for i, mu in enumerate(result.mu_target):
        for j, name in enumerate(result.distributions):
            cell = cell_name(name, mu)
            ax = axes[i, j]
            ax.plot(RATES, result.threshold_curves[cell], "k-", lw=2, label="threshold (optimal)")
            for kind in FAMILIES:
                r = result.cases[cell][kind]
                style = "-" if len(r["target_rate"]) > 1 else "o"
                ax.plot(r["target_rate"], r["expected_reward"], style, ms=5, label=kind)
            ax.set_title(f"{name}, μ_M={mu:g}", fontsize=9)
            ax.set_xlabel("target rate ν")
            ax.set_ylabel("E_RSD[r]")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def predicted_vs_measured(result: Empirical, path: Path) -> None:
    """Draft acceptance and mean step reward against δ, predicted and measured."""
    plt = _pyplot()
    rows = result.sweep
    fig, (acceptance, reward) = plt.subplots(1, 2, figsize=(9, 3.5))
    deltas = [r["delta"] for r in rows]
    acceptance.plot(deltas, [r["predicted_acceptance"] for r in rows], "o-", label="predicted")
    acceptance.plot(deltas, [r["measured_acceptance"] for r in rows], "s--", label="measured")
    acceptance.set_xlabel("δ"), acceptance.set_ylabel("draft acceptance"), acceptance.legend()
    reward.plot(deltas, [r["predicted_reward"] for r in rows], "o-", label="predicted")
    reward.plot(deltas, [r["measured_reward"] for r in rows], "s--", label="measured")
    reward.axvline(result.mu_target, color="gray", lw=1, ls=":", label="δ = μ_M")
    reward.set_xlabel("δ"), reward.set_ylabel("mean step reward"), reward.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_vs_target_rate(result: EndToEnd, path: Path) -> None:
    """Accuracy against the fraction of steps the target writes, one curve per weighting family."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for kind, rows in result.curves.items():
        rows = sorted(rows, key=lambda r: r["target_rate"])
        ax.plot([r["target_rate"] for r in rows], [100 * r["accuracy"] for r in rows],
                "o-" if len(rows) > 1 else "D", label=kind)
    ax.set_xlabel("fraction of steps written by the target")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
