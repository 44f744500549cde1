"""The theory experiments' reports: each experiment's results as the markdown of its report.md."""

from __future__ import annotations

from rsd_jax.theory.analytic import Frontiers
from rsd_jax.theory.checker import PerfectPRM
from rsd_jax.theory.empirical import Empirical
from rsd_jax.theory.measured import EndToEnd


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


def _ci(e: dict, scale: float = 1.0, digits: int = 3) -> str:
    v, lo, hi = (scale * e[k] for k in ("value", "low", "high"))
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def empirical(result: Empirical, oracle: dict | None, figure_deltas) -> str:
    rows = result.sweep
    n_steps = sum(r["n_steps"] for r in rows)
    lines = ["# Empirical: the theory's prediction against the loop's measurement, on the embedded models", "",
             f"{result.n_problems} problems, sampled at temperature {result.temperature:g}; {n_steps} committed steps "
             f"over the sweep. Every figure is a value with its 95% bootstrap interval over problems "
             f"(rsd_jax.theory.bootstrap). μ̂_M(z): the mean PRM reward of {result.samples_per_context} target steps "
             "sampled at each rejected context "
             f"({result.target_spread['contexts']} contexts: {result.target_spread['distinct_steps'] or 0:.3f} "
             f"distinct steps of {result.samples_per_context} on average, their rewards' within-context standard "
             f"deviation {result.target_spread['reward_sd'] or 0:.4f}).", "",
             "| δ | rejected steps | acceptance measured | predicted (global) | reward measured | "
             "predicted per context | measured − predicted | predicted (global μ_M) | accuracy % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ctx = r.get("context_predicted_reward")
        diff = r.get("measured_minus_predicted")
        lines.append(f"| {r['delta']:g} | {r['n_rejected']} | {_ci(r['measured_acceptance'])} | "
                     f"{_ci(r['global_predicted_acceptance'])} | {_ci(r['measured_reward'])} | "
                     f"{_ci(ctx) if ctx else '–'} | {_ci(diff, digits=4) if diff else '–'} | "
                     f"{_ci(r['global_predicted_reward'])} | {_ci(r['accuracy'], 100, 1)} |")
    lines += ["", "At the rejections: the recorded target step's reward against μ̂_M(z) at the same contexts "
              "(the one-sample measurement against the k-sample estimate).", "",
              "| δ | rejected steps | target's step reward (measured) | μ̂_M(z) |", "|---|---|---|---|"]
    for r in rows:
        if "target_reward_at_rejections" in r and r["n_rejected"]:
            lines.append(f"| {r['delta']:g} | {r['n_rejected']} | {_ci(r['target_reward_at_rejections'])} | "
                         f"{_ci(r['mu_hat_at_rejections'])} |")
    lines += ["", "![predicted vs measured](predicted_vs_measured.png)", "",
              f"![reward distributions](reward_distributions.png)", ""]
    if result.levels[0] is not None:
        lines += ["## Accuracy by level (%)", "", "| δ | " + " | ".join(
            f"level {lv}" for lv in result.by_level()[rows[0]["delta"]]) + " |",
                  "|---|" + "---|" * len(result.by_level()[rows[0]["delta"]])]
        for delta, levels in result.by_level().items():
            lines.append(f"| {delta:g} | " + " | ".join(e.fmt(100, 1) for e in levels.values()) + " |")
        lines += ["", "![accuracy by level](accuracy_by_level.png)", ""]
    if oracle:
        lines += ["## The per-context oracle on step contexts", "",
                  f"{oracle['n_contexts']} step contexts of the draft's own solutions to {oracle['n_problems']} "
                  "problems; thresholds set on fit samples, every figure on held-out samples. The target's step "
                  f"scores above the draft's at the same context in {_ci(oracle['winning_rate'], 100, 1)}% of pairs.",
                  "", "| budget | rule | target rate | expected step reward | step correctness % |",
                  "|---|---|---|---|---|"]
        for row in oracle["budgets"]:
            for rule in ("global", "oracle"):
                e = row[rule]
                lines.append(f"| {row['budget']:g} | {e['rule']} | {_ci(e['target_rate'])} | {_ci(e['reward'])} | "
                             f"{_ci(e['correct'], 100, 1)} |")
            g = row["oracle_gain"]
            lines.append(f"| {row['budget']:g} | oracle − global | | {_ci(g['reward'], digits=4)} | "
                         f"{_ci(g['correct'], 100, 2)} |")
        lines += ["", "Slack budget (no limit on the target rate):", "",
                  "| rule | target rate | expected step reward | step correctness % |", "|---|---|---|---|"]
        for e in oracle["slack"]:
            lines.append(f"| {e['rule']} | {_ci(e['target_rate'])} | {_ci(e['reward'])} | "
                         f"{_ci(e['correct'], 100, 1)} |")
        g = oracle["slack_oracle_gain"]
        lines += [f"| oracle − global | | {_ci(g['reward'], digits=4)} | {_ci(g['correct'], 100, 2)} |", "",
                  "![oracle](oracle.png)", ""]
    return "\n".join(lines)


def end_to_end(result: EndToEnd) -> str:
    best = result.best_delta
    lines = ["# End to end: accuracy against target rate for each weighting function", "",
             f"{result.n_problems} problems; target rate and accuracy with 95% bootstrap intervals over problems. "
             f"The theory's slack optimum is δ = μ_M = {result.mu_target:.3f}; the "
             f"accuracy-best binary δ of the sweep is {best['delta']:g} ({100 * best['accuracy']:.1f}%)."
             if best else "", "",
             "| weighting | parameter | target rate | accuracy |", "|---|---|---|---|"]
    for kind, rows in result.curves.items():
        for r in rows:
            param = ", ".join(f"{k}={v:g}" for k, v in r.items() if k not in ("target_rate", "accuracy", "target_rate_ci", "accuracy_ci")) or "–"
            lines.append(f"| {kind} | {param} | {r['target_rate']:.3f} [{r['target_rate_ci'][0]:.3f}, "
                         f"{r['target_rate_ci'][1]:.3f}] | {100 * r['accuracy']:.1f} [{100 * r['accuracy_ci'][0]:.1f}, "
                         f"{100 * r['accuracy_ci'][1]:.1f}] |")
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


def free_judges(summary: dict, seed: int, draft: str | None) -> str:
    keeps = list(summary["judges"][0]["wrong_kept"]) if summary["judges"] else []
    lines = ["# Which judge comes free: the draft's own judges of its steps against the separate PRM", "",
             f"The draft ({draft}) on {summary['n_problems']} problems (seed {seed}), its greedy solutions up to "
             f"their first wrong step: {summary['n_steps']} steps, {summary['n_wrong']} wrong. AUROC with a 95% "
             "bootstrap interval over problems; 'wrong kept at k' is the share of the wrong steps a judge keeps at "
             "the threshold that keeps the share k of the correct ones (what RSD lets through at that acceptance "
             "of correct steps).", "",
             "| judge | step AUROC (95% CI) | " + " | ".join(f"wrong kept at {k}" for k in keeps) + " |",
             "|---|---|" + "---|" * len(keeps)]
    for row in summary["judges"]:
        lines.append(f"| {row['judge']} | {_ci(row['auroc'], digits=4)} | "
                     + " | ".join(f"{100 * row['wrong_kept'][k]:.1f}%" for k in keeps) + " |")
    return "\n".join(lines + [""])
