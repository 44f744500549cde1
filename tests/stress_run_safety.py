"""Issue 36's two run-safety targets on the real command, at a size unit tests cannot afford (minutes):

    python tests/stress_run_safety.py concurrent [OFFSET ...]   # two evaluate runs into one folder, B started
                                                                 # OFFSET s after A (default 0 0.5 2 5 10)
    python tests/stress_run_safety.py sigterm [KILLS] [KEY=VALUE ...]  # SIGTERM at KILLS (default 20) random
                                                # moments from process start to the end, each run resumed; the
                                                # overrides replace the defaults below (e.g. 'rsd.methods=[majority]')
    python tests/stress_run_safety.py after MARK [KILLS] [KEY=VALUE ...]  # SIGTERM 0-3 s after MARK first shows
                                                # on stderr (e.g. 'majority:', the bar of majority voting), then
                                                # the folder resumed to the end and compared

All use configs/arith_tiny.yaml (the shipped tiny models, CPU) with data.n=48 and `rsd.methods=[rsd]`. concurrent
prints, per offset, each run's exit code and last stderr line, the records in rsd.jsonl and their distinct δ;
sigterm (with decoding.batch_size=4: 12 batches) prints each kill's moment, exit code and the seconds from the
signal to the process's end, then whether the resumed folder's records equal an uninterrupted run's (every field
but wall_seconds), and whether a temporary file (`.NAME.*.tmp`, of a write cut half-way) was left anywhere. No
compilation cache is used, so kills land in compilations too.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = [sys.executable, "-m", "rsd_jax.evaluate", "--config", "configs/arith_tiny.yaml", "data.n=48",
        "rsd.methods=[rsd]", "rsd.thresholds=[]"]
SIGTERM_ARGS = ["decoding.batch_size=4"]  # 12 batches: kills land in the decoding too, not only the start-up


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", JAX_ENABLE_COMPILATION_CACHE="false")
    return env


def _start(args: list[str], err: Path) -> subprocess.Popen:
    with err.open("w") as f:
        return subprocess.Popen(BASE + args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=f)


def _last_line(err: Path) -> str:
    lines = [line for line in err.read_text().replace("\r", "\n").splitlines() if line.strip() and "it/s" not in
             line and "s/it" not in line]
    return lines[-1] if lines else ""


def _records(folder: Path) -> dict[tuple[str, str], dict]:
    """{(method file, uid): record without wall_seconds} over every METHOD.jsonl of the folder."""
    rows = [(path.name, json.loads(line)) for path in sorted(folder.glob("*.jsonl"))
            for line in path.read_text().splitlines()]
    return {(name, r["uid"]): {k: v for k, v in r.items() if k != "wall_seconds"} for name, r in rows}


def concurrent(offsets: list[float], work: Path) -> None:
    for offset in offsets:
        out = work / f"offset-{offset:g}"
        a = _start(["--out", str(out)], work / f"a-{offset:g}.txt")
        time.sleep(offset)
        b = _start(["--out", str(out), "rsd.delta=0.3"], work / f"b-{offset:g}.txt")
        rc_a, rc_b = a.wait(), b.wait()
        lines = (out / "rsd.jsonl").read_text().splitlines() if (out / "rsd.jsonl").is_file() else []
        deltas = sorted({json.loads(line).get("delta") for line in lines})
        print(f"offset {offset:g} s: A exit {rc_a}, B exit {rc_b}; rsd.jsonl {len(lines)} lines, δ {deltas}")
        for name, rc in (("A", rc_a), ("B", rc_b)):
            if rc:
                print(f"  {name}: {_last_line(work / f'{name.lower()}-{offset:g}.txt')}")


def sigterm(kills: int, work: Path, extra: list[str], seed: int = 36) -> None:
    """Kills at moments drawn uniformly from [0, one uninterrupted run's time], each run resuming the folder the
    killed ones left; a folder that a run completes is checked against the reference and a new one is started,
    so that every kill lands in a run with work left."""
    args = [*SIGTERM_ARGS, *extra]
    start = time.time()
    ref = _start(["--out", str(work / "reference"), *args], work / "reference.txt")
    assert ref.wait() == 0, _last_line(work / "reference.txt")
    total, reference = time.time() - start, _records(work / "reference")
    print(f"uninterrupted run: {total:.1f} s, {len(reference)} records")
    rng, chain, codes, equal, latencies = random.Random(seed), 0, [], [], []
    for k in range(kills):
        out = work / f"chain-{chain}"
        moment = rng.uniform(0.0, total)
        proc = _start(["--out", str(out), *args], work / f"kill-{k}.txt")
        time.sleep(moment)
        sent = time.time()
        proc.send_signal(15)
        rc = proc.wait()
        latencies.append(time.time() - sent)
        codes.append(rc)
        err = (work / f"kill-{k}.txt").read_text()
        bad = [w for w in ("Traceback", "Fatal Python error") if w in err]
        records = _records(out)
        print(f"kill {k + 1}: SIGTERM at {moment:5.1f} s -> exit {rc} {latencies[-1]:.2f} s later; chain {chain}: "
              f"{len(records)} records{'; ' + ', '.join(bad) if bad else ''}", flush=True)
        if len(records) == len(reference):  # this run finished its folder: check it, start a new one
            equal.append(records == reference)
            chain += 1
    out = work / f"chain-{chain}"
    last = _start(["--out", str(out), *args], work / "last.txt")
    assert last.wait() == 0, _last_line(work / "last.txt")
    equal.append(_records(out) == reference)
    print(f"exit codes: {sorted(set(codes))}; all 143 or 0: {set(codes) <= {0, 143}}; from the signal to the "
          f"end: at most {max(latencies):.2f} s (median {sorted(latencies)[len(latencies) // 2]:.2f} s)")
    print(f"temporary files left: {sorted(str(p.relative_to(work)) for p in work.rglob('.*.tmp'))}")
    print(f"{len(equal)} folders, each resumed to the end: records equal the uninterrupted run's (every field but "
          f"wall_seconds): {equal}")


def after(mark: str, kills: int, work: Path, extra: list[str], seed: int = 36) -> None:
    """Kills each run 0-3 s after `mark` first shows on its stderr (a phase: 'majority:' is majority voting's
    progress bar), all into one folder, then resumes it to the end and compares with an uninterrupted run."""
    args = [*SIGTERM_ARGS, *extra]
    ref = _start(["--out", str(work / "reference"), *args], work / "reference.txt")
    assert ref.wait() == 0, _last_line(work / "reference.txt")
    reference, rng, out, codes, latencies = _records(work / "reference"), random.Random(seed), work / "run", [], []
    for k in range(kills):
        err = work / f"kill-{k}.txt"
        proc = _start(["--out", str(out), *args], err)
        while mark not in err.read_text() and proc.poll() is None:
            time.sleep(0.05)
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)
        sent = time.time()
        proc.send_signal(15)
        rc = proc.wait()
        latencies.append(time.time() - sent)
        codes.append(rc)
        text = err.read_text()
        bad = [w for w in ("Traceback", "Fatal Python error") if w in text]
        print(f"kill {k + 1}: SIGTERM {delay:.1f} s after {mark!r} -> exit {rc} {latencies[-1]:.2f} s later; "
              f"{len(_records(out))} records{'; ' + ', '.join(bad) if bad else ''}", flush=True)
    last = _start(["--out", str(out), *args], work / "last.txt")
    assert last.wait() == 0, _last_line(work / "last.txt")
    print(f"exit codes: {sorted(set(codes))}; from the signal to the end: at most {max(latencies):.2f} s; "
          f"temporary files left: {sorted(str(p.relative_to(work)) for p in work.rglob('.*.tmp'))}")
    print(f"resumed to the end: records equal the uninterrupted run's (every field but wall_seconds): "
          f"{_records(out) == reference}")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="rsd_run_safety-"))
    if sys.argv[1:2] == ["concurrent"]:
        concurrent([float(x) for x in sys.argv[2:]] or [0, 0.5, 2, 5, 10], work)
    elif sys.argv[1:2] == ["sigterm"]:
        sigterm(int(sys.argv[2]) if len(sys.argv) > 2 else 20, work, sys.argv[3:])
    elif sys.argv[1:2] == ["after"] and len(sys.argv) > 2:
        after(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10, work, sys.argv[4:])
    else:
        sys.exit(__doc__)
    print(f"(files in {work})")


if __name__ == "__main__":
    main()
