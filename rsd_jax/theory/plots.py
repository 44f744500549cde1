"""The theory experiments' figures, each drawn from an experiment's results into a PNG file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsd_jax.outputs import save_figure
from rsd_jax.theory.analytic import FAMILIES, RATES, Frontiers, cell_name
from rsd_jax.theory.empirical import DRAFT_ONLY, TARGET_ONLY, Empirical, reward_histograms
from rsd_jax.theory.empirical import accuracy_by_level as levels_of
from rsd_jax.theory.measured import EndToEnd


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
    save_figure(fig, path, dpi=110)  # whole or not at all
    plt.close(fig)


def _errorbar(ax, x, estimates: list[dict], fmt: str, label: str, scale: float = 1.0, **kw) -> None:
    """Points with their bootstrap intervals (Estimate dicts)."""
    y = np.array([scale * e["value"] for e in estimates])
    err = np.array([[scale * (e["value"] - e["low"]) for e in estimates],
                    [scale * (e["high"] - e["value"]) for e in estimates]])
    ax.errorbar(x, y, yerr=np.nan_to_num(err), fmt=fmt, capsize=3, label=label, **kw)


def predicted_vs_measured(result: Empirical, path: Path) -> None:
    """Draft acceptance and mean committed step reward against δ: measured, predicted per context (μ̂_M(z) at the
    rejections) and globally (draft's and target's own solutions), each with its 95% interval."""
    plt = _pyplot()
    rows = result.sweep
    fig, (acceptance, reward) = plt.subplots(1, 2, figsize=(10, 3.8))
    deltas = np.array([r["delta"] for r in rows])
    _errorbar(acceptance, deltas, [r["measured_acceptance"] for r in rows], "s", "measured")
    _errorbar(acceptance, deltas + 0.01, [r["global_predicted_acceptance"] for r in rows], "o--",
              "predicted (global)")
    acceptance.set_xlabel("δ"), acceptance.set_ylabel("draft acceptance"), acceptance.legend(fontsize=8)
    _errorbar(reward, deltas, [r["measured_reward"] for r in rows], "s", "measured")
    inner = [r for r in rows if "context_predicted_reward" in r]
    _errorbar(reward, np.array([r["delta"] for r in inner]) - 0.01, [r["context_predicted_reward"] for r in inner],
              "^", "predicted per context (μ̂_M(z))")
    _errorbar(reward, deltas + 0.01, [r["global_predicted_reward"] for r in rows], "o--", "predicted (global μ_M)")
    reward.set_xlabel("δ"), reward.set_ylabel("mean committed step reward"), reward.legend(fontsize=8)
    fig.suptitle(f"{result.n_problems} problems, temperature {result.temperature:g}; 95% bootstrap intervals",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)  # whole or not at all
    plt.close(fig)


def reward_distributions(result: Empirical, contexts: dict | None, delta: float, path: Path) -> None:
    """Fig. 3-style: at δ, the draft's rewards of its kept and its rejected steps and the target's rewards of the
    steps it wrote instead; and (contexts: the oracle's eval samples) draft against target at the same contexts."""
    plt = _pyplot()
    bins = np.linspace(0, 1, 26)
    run = result.run_at(delta)
    hist = reward_histograms(run, bins)
    panels = 2 if contexts else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    ax = axes[0, 0]
    for key, label in (("draft_kept", "draft, kept"), ("draft_rejected", "draft, rejected"),
                       ("target_at_rejections", "target, at the rejections")):
        ax.stairs(hist[key], bins, label=f"{label} ({hist[key].sum()})", fill=key != "target_at_rejections",
                  alpha=0.5 if key != "target_at_rejections" else 1.0)
    ax.set_yscale("log"), ax.set_xlabel("PRM reward of the step"), ax.set_ylabel("steps")
    ax.set_title(f"RSD at δ = {run.delta:g}", fontsize=9), ax.legend(fontsize=8)
    if contexts:
        ax = axes[0, 1]
        for key, label in (("draft", "draft"), ("target", "target")):
            ax.stairs(np.histogram(contexts[key], bins)[0], bins, label=label, fill=key == "draft", alpha=0.6)
        win = contexts["winning_rate"]
        ax.set_yscale("log"), ax.set_xlabel("PRM reward of the step"), ax.set_ylabel("steps")
        ax.set_title(f"the same contexts: target's step scores higher {100 * win['value']:.1f}% "
                     f"[{100 * win['low']:.1f}, {100 * win['high']:.1f}]", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)  # whole or not at all
    plt.close(fig)


def accuracy_by_level(result: Empirical, deltas: list[float], path: Path) -> None:
    """Fig. B.1-style: accuracy by difficulty level for the draft alone (δ = 0), RSD at `deltas` and the target
    alone (δ = 1.01), and the share of problems the draft solved alone, with 95% intervals."""
    plt = _pyplot()
    fig, (acc_ax, alone_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    runs = [result.run_at(d) for d in (DRAFT_ONLY, *deltas, TARGET_ONLY)]
    for n, run in enumerate(runs):
        name = ("draft alone" if run.delta == DRAFT_ONLY else "target alone" if run.delta == TARGET_ONLY
                else f"RSD δ = {run.delta:g}")
        by_level = levels_of(result.levels, run.correct)
        x = np.array(list(by_level), float) + 0.06 * (n - len(runs) / 2)
        _errorbar(acc_ax, x, [e.as_dict() for e in by_level.values()], "o-", name, scale=100)
        if DRAFT_ONLY < run.delta < TARGET_ONLY:
            alone = levels_of(result.levels, np.array([k.all() for k in run.kept]))
            _errorbar(alone_ax, x, [e.as_dict() for e in alone.values()], "o-", name, scale=100)
    levels = sorted({lv for lv in result.levels})
    for ax in (acc_ax, alone_ax):
        ax.set_xticks(levels)
    acc_ax.set_xlabel("level (operations)"), acc_ax.set_ylabel("accuracy (%)"), acc_ax.legend(fontsize=8)
    alone_ax.set_xlabel("level (operations)"), alone_ax.set_ylabel("solved with no target step (%)")
    alone_ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)  # whole or not at all
    plt.close(fig)


def oracle_frontier(curves: dict, comparison: dict, path: Path) -> None:
    """On held-out samples: expected committed reward and step correctness against the target rate for one
    global δ and for the per-context oracle μ̂_M(z) − λ; and the oracle's gain over the global δ at the budgets
    (paired by problem, 95% intervals), in points (reward x 100, correctness in %)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, key, label in ((axes[0], "reward", "expected step reward"), (axes[1], "correct", "step correctness")):
        for name, c in curves.items():
            ax.plot(c["target_rate"], c[key], "-", label=name)
        ax.set_xlabel("target rate (held-out samples)"), ax.set_ylabel(label), ax.legend(fontsize=8)
    budgets = np.array([row["budget"] for row in comparison["budgets"]])
    for key, fmt, label, shift in (("reward", "o", "reward (x 100)", -0.004), ("correct", "s", "correctness (%)",
                                                                                0.004)):
        _errorbar(axes[2], budgets + shift, [row["oracle_gain"][key] for row in comparison["budgets"]], fmt, label,
                  scale=100)
    axes[2].axhline(0, color="gray", lw=1)
    axes[2].set_xlabel("target-rate budget"), axes[2].set_ylabel("oracle − global δ (points)")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{comparison['n_contexts']} step contexts of {comparison['n_problems']} problems", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)  # whole or not at all
    plt.close(fig)


def accuracy_vs_target_rate(result: EndToEnd, path: Path) -> None:
    """Accuracy against the fraction of steps the target writes, one curve per weighting family."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for kind, rows in result.curves.items():
        rows = sorted(rows, key=lambda r: r["target_rate"])
        x, y = np.array([r["target_rate"] for r in rows]), 100 * np.array([r["accuracy"] for r in rows])
        yerr = np.array([[100 * r["accuracy"] - 100 * r["accuracy_ci"][0] for r in rows],
                         [100 * r["accuracy_ci"][1] - 100 * r["accuracy"] for r in rows]])
        xerr = np.array([[r["target_rate"] - r["target_rate_ci"][0] for r in rows],
                         [r["target_rate_ci"][1] - r["target_rate"] for r in rows]])
        ax.errorbar(x, y, yerr=yerr, xerr=xerr, fmt="o-" if len(rows) > 1 else "D", capsize=2, label=kind)
    ax.set_title(f"{result.n_problems} problems; 95% bootstrap intervals", fontsize=9)
    ax.set_xlabel("fraction of steps written by the target")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)  # whole or not at all
    plt.close(fig)
