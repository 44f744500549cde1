"""The theory experiments' reports: each experiment's results as the markdown of its report.md."""

from __future__ import annotations

from rsd_jax.theory.analytic import Frontiers
from rsd_jax.theory.checker import PerfectPRM
from rsd_jax.theory.measured import Empirical, EndToEnd


def analytic(result: Frontiers) -> str:
    lines = [
        "# Analytic: the threshold frontier against every weighting family", "",
        f"Distributions: {', '.join(result.distributions)}; μ_M in {list(result.mu_target)}. For every family and "
        "every point of its parameter sweep, the optimal threshold rule at the same target rate gives at least the "
        f"same expected reward: the largest excess of any family over the threshold is "
        f"{result.max_excess_over_threshold:.2e} (rounding).", "",
        f"At the slack optimum δ = μ_M, E_RSD[r] − max(μ_m, μ_M) >= {result.min_slack_bound_margin:.4f} in every "
        "case (the bound holds).", "",
        "![frontiers](frontiers.png)", ""]
    return "\n".join(lines)


def empirical(result: Empirical) -> str:
    lines = ["# Empirical: predicted against measured, on the embedded models", "",
             f"{result.n_problems} problems; {result.n_draft_steps} draft steps; μ_m = {result.mu_draft:.3f}, "
             f"μ_M = {result.mu_target:.3f}.", "",
             "| δ | acceptance predicted | measured | mean reward predicted | measured | accuracy |",
             "|---|---|---|---|---|---|"]
    for r in result.sweep:
        acc = "–" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}"
        lines.append(f"| {r['delta']:g} | {r['predicted_acceptance']:.3f} | {r['measured_acceptance']:.3f} | "
                     f"{r['predicted_reward']:.3f} | {r['measured_reward']:.3f} | {acc} |")
    lines += ["", "Predictions use the draft's reward distribution when it writes every step and the target's "
              "mean reward μ_M when it writes every step. In RSD the target writes exactly the steps the draft "
              "failed (harder ones, with lower rewards than μ_M), and each rejection changes the contexts that "
              "follow: acceptance follows the prediction closely, the committed steps' mean reward falls below it.",
              "",
              "## Per-context (oracle) thresholds", "",
              "A per-problem δ_γ(z) is the budget quantile of that problem's own draft rewards (an oracle); with "
              "4-6 steps per problem it forces every problem to hand the same share of its steps to the target, "
              "easy or hard, which is why one global δ can do better here.", "",
              "| target-rate budget | global δ accuracy | per-problem δ accuracy | global E[r] | per-problem E[r] |",
              "|---|---|---|---|---|"]
    for r in result.per_context:
        lines.append(f"| {r['budget']:g} | {100 * r['global_accuracy']:.1f} | {100 * r['oracle_accuracy']:.1f} | "
                     f"{r['global_expected_reward']:.3f} | {r['oracle_expected_reward']:.3f} |")
    lines += ["", "![predicted vs measured](predicted_vs_measured.png)", ""]
    return "\n".join(lines)


def end_to_end(result: EndToEnd) -> str:
    best = result.best_delta
    lines = ["# End to end: accuracy against target rate for each weighting function", "",
             f"{result.n_problems} problems. The theory's slack optimum is δ = μ_M = {result.mu_target:.3f}; the "
             f"accuracy-best binary δ of the sweep is {best['delta']:g} ({100 * best['accuracy']:.1f}%)."
             if best else "", "",
             "| weighting | parameter | target rate | accuracy |", "|---|---|---|---|"]
    for kind, rows in result.curves.items():
        for r in rows:
            param = ", ".join(f"{k}={v:g}" for k, v in r.items() if k not in ("target_rate", "accuracy")) or "–"
            lines.append(f"| {kind} | {param} | {r['target_rate']:.3f} | {100 * r['accuracy']:.1f} |")
    lines += ["", "![accuracy vs target rate](accuracy_vs_target_rate.png)", ""]
    return "\n".join(lines)


def perfect_prm(result: PerfectPRM, seed: int) -> str:
    lines = ["# RSD with a perfect PRM against the learned PRM", "",
             f"{result.n_problems} problems (seed {seed}). The perfect PRM accepts a draft step iff the exact checker "
             "says it is correct; its FLOPs are the lower bound of RSD's for this draft and target. The gap to the "
             "learned PRM's rows is what its errors cost: correct steps rejected (target FLOPs) and wrong steps "
             "accepted (accuracy).", "",
             "| PRM | δ | accuracy | draft acceptance | FLOPs vs target-only | draft | PRM | target | "
             "problems with a target step |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        by_model, delta = r["flops_by_model"], "–" if r["delta"] is None else f"{r['delta']:g}"
        lines.append(f"| {r['prm']} | {delta} | "
                     f"{100 * r['accuracy']:.1f} | {100 * r['draft_acceptance']:.1f}% | "
                     f"{r['flops_vs_target_only']:.3f} | {by_model['draft']:.3f} | {by_model['prm']:.3f} | "
                     f"{by_model['target']:.3f} | "
                     f"{100 * r['problems_with_target_steps']:.1f}% |")
    lines.append("")
    return "\n".join(lines)


def prm_errors(summary: dict, seed: int) -> str:
    deltas = list(summary["wrong_kept"])
    n_wrong = sum(g["n"] for g in summary["by_error"] if g["error"] != "correct")
    lines = ["# What the PRM lets through: its rewards of the draft's steps, by what is wrong with them", "",
             f"{summary['n_problems']} problems (seed {seed}), the draft's greedy solutions up to their first "
             f"wrong step: {summary['n_steps']} steps, {n_wrong} wrong; step AUROC {summary['auroc']:.4f}. "
             "A row's 'kept at δ' is the share of its steps whose reward is at least δ: for correct steps what RSD "
             "keeps, for wrong ones the slips it lets through.", "",
             "| step | wrong | n | mean reward | " + " | ".join(f"kept at {d}" for d in deltas) + " |",
             "|---|---|---|---|" + "---|" * len(deltas)]
    for r in summary["by_error"]:
        lines.append(f"| {r['step']} | {r['error']} | {r['n']} | {r['mean_reward']:.3f} | "
                     + " | ".join(f"{100 * r['kept'][d]:.1f}%" for d in deltas) + " |")
    lines += ["", "| δ | " + " | ".join(deltas) + " |", "|---|" + "---|" * len(deltas),
              "| wrong steps kept | " + " | ".join(str(summary["wrong_kept"][d]) for d in deltas) + " |",
              "| correct steps rejected | " + " | ".join(f"{100 * summary['correct_rejected'][d]:.1f}%"
                                                       for d in deltas) + " |", ""]
    return "\n".join(lines)
