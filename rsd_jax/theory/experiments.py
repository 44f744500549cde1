"""The theory experiments: analytic frontiers, predicted against measured RSD, and accuracy per weighting.

analytic     Beta and discrete draft-reward distributions: the reward / target-rate frontier of every Table-1
             family against the optimal (randomised threshold) frontier, at every budget.
empirical    the embedded models' draft and target step rewards: acceptance and expected reward per δ as the
             library predicts them, next to what RSD measures; and how much a per-problem (oracle) threshold
             δ_γ(z) gains over one global δ at the same budgets.
end_to_end   accuracy against target rate for each weighting family (the paper's Figures 5 and 6), with the
             theory's δ (= μ_M, the slack optimum) next to the accuracy-best δ.
perfect_prm  the embedded task only: RSD with the exact step checker as the PRM (the lower bound on RSD's
             FLOPs for this draft and target) next to the learned PRM's sweep over δ.
prm_errors   the embedded task only: the learned PRM's rewards of the draft's own steps, by step and by what
             the exact checker finds wrong: which slips each δ lets through, which correct steps it rejects.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rsd_jax.api import generate as _generate
from rsd_jax.engine import Engine, RSDModels
from rsd_jax.methods import RSD
from rsd_jax.config import TheoryConfig
from rsd_jax.decoding.acceptance import calibrate_threshold
from rsd_jax.data import arith
from rsd_jax.errors import InputError
from rsd_jax.runner import run_method, summarize
from rsd_jax.models.model import full_forward
from rsd_jax.theory import mixture as th
from rsd_jax.theory import perfect_prm as perfect
from rsd_jax.tokenizer import prm_prompt_ids, prm_step_ids

FAMILIES = ("binary", "constant", "logistic", "clipping", "sigmoidal")
_HEALTH = {"n_results": 0, "n_errors": 0, "n_nonfinite_rewards": 0}  # over every decode of the experiment


def reset_health() -> None:
    _HEALTH.update(n_results=0, n_errors=0, n_nonfinite_rewards=0)


def health() -> dict[str, int]:
    """How many decoded results the experiment used, how many carried an error (non-finite logits or rewards)
    and how many had a non-finite step reward: the summary reports them so that a NaN is never silent."""
    return dict(_HEALTH)


def _tally(errors: list, rewards: list[list[float]]) -> None:
    _HEALTH["n_results"] += len(errors)
    _HEALTH["n_errors"] += sum(1 for e in errors if e)
    _HEALTH["n_nonfinite_rewards"] += sum(1 for r in rewards if not np.all(np.isfinite(r)))


def generate(*args, **kwargs):
    """rsd_jax.api.generate, each result tallied in health()."""
    results = _generate(*args, **kwargs)
    _tally([r.error for r in results], [[s.reward for s in r.steps] for r in results])
    return results


def _decoded(engine: Engine, items, run, delta: float) -> list[dict]:
    """RSD's records of `items` (run_method), each tallied in health()."""
    records = [r for chunk in run_method(engine, items, "rsd", run, delta=delta) for r in chunk]
    _tally([r["error"] for r in records], [[s["reward"] for s in r["steps"]] for r in records])
    return records


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------------------ analytic
def frontier_check(rewards: np.ndarray, probs: np.ndarray, mu: float) -> dict[str, Any]:
    """Each family's frontier and the threshold frontier at the same target rates; the largest amount by
    which a family beats the threshold (<= 0 up to rounding: the threshold is optimal)."""
    out = {}
    for kind in FAMILIES:
        rates, values = th.frontier(kind, rewards, probs, mu)
        best = th.threshold_frontier(rewards, probs, mu, rates)
        out[kind] = {"target_rate": rates.tolist(), "expected_reward": values.tolist(),
                     "threshold_reward": best.tolist(), "max_excess_over_threshold": float(np.max(values - best))}
    delta, value = th.slack_optimum(rewards, probs, mu)
    out["slack_optimum"] = {"delta": delta, "expected_reward": value, "mu_draft": th.mean_reward(rewards, probs),
                            "mu_target": mu}
    return out


def analytic(cfg: TheoryConfig, out: Path) -> dict:
    cases = {f"beta({a:g},{b:g})": th.beta_distribution(a, b, 200) for a, b in cfg.beta}
    probs = np.asarray(cfg.discrete_probs, np.float64)
    cases["discrete"] = (np.asarray(cfg.discrete_rewards, np.float64), probs / probs.sum())
    summary = {}
    plt = _plt()
    fig, axes = plt.subplots(len(cfg.mu_target), len(cases), figsize=(3.2 * len(cases), 3 * len(cfg.mu_target)),
                             squeeze=False)
    grid = np.linspace(0, 1, 101)
    for i, mu in enumerate(cfg.mu_target):
        for j, (name, (rewards, p)) in enumerate(cases.items()):
            result = frontier_check(rewards, p, mu)
            summary[f"{name}, mu_M={mu:g}"] = result
            ax = axes[i, j]
            ax.plot(grid, th.threshold_frontier(rewards, p, mu, grid), "k-", lw=2, label="threshold (optimal)")
            for kind in FAMILIES:
                r = result[kind]
                style = "-" if len(r["target_rate"]) > 1 else "o"
                ax.plot(r["target_rate"], r["expected_reward"], style, ms=5, label=kind)
            ax.set_title(f"{name}, μ_M={mu:g}", fontsize=9)
            ax.set_xlabel("target rate ν")
            ax.set_ylabel("E_RSD[r]")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "frontiers.png", dpi=110)
    plt.close(fig)
    worst = max(v[k]["max_excess_over_threshold"] for v in summary.values() for k in FAMILIES)
    bound = min(v["slack_optimum"]["expected_reward"] - max(v["slack_optimum"]["mu_draft"], mu)
                for (k, v), mu in zip(summary.items(), [m for m in cfg.mu_target for _ in cases]))
    report = [
        "# Analytic: the threshold frontier against every weighting family", "",
        f"Distributions: {', '.join(cases)}; μ_M in {list(cfg.mu_target)}. For every family and every point of "
        "its parameter sweep, the optimal threshold rule at the same target rate gives at least the same expected "
        f"reward: the largest excess of any family over the threshold is {worst:.2e} (rounding).", "",
        f"At the slack optimum δ = μ_M, E_RSD[r] − max(μ_m, μ_M) >= {bound:.4f} in every case (the bound holds).", "",
        "![frontiers](frontiers.png)", ""]
    (out / "report.md").write_text("\n".join(report))
    return {"cases": summary, "max_excess_over_threshold": worst, "min_slack_bound_margin": bound}


# ------------------------------------------------------------------------------------------------ empirical
def step_rewards(engine: Engine, prompts: list[str], questions: list[str], cfg: TheoryConfig,
                 writer: str) -> list[np.ndarray]:
    """Per problem, the PRM rewards of the steps `writer` ("draft" or "target") writes when it writes them all."""
    m = engine if writer == "draft" else dataclasses.replace(engine, draft=engine.target)
    spec = cfg.run.decoding.spec()
    rewards = []
    bs = cfg.run.decoding.batch_size
    for s in range(0, len(prompts), bs):
        res = generate(m, prompts[s:s + bs], questions=questions[s:s + bs], method=RSD(delta=0.0), decoding=spec,
                       pad_batch_to=bs)
        rewards += [np.array([st.reward for st in r.steps]) for r in res]
    return rewards


def committed_rewards(models: RSDModels, questions: list[str], step_texts: list[list[str]]) -> list[np.ndarray]:
    """The PRM's reward of every committed step, scored from scratch on its view of the final solution."""
    tok = models.prm_tok
    views, marks = [], []
    for q, steps in zip(questions, step_texts):
        ids, pos = prm_prompt_ids(tok, q), []
        for text in steps:
            ids += prm_step_ids(tok, text, models.delimiter)
            pos.append(len(ids) - 1)
        views.append(ids)
        marks.append(pos)
    width = max(map(len, views))
    buf = np.zeros((len(views), width), np.int32)
    for i, v in enumerate(views):
        buf[i, :len(v)] = v
    _, hidden = jax.jit(full_forward)(models.prm, jnp.asarray(buf))
    rewards = np.asarray(models.prm.rewards(hidden))
    return [rewards[i, pos] for i, pos in enumerate(marks)]


def empirical(cfg: TheoryConfig, engine: Engine, items, out: Path) -> dict:
    models = engine.models
    prompts, questions = [i.prompt for i in items], [i.question for i in items]
    draft = step_rewards(engine, prompts, questions, cfg, "draft")
    target = step_rewards(engine, prompts, questions, cfg, "target")
    r_all = np.concatenate(draft)
    mu_target = float(np.concatenate(target).mean())
    probs = np.full(len(r_all), 1 / len(r_all))
    spec = cfg.run.decoding.spec()
    rows = []
    for delta in cfg.deltas:
        omega = th.weighting_values("binary", r_all, delta=delta)
        results = generate(engine, prompts, questions=questions, method=RSD(delta=delta), decoding=spec)
        steps = [[s.text for s in r.steps] for r in results]
        measured = np.concatenate(committed_rewards(models, questions, steps))
        sources = [s.source for r in results for s in r.steps]
        rows.append({"delta": delta, "predicted_acceptance": th.acceptance_rate(omega, probs),
                     "measured_acceptance": float(np.mean([s == "draft" for s in sources])),
                     "predicted_reward": th.expected_reward(r_all, probs, omega, mu_target),
                     "measured_reward": float(measured.mean()),
                     "accuracy": float(np.mean([i.grade(r.text) for i, r in zip(items, results)]))
                     if items[0].grade else None})
    per_context = per_context_gain(engine, items, draft, mu_target, cfg)
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    d = [r["delta"] for r in rows]
    a1.plot(d, [r["predicted_acceptance"] for r in rows], "o-", label="predicted")
    a1.plot(d, [r["measured_acceptance"] for r in rows], "s--", label="measured")
    a1.set_xlabel("δ"), a1.set_ylabel("draft acceptance"), a1.legend()
    a2.plot(d, [r["predicted_reward"] for r in rows], "o-", label="predicted")
    a2.plot(d, [r["measured_reward"] for r in rows], "s--", label="measured")
    a2.axvline(mu_target, color="gray", lw=1, ls=":", label="δ = μ_M")
    a2.set_xlabel("δ"), a2.set_ylabel("mean step reward"), a2.legend()
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_measured.png", dpi=110)
    plt.close(fig)
    lines = ["# Empirical: predicted against measured, on the embedded models", "",
             f"{len(items)} problems; {len(r_all)} draft steps; μ_m = {r_all.mean():.3f}, μ_M = {mu_target:.3f}.", "",
             "| δ | acceptance predicted | measured | mean reward predicted | measured | accuracy |",
             "|---|---|---|---|---|---|"]
    for r in rows:
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
    for r in per_context:
        lines.append(f"| {r['budget']:g} | {100 * r['global_accuracy']:.1f} | {100 * r['oracle_accuracy']:.1f} | "
                     f"{r['global_expected_reward']:.3f} | {r['oracle_expected_reward']:.3f} |")
    lines += ["", "![predicted vs measured](predicted_vs_measured.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return {"mu_draft": float(r_all.mean()), "mu_target": mu_target, "sweep": rows, "per_context": per_context}


def per_context_gain(engine: Engine, items, draft: list[np.ndarray], mu_target: float,
                     cfg: TheoryConfig) -> list[dict]:
    """At each budget: one global δ (quantile of all draft rewards) against a per-problem δ_γ(z) (quantile of
    that problem's own draft rewards: an oracle, it needs the problem's rewards in advance)."""
    spec = cfg.run.decoding.spec()
    prompts, questions = [i.prompt for i in items], [i.question for i in items]
    rows = []
    for budget in cfg.budgets:
        global_delta = calibrate_threshold(np.concatenate(draft), budget)
        per_problem = [calibrate_threshold(r, budget) if len(r) else global_delta for r in draft]
        per_problem = [min(d, 1.01) for d in per_problem]  # +inf (reject all) as a finite threshold
        expected = {}
        for name, deltas in (("global", [global_delta] * len(draft)), ("oracle", per_problem)):
            values = [th.expected_reward(r, np.full(len(r), 1 / len(r)), th.weighting_values("binary", r, delta=d),
                                         mu_target) for r, d in zip(draft, deltas) if len(r)]
            expected[name] = float(np.mean(values))
        acc = {}
        for name, deltas in (("global", float(global_delta)), ("oracle", per_problem)):
            results = generate(engine, prompts, questions=questions, method=RSD(delta=deltas), decoding=spec)
            acc[name] = float(np.mean([i.grade(r.text) for i, r in zip(items, results)]))
        rows.append({"budget": budget, "global_delta": float(global_delta), "global_accuracy": acc["global"],
                     "oracle_accuracy": acc["oracle"], "global_expected_reward": expected["global"],
                     "oracle_expected_reward": expected["oracle"]})
    return rows


# ------------------------------------------------------------------------------------------------ end to end
def family_sweep(kind: str, cfg: TheoryConfig) -> list[dict[str, float]]:
    if kind in ("binary", "logistic"):
        return [{"delta": d} for d in cfg.deltas]
    if kind == "constant":
        return [{"p": p} for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return [{}]


def end_to_end(cfg: TheoryConfig, engine: Engine, items, out: Path) -> dict:
    prompts, questions = [i.prompt for i in items], [i.question for i in items]
    target = step_rewards(engine, prompts, questions, cfg, "target")
    mu_target = float(np.concatenate(target).mean())
    curves: dict[str, list[dict]] = {}
    for kind in cfg.weightings:
        curves[kind] = []
        for params in family_sweep(kind, cfg):
            results = generate(engine, prompts, questions=questions, method=RSD(weighting=kind, **params),
                               decoding=cfg.run.decoding.spec(), seed=cfg.run.decoding.seed)
            sources = [s.source for r in results for s in r.steps]
            curves[kind].append({**params, "target_rate": float(np.mean([s == "target" for s in sources])),
                                 "accuracy": float(np.mean([i.grade(r.text) for i, r in zip(items, results)]))})
    binary = curves.get("binary", [])
    best = max(binary, key=lambda r: r["accuracy"]) if binary else None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for kind, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["target_rate"])
        ax.plot([r["target_rate"] for r in rows], [100 * r["accuracy"] for r in rows],
                "o-" if len(rows) > 1 else "D", label=kind)
    ax.set_xlabel("fraction of steps written by the target")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_target_rate.png", dpi=110)
    plt.close(fig)
    lines = ["# End to end: accuracy against target rate for each weighting function", "",
             f"{len(items)} problems. The theory's slack optimum is δ = μ_M = {mu_target:.3f}; the accuracy-best "
             f"binary δ of the sweep is {best['delta']:g} ({100 * best['accuracy']:.1f}%)." if best else "", "",
             "| weighting | parameter | target rate | accuracy |", "|---|---|---|---|"]
    for kind, rows in curves.items():
        for r in rows:
            param = ", ".join(f"{k}={v:g}" for k, v in r.items() if k not in ("target_rate", "accuracy")) or "–"
            lines.append(f"| {kind} | {param} | {r['target_rate']:.3f} | {100 * r['accuracy']:.1f} |")
    lines += ["", "![accuracy vs target rate](accuracy_vs_target_rate.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return {"mu_target": mu_target, "theory_delta": mu_target, "best_delta": best, "curves": curves}


def _arith_problems(cfg: TheoryConfig, items, experiment: str) -> list[arith.Problem]:
    """The embedded task's problems behind `items` (the experiments that need its exact step checker)."""
    data = cfg.run.data
    if data.source != "arith":
        raise InputError(f"{experiment} needs the embedded task (run.data.source: arith), got {data.source!r}: "
                         f"only it has an exact checker for every step")
    problems = arith.generate_problems(len(items), data.seed, data.levels)
    if [p.uid for p in problems] != [i.uid for i in items]:
        raise InputError(f"{experiment}: the problems do not match the items of run.data")
    return problems


def _global_threshold(cfg: TheoryConfig):
    """cfg.run with RSD's binary rule at one global δ (no per-context budget)."""
    return dataclasses.replace(cfg.run, rsd=dataclasses.replace(cfg.run.rsd, weighting="binary", online_budget=False,
                                                                 budget=None))


def perfect_prm(cfg: TheoryConfig, engine: Engine, items, out: Path) -> dict:
    problems = _arith_problems(cfg, items, "perfect_prm")
    run = _global_threshold(cfg)
    runs = perfect.decode(engine, problems, run.decoding.spec(), run.decoding.batch_size)
    rows = [{"prm": "perfect (exact checker)", "delta": None,
             **perfect.summarize(problems, runs, [perfect.useful_flops(engine.models, p, r)
                                                  for p, r in zip(problems, runs)])}]
    for delta in cfg.deltas:
        records = _decoded(engine, items, run, delta)
        measured = summarize(records)
        target_only = sum(r["accounting"]["target_only_flops"] for r in records)
        rows.append({"prm": "learned", "delta": delta, "accuracy": measured["accuracy"],
                     "flops_vs_target_only": measured["flops_vs_target_only"],
                     "flops_by_model": {m: sum(r["accounting"]["useful_flops"].get(m, 0.0) for r in records)
                                        / target_only for m in ("draft", "prm", "target")},
                     "draft_acceptance": measured["draft_acceptance_rate"],
                     "problems_with_target_steps": float(np.mean([any(s["source"] == "target" for s in r["steps"])
                                                                  for r in records]))})
    lines = ["# RSD with a perfect PRM against the learned PRM", "",
             f"{len(items)} problems (seed {cfg.run.data.seed}). The perfect PRM accepts a draft step iff the exact "
             "checker says it is correct; its FLOPs are the lower bound of RSD's for this draft and target. The gap to "
             "the learned PRM's rows is what its errors cost: correct steps rejected (target FLOPs) and wrong steps "
             "accepted (accuracy).", "",
             "| PRM | δ | accuracy | draft acceptance | FLOPs vs target-only | draft | PRM | target | "
             "problems with a target step |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, delta = r["flops_by_model"], "–" if r["delta"] is None else f"{r['delta']:g}"
        lines.append(f"| {r['prm']} | {delta} | "
                     f"{100 * r['accuracy']:.1f} | {100 * r['draft_acceptance']:.1f}% | "
                     f"{r['flops_vs_target_only']:.3f} | {f['draft']:.3f} | {f['prm']:.3f} | {f['target']:.3f} | "
                     f"{100 * r['problems_with_target_steps']:.1f}% |")
    lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    return {"rows": rows}


# ------------------------------------------------------------------------------------------------ prm_errors
def step_kind(problem: arith.Problem, i: int) -> str:
    return "multiply" if i == 0 else "add/sub" if i < problem.level else "answer"


def draft_step_rewards(problems: list[arith.Problem], records: list[dict]) -> list[tuple[str, str, float]]:
    """(step kind, what is wrong ("correct" or the checker's findings joined by "+"), PRM reward) of every step of
    the draft's own solutions up to and including its first wrong step (the states RSD's PRM is asked about)."""
    rows = []
    for p, r in zip(problems, records):
        steps = [s["text"].strip() for s in r["steps"]]
        for i, step in enumerate(r["steps"]):
            errors = arith.step_errors(p, steps, i)
            rows.append((step_kind(p, i), "+".join(errors) or "correct", float(step["reward"])))
            if errors:
                break
    return rows


def prm_errors(cfg: TheoryConfig, engine: Engine, items, out: Path) -> dict:
    from rsd_jax.training.prm import auroc

    problems = _arith_problems(cfg, items, "prm_errors")
    records = _decoded(engine, items, _global_threshold(cfg), 0.0)
    rows = draft_step_rewards(problems, records)  # δ = 0 keeps every draft step: the draft's own solutions
    rewards = np.array([r for _, _, r in rows])
    correct = np.array([e == "correct" for _, e, _ in rows])
    groups: dict[tuple[str, str], list[float]] = {}
    for kind, error, reward in rows:
        groups.setdefault((kind, error), []).append(reward)
    table = [{"step": kind, "error": error, "n": len(v), "mean_reward": float(np.mean(v)),
              "kept": {f"{d:g}": float(np.mean(np.asarray(v) >= d)) for d in cfg.deltas}}
             for (kind, error), v in sorted(groups.items(), key=lambda kv: (kv[0][1] != "correct", -len(kv[1])))]
    summary = {"n_problems": len(problems), "n_steps": len(rows), "auroc": auroc(rewards, correct),
               "wrong_kept": {f"{d:g}": int(np.sum(rewards[~correct] >= d)) for d in cfg.deltas},
               "correct_rejected": {f"{d:g}": float(np.mean(rewards[correct] < d)) for d in cfg.deltas},
               "by_error": table}
    deltas = [f"{d:g}" for d in cfg.deltas]
    lines = ["# What the PRM lets through: its rewards of the draft's steps, by what is wrong with them", "",
             f"{len(problems)} problems (seed {cfg.run.data.seed}), the draft's greedy solutions up to their first "
             f"wrong step: {len(rows)} steps, {int((~correct).sum())} wrong; step AUROC {summary['auroc']:.4f}. "
             "A row's 'kept at δ' is the share of its steps whose reward is at least δ: for correct steps what RSD "
             "keeps, for wrong ones the slips it lets through.", "",
             "| step | wrong | n | mean reward | " + " | ".join(f"kept at {d}" for d in deltas) + " |",
             "|---|---|---|---|" + "---|" * len(deltas)]
    for r in table:
        lines.append(f"| {r['step']} | {r['error']} | {r['n']} | {r['mean_reward']:.3f} | "
                     + " | ".join(f"{100 * r['kept'][d]:.1f}%" for d in deltas) + " |")
    lines += ["", "| δ | " + " | ".join(deltas) + " |", "|---|" + "---|" * len(deltas),
              "| wrong steps kept | " + " | ".join(str(summary["wrong_kept"][d]) for d in deltas) + " |",
              "| correct steps rejected | " + " | ".join(f"{100 * summary['correct_rejected'][d]:.1f}%"
                                                       for d in deltas) + " |", ""]
    (out / "report.md").write_text("\n".join(lines))
    return summary
