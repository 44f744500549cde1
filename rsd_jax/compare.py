"""Problem-by-problem agreement of an evaluate run with the official code's outputs:
`python -m rsd_jax.compare RUN_DIR OFFICIAL.jsonl [OFFICIAL.jsonl ...] [--method rsd] [--set NAME]`.

Each OFFICIAL file is one set's output of the official harness (or of the official RSD code, which writes the same
layout: idx, question, gt, pred, score, ...). Its set is --set, else the name of its folder when that is one of the
run's sets (the harness writes OUT/<set>/...jsonl), else the run's only set. Problems are matched by idx; per set
the command prints how many problems both hold, how many have the same prediction (pred, compared as text after
stripping spaces) and the same score, and lists every problem that differs (and the idx only one side holds).
Exit 0 when everything compared agrees, 1 when some problem differs, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from rsd_jax import exits
from rsd_jax.data.datasets import parse_jsonl
from rsd_jax.errors import InputError, RSDError
from rsd_jax.export import harness_records, run_files
from rsd_jax.data.sources import read_file


@dataclasses.dataclass(frozen=True)
class Agreement:
    """One set's comparison: the idx both hold, those with the same pred and score, and what differs."""

    name: str
    common: int
    same_pred: int
    same_score: int
    differences: tuple[str, ...]  # one line per differing problem
    only_ours: tuple[int, ...]
    only_official: tuple[int, ...]

    @property
    def agrees(self) -> bool:
        return not self.differences and not self.only_ours and not self.only_official

    def report(self) -> str:
        pct = lambda k: f"{100 * k / self.common:.1f}%" if self.common else "–"  # noqa: E731
        lines = [f"{self.name}: {self.common} problems in both; same prediction {self.same_pred}/{self.common} "
                 f"({pct(self.same_pred)}), same score {self.same_score}/{self.common} ({pct(self.same_score)})"]
        if self.only_ours:
            lines.append(f"  only in the run: idx {', '.join(map(str, self.only_ours))}")
        if self.only_official:
            lines.append(f"  only in the official file: idx {', '.join(map(str, self.only_official))}")
        lines += [f"  {d}" for d in self.differences]
        return "\n".join(lines)


def first(value):
    """The first sample's entry of a harness list field (pred, score), or the value itself."""
    return value[0] if isinstance(value, list) and value else (None if isinstance(value, list) else value)


def _pred(value) -> str:
    v = first(value)
    return "" if v is None else str(v).strip()


def agreement(name: str, ours: list[dict], official: list[dict]) -> Agreement:
    """Compares two lists of records in the harness's layout, matched by idx."""
    mine = {int(r["idx"]): r for r in ours}
    theirs = {}
    for r in official:
        if "idx" not in r:
            raise InputError(f"{name}: an official record has no idx (fields {sorted(r)})")
        theirs[int(r["idx"])] = r
    common = sorted(set(mine) & set(theirs))
    same_pred = same_score = 0
    differences = []
    for idx in common:
        a, b = mine[idx], theirs[idx]
        pred_a, pred_b = _pred(a.get("pred")), _pred(b.get("pred"))
        score_a, score_b = bool(first(a.get("score"))), bool(first(b.get("score")))
        same_pred += pred_a == pred_b
        same_score += score_a == score_b
        if (pred_a, score_a) != (pred_b, score_b):
            differences.append(f"idx {idx}: pred {pred_a!r} (run) vs {pred_b!r} (official); score {score_a} (run) "
                               f"vs {score_b} (official)")
    return Agreement(name, len(common), same_pred, same_score, tuple(differences),
                     tuple(sorted(set(mine) - set(theirs))), tuple(sorted(set(theirs) - set(mine))))


def set_of(path: Path, sets: list[str], given: str | None) -> str:
    """Which of the run's sets an official file holds (see the module docstring)."""
    if given is not None:
        if given not in sets:
            raise InputError(f"--set {given!r} is not a set of the run ({', '.join(sets)})")
        return given
    if path.parent.name in sets:
        return path.parent.name
    if len(sets) == 1:
        return sets[0]
    raise InputError(f"cannot tell which of the run's sets ({', '.join(sets)}) {path} holds: put it in a folder "
                     "named by the set, as the harness does, or pass --set")


def compare(run_dir: Path, officials: list[Path], method: str, given_set: str | None = None) -> list[Agreement]:
    """The agreement of the run's `method` with each official file."""
    files = run_files(run_dir)
    results = []
    for path in officials:
        name = set_of(path, list(files), given_set)
        if method not in files[name]:
            raise InputError(f"the run has no {method!r} records for {name} (it has {', '.join(files[name])}); "
                             "choose one with --method")
        official = parse_jsonl(read_file(path), str(path))
        results.append(agreement(name, harness_records(files[name][method]), official))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.compare", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="an evaluate run's folder")
    parser.add_argument("official", nargs="+", help="the official harness's output JSONL, one per set")
    parser.add_argument("--method", default="rsd", help="the run's method to compare (its key: rsd, target, "
                                                        "rsd@0.8, ...; default rsd)")
    parser.add_argument("--set", dest="set_name", help="the set every OFFICIAL file holds")
    args = parser.parse_args(argv)
    try:
        results = compare(Path(args.run_dir), [Path(p) for p in args.official], args.method, args.set_name)
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    for result in results:
        print(result.report())
    return 0 if all(r.agrees for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
