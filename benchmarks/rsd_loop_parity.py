"""Greedy records of the RSD loop on the embedded evaluation, for comparing two checkouts (issue 34's exactness).

    PYTHONPATH=CHECKOUT python benchmarks/rsd_loop_parity.py dump --schedule sync --n 500 --out OLD.npz
    PYTHONPATH=.        python benchmarks/rsd_loop_parity.py dump --schedule async --n 500 --out NEW.npz
    python benchmarks/rsd_loop_parity.py compare OLD.npz NEW.npz

dump decodes the first n held-out problems of the embedded task (configs/arith_tiny.yaml's models and decoding
settings, greedy) with RSD at each variant (binary δ 0.3 / 0.5 / 0.7 / 0.9; constant ω with p = 0 and p = 1, the
weightings whose acceptance draws no random number) and writes each problem's response tokens, step sources and
step rewards. compare prints, per variant, the problems whose tokens or sources differ and the largest reward
difference. It uses only the public API (rsd_jax.api.generate), so it runs on either side of the change.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"binary@0.3": dict(delta=0.3), "binary@0.5": dict(delta=0.5), "binary@0.7": dict(delta=0.7),
            "binary@0.9": dict(delta=0.9), "constant@p0": dict(weighting="constant", p=0.0),
            "constant@p1": dict(weighting="constant", p=1.0)}


def dump(args) -> None:
    from rsd_jax.data import arith
    from rsd_jax.api import generate
    from rsd_jax.bench import embedded_engine
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import load_config
    from rsd_jax.methods import RSD

    config = str(ROOT / "configs" / "arith_tiny.yaml")
    engine, _ = embedded_engine(ROOT)
    spec = load_config(RunConfig, config).decoding.spec().replace(schedule=args.schedule)
    problems = arith.generate_problems(args.n, seed=arith.HELD_OUT_SEED)
    prompts, questions = [arith.format_prompt(p) for p in problems], [p.question for p in problems]
    arrays = {}
    for name, options in VARIANTS.items():
        start = time.perf_counter()
        results = [r for s in range(0, args.n, args.batch) for r in generate(
            engine, prompts[s:s + args.batch], questions=questions[s:s + args.batch], method=RSD(**options),
            decoding=spec, pad_batch_to=args.batch)]
        for i, r in enumerate(results):
            arrays[f"{name}/{i}/tokens"] = np.asarray(r.token_ids, np.int32)
            arrays[f"{name}/{i}/sources"] = np.asarray([s.source == "target" for s in r.steps], np.int8)
            arrays[f"{name}/{i}/rewards"] = np.asarray([s.reward for s in r.steps], np.float32)
        targets = sum(int(arrays[f"{name}/{i}/sources"].sum()) for i in range(len(results)))
        print(f"{name}: {len(results)} problems, {targets} target steps, {time.perf_counter() - start:.1f} s",
              flush=True)
    np.savez_compressed(args.out, **arrays)


def compare(args) -> int:
    a, b = np.load(args.first), np.load(args.second)
    assert sorted(a.files) == sorted(b.files), "the two dumps hold different problems or variants"
    bad = 0
    for name in VARIANTS:
        n = len([k for k in a.files if k.startswith(name + "/") and k.endswith("/tokens")])
        differ = [i for i in range(n) if not (np.array_equal(a[f"{name}/{i}/tokens"], b[f"{name}/{i}/tokens"])
                                              and np.array_equal(a[f"{name}/{i}/sources"], b[f"{name}/{i}/sources"]))]
        gap = max((float(np.max(np.abs(a[f"{name}/{i}/rewards"] - b[f"{name}/{i}/rewards"]), initial=0.0))
                   for i in range(n) if i not in differ), default=0.0)
        steps = sum(len(a[f"{name}/{i}/sources"]) for i in range(n))
        targets = sum(int(a[f"{name}/{i}/sources"].sum()) for i in range(n))
        print(f"{name}: {n} problems, {steps} steps ({targets} by the target): {len(differ)} differ "
              f"{differ[:10]}; largest reward difference {gap:.2e}")
        bad += len(differ)
    return 1 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--schedule", choices=("sync", "async"), required=True)
    d.add_argument("--n", type=int, default=500)
    d.add_argument("--batch", type=int, default=64)
    d.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("first")
    c.add_argument("second")
    args = parser.parse_args(argv)
    if args.command == "dump":
        dump(args)
        return 0
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
