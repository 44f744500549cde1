"""`python -m rsd_jax.theory --config configs/theory_<name>.yaml --out DIR`: one of the theory experiments,
writing DIR/summary.json, PNG plots and DIR/report.md.

The command binds the config to the experiments: each `run_<experiment>` computes (rsd_jax.theory.analytic,
.empirical and .oracle, .measured, .checker; intervals from .bootstrap), draws (.plots) and writes the report (.reports); its summary goes to summary.json with the
health of every result it decoded (rsd_jax.theory.decoded).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rsd_jax.calibration import calibrate_budget, calibration_split
from rsd_jax.config import RunConfig, TheoryConfig
from rsd_jax import exits, runs
from rsd_jax.configlib import (add_config_flags, describe_if_asked, load_config, print_config_if_asked, to_dict,
                               to_yaml)
from rsd_jax.data import arith
from rsd_jax.data.item import Item
from rsd_jax.engine import Engine
from rsd_jax.errors import ConfigError, InputError, RSDError
from rsd_jax.runner import run_method
from rsd_jax.summary import health_warning
from rsd_jax.outputs import check_output_dir, write_text_atomic
from rsd_jax.run_lock import claim_locked
from rsd_jax.theory import (analytic, budget_mode, checker, decoded, empirical, free_judges, measured, oracle, plots,
                            reports)


def run_analytic(cfg: TheoryConfig, out: Path) -> dict:
    result = analytic.frontiers(cfg.beta, cfg.mu_target, cfg.discrete_rewards, cfg.discrete_probs)
    plots.frontiers(result, out / "frontiers.png")
    write_text_atomic(out / "report.md", reports.analytic(result))
    return result.summary()


def run_empirical(cfg: TheoryConfig, engine: Engine, items: list[Item], out: Path) -> dict:
    run = cfg.run
    spec, batch, seed = run.decoding.spec(), run.decoding.batch_size, run.decoding.seed
    result = empirical.empirical(engine, items, spec, deltas=cfg.deltas, samples_per_context=cfg.samples_per_context,
                                 batch_size=batch, seed=seed)
    summary = result.summary()
    contexts = comparison = None
    if cfg.oracle_problems:
        n = min(cfg.oracle_problems, len(items))
        draft_alone = result.run_at(empirical.DRAFT_ONLY)
        samples = oracle.sample_contexts(engine, items[:n], draft_alone.texts[:n], k=cfg.samples_per_context,
                                         spec=spec, batch_size=batch, seed=seed + 2, check=step_checker(cfg, items))
        comparison = oracle.compare(samples, cfg.budgets, n)
        comparison["winning_rate"] = oracle.winning_rate(samples, n)
        contexts = {"draft": samples.draft_eval.ravel(), "target": samples.target_eval.ravel(),
                    "winning_rate": comparison["winning_rate"]}
        plots.oracle_frontier(oracle.curves(samples), comparison, out / "oracle.png")
        summary["oracle"] = comparison
    plots.predicted_vs_measured(result, out / "predicted_vs_measured.png")
    plots.reward_distributions(result, contexts, cfg.figure_deltas[0], out / "reward_distributions.png")
    if items[0].level is not None:
        plots.accuracy_by_level(result, list(cfg.figure_deltas), out / "accuracy_by_level.png")
    write_text_atomic(out / "report.md", reports.empirical(result, comparison, cfg.figure_deltas))
    return summary


def step_checker(cfg: TheoryConfig, items: list[Item]):
    """The embedded task's exact step checker as oracle.StepCheck (None for other problems: no correctness)."""
    if cfg.run.data.source != "arith":
        return None
    problems = checker.arith_problems(cfg.run.data, items, "empirical")
    return lambda i, steps: arith.check_steps(problems[i], [t.strip() for t in steps])[-1]


def run_end_to_end(cfg: TheoryConfig, engine: Engine, items: list[Item], out: Path) -> dict:
    run = cfg.run
    result = measured.end_to_end(engine, items, run.decoding.spec(), run.decoding.batch_size,
                                 weightings=cfg.weightings, deltas=cfg.deltas, seed=run.decoding.seed)
    plots.accuracy_vs_target_rate(result, out / "accuracy_vs_target_rate.png")
    write_text_atomic(out / "report.md", reports.end_to_end(result))
    return result.summary()


def global_threshold(run: RunConfig) -> RunConfig:
    """`run` with RSD's binary rule at one global δ (no per-context budget)."""
    return dataclasses.replace(run, rsd=dataclasses.replace(run.rsd, weighting="binary", online_budget=False,
                                                            budget=None))


def rsd_records(engine: Engine, items: list[Item], run: RunConfig, delta: float) -> list[dict]:
    """RSD's records of `items` at δ (rsd_jax.runner.run_method), each tallied in the experiment's health."""
    records = [r for chunk in run_method(engine, items, "rsd", run, delta=delta) for r in chunk]
    decoded.tally_records(records)
    return records


def run_perfect_prm(cfg: TheoryConfig, engine: Engine, items: list[Item], out: Path) -> dict:
    problems = checker.arith_problems(cfg.run.data, items, "perfect_prm")
    run = global_threshold(cfg.run)
    learned = [(delta, rsd_records(engine, items, run, delta)) for delta in cfg.deltas]
    result = checker.perfect_prm(engine, problems, run.decoding.spec(), run.decoding.batch_size, learned)
    write_text_atomic(out / "report.md", reports.perfect_prm(result, cfg.run.data.seed))
    return result.summary()


def run_prm_errors(cfg: TheoryConfig, engine: Engine, items: list[Item], out: Path) -> dict:
    problems = checker.arith_problems(cfg.run.data, items, "prm_errors")
    records = rsd_records(engine, items, global_threshold(cfg.run), 0.0)  # δ = 0 keeps every draft step
    summary = checker.prm_errors(problems, records, cfg.deltas)
    write_text_atomic(out / "report.md", reports.prm_errors(summary, cfg.run.data.seed))
    return summary


def run_free_judges(cfg: TheoryConfig, engine: Engine, items: list[Item], out: Path) -> dict:
    """The separate PRM, the draft's confidence and (a self-scoring draft) its value head on the draft's own
    greedy steps (rsd_jax.theory.free_judges)."""
    if cfg.run.models.prm.self_scoring:
        raise ConfigError("free_judges compares the draft's own judges with a separate PRM: give run.models.prm a "
                          "path, not self_scoring")
    problems = checker.arith_problems(cfg.run.data, items, "free_judges")
    records = rsd_records(engine, items, global_threshold(cfg.run), 0.0)  # δ = 0 keeps every draft step
    judged = free_judges.judge_steps(engine.models.draft, engine.models.tokenizer, problems, records)
    summary = free_judges.compare(judged, cfg.keeps)
    write_text_atomic(out / "report.md", reports.free_judges(summary, cfg.run.data.seed, cfg.run.models.draft.path))
    return summary


def run_budget(cfg: TheoryConfig, engine: Engine, items: list[Item], out: Path) -> dict:
    """The calibrated budget mode at each of cfg.budgets (δ_γ alone, and δ* = min(μ_M, δ_γ) with μ_M measured)
    against RSD at each fixed δ of cfg.deltas, on the run's problems; one calibration split serves every budget."""
    run = global_threshold(cfg.run)
    if run.rsd.calibration is None:
        raise ConfigError("the budget experiment needs run.rsd.calibration (e.g. dev), the split it calibrates on")
    split = calibration_split(engine, run)
    variants = [("δ_γ", False)] + ([("δ*", True)] if split.mu_target is not None else [])
    decoded_runs: dict[tuple[float, float], list[dict]] = {}  # one decode per distinct (δ, q)
    budget_rows, calibrations = [], []
    for budget in cfg.budgets:
        budget_run = dataclasses.replace(run, rsd=dataclasses.replace(run.rsd, budget=budget))
        for label, use_mu in variants:
            calibration = calibrate_budget(engine, budget_run, split, use_mu=use_mu)
            calibrations.append({"budget": budget, "rule": label, "delta": calibration.delta, "q": calibration.q,
                                 "calibration_shares": list(calibration.shares)})
            rule = (calibration.delta, calibration.q)
            if rule not in decoded_runs:
                decoded_runs[rule] = [r for chunk in run_method(engine, items, "rsd", budget_run,
                                                                calibration=calibration) for r in chunk]
                decoded.tally_records(decoded_runs[rule])
            budget_rows.append((budget, budget_mode.run_point(label, *rule, decoded_runs[rule])))
    sweep = [budget_mode.run_point(f"δ = {d:g}", d, 1.0, rsd_records(engine, items, run, d)) for d in cfg.deltas]
    rows = budget_mode.compare(budget_rows, sweep)
    data = run.data
    write_text_atomic(out / "report.md", budget_mode.report(
        rows, sweep, mu_target=split.mu_target, calibration=f"rsd.calibration={run.rsd.calibration}",
        calibration_problems=len(split.items), calibrations=calibrations,
        evaluated=f"{data.source} (seed {data.seed}, {len(items)} problems)"))
    return {"budgets": rows, "sweep": [dataclasses.asdict(p) for p in sweep], "mu_target": split.mu_target,
            "calibration_problems": len(split.items), "calibrations": calibrations}


def run_on_models(cfg: TheoryConfig, config_file: str | None, out: Path) -> dict:
    """An experiment on the run's models and problems (all but analytic)."""
    from rsd_jax.data.problems import load_items
    from rsd_jax.loading import load_engine

    items = load_items(cfg.run.data, config_file)
    if items[0].grade is None and cfg.experiment == "end_to_end":
        raise InputError("end_to_end needs problems with reference answers")
    if cfg.experiment == "empirical" and cfg.run.decoding.temperature == 0:
        raise InputError("the empirical experiment samples (a context needs several possible steps): set "
                         "run.decoding.temperature > 0")
    engine = load_engine(cfg.run, config_file)
    run = {"empirical": run_empirical, "end_to_end": run_end_to_end, "perfect_prm": run_perfect_prm,
           "prm_errors": run_prm_errors, "budget": run_budget, "free_judges": run_free_judges}[cfg.experiment]
    return run(cfg, engine, items, out)


def theory_identity(cfg: TheoryConfig, config_file: str | None) -> dict:
    """What makes two theory runs the same: every config key but run.output (data.n included: a summary is over
    all of a run's problems) and, for the experiments on models, each model folder's digest (rsd_jax.runs)."""
    identity = {k: v for k, v in runs.flatten(json.loads(json.dumps(to_dict(cfg)))).items() if k != "run.output"}
    if cfg.experiment != "analytic":
        identity.update(runs.model_identities(cfg.run, config_file, prefix="run."))
    return identity


def holds_theory_results(folder: Path) -> bool:
    """Does `folder` hold a theory run's results (its summary or report)?"""
    return any((folder / name).is_file() for name in ("summary.json", "report.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.theory", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config (configs/theory_*.yaml)")
    parser.add_argument("--out", help="output folder (refused when it holds another run's results)")
    parser.add_argument("--new-run", action="store_true", help="the folder holds another run: write into a fresh "
                                                                 "DIR-2, ... instead")
    add_config_flags(parser)
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    args = parser.parse_intermixed_args(argv)
    if describe_if_asked(args, TheoryConfig):
        return 0
    try:
        cfg = load_config(TheoryConfig, args.config, args.overrides)
        if print_config_if_asked(args, cfg):
            return 0
        if not args.out:
            raise InputError("give --out DIR")
        # before any work, as evaluate: one writer per folder, another run's results never replaced
        out, lock = claim_locked(check_output_dir(Path(args.out)), theory_identity(cfg, args.config), args.new_run,
                                 holds=holds_theory_results)
        with lock:
            write_text_atomic(out / "config.yaml", to_yaml(cfg))
            decoded.reset_health()
            summary = run_analytic(cfg, out) if cfg.experiment == "analytic" else run_on_models(cfg, args.config, out)
            summary["health"] = decoded.health()
            write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    print((out / "report.md").read_text())
    h = summary["health"]
    if h["n_results"]:
        print(f"decoded {h['n_results']} results: {h['n_errors']} with an error, {h['n_nonfinite_rewards']} with "
              "non-finite rewards")
    warning = health_warning({"n_problems": h["n_results"], **h})
    if warning:
        print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
