"""`python -m rsd_jax.theory --config configs/theory_<name>.yaml --out DIR`: one of the theory experiments,
writing DIR/summary.json, PNG plots and DIR/report.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rsd_jax.config import TheoryConfig
from rsd_jax.configlib import load_config, to_yaml
from rsd_jax.errors import InputError, RSDError
from rsd_jax.runner import health_warning
from rsd_jax.outputs import check_output_dir, write_text_atomic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.theory", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config (configs/theory_*.yaml)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(TheoryConfig, args.config, args.overrides)
        out = check_output_dir(Path(args.out))
        write_text_atomic(out / "config.yaml", to_yaml(cfg))
        from rsd_jax.theory import experiments

        experiments.reset_health()
        if cfg.experiment == "analytic":
            summary = experiments.analytic(cfg, out)
        else:
            from rsd_jax.data.problems import load_items
            from rsd_jax.loading import load_engine

            items = load_items(cfg.run.data, args.config)
            if items[0].grade is None and cfg.experiment == "end_to_end":
                raise InputError("end_to_end needs problems with reference answers")
            engine = load_engine(cfg.run, args.config)
            run = {"empirical": experiments.empirical, "end_to_end": experiments.end_to_end,
                   "perfect_prm": experiments.perfect_prm, "prm_errors": experiments.prm_errors}[cfg.experiment]
            summary = run(cfg, engine, items, out)
        summary["health"] = experiments.health()
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
