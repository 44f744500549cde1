"""A rehearsal of the paper's setting at real size on this machine's CPU, with 8 fake devices:
`python -m rsd_jax.rehearse [--config configs/paper/qwen25_math_1.5b_7b_skywork1.5b.yaml] [--work DIR]`.

1. write: folders laid out as the hub's snapshots with random weights (rsd_jax.hub_layout): the draft and the PRM at
   full size (Qwen2.5-Math-1.5B-Instruct, Skywork-o1-Open-PRM-Qwen-2.5-1.5B), the target with Qwen2.5-Math-7B's
   widths and `--target-layers` of its 28 layers (as many as memory allows), sharded bfloat16 safetensors, the real
   Qwen2.5 tokenizer files. Written by a child process, and kept in DIR for the next rehearsal.
2. load: each model as the shipped config loads it (its dtype, its mesh over the 8 devices), weights read slice by
   slice into their shardings: seconds, peak growth of this process's resident memory against the model's bytes,
   bytes per device; and the 1.5B draft alone over a model axis of 8, the fraction of each tensor a device holds.
3. decode: the shipped config with only the paths changed, plus a short run (`--problems`, `--new-tokens`) in
   float32 (this CPU computes bfloat16 through float32 copies of every weight, twice the memory) over a model axis
   of 8 (`mesh.data=1`: on fake devices every data replica of the weights is host memory): compile seconds,
   first-step latency (one reasoning step for every row, compiled), tokens per second.
Each section runs in its own process (`all` starts them one after the other), so each one's memory is its own.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # before JAX starts
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from rsd_jax.outputs import write_text_atomic  # noqa: E402

ROLES = ("draft", "target", "prm")
NAMES = {"draft": "Qwen2.5-Math-1.5B-Instruct", "target": "Qwen2.5-Math-7B-Instruct",
         "prm": "Skywork-o1-Open-PRM-Qwen-2.5-1.5B"}
GiB = 2**30


def layouts(target_layers: int) -> dict:
    from rsd_jax.hub_layout import Layout

    return {role: Layout(NAMES[role], (("num_hidden_layers", target_layers),) if role == "target" else ())
            for role in ROLES}


def write(work: Path, target_layers: int) -> None:
    """The three folders (skipped when a folder already holds the same layout)."""
    from safetensors import SafetensorError

    from rsd_jax.errors import OutputError
    from rsd_jax.hub_layout import write_snapshot
    from rsd_jax.outputs import staged_folder

    for role, layout in layouts(target_layers).items():
        marker = work / role / "rehearsal.json"
        if marker.is_file() and json.loads(marker.read_text()) == dataclasses.asdict(layout):
            continue
        start = time.time()
        try:  # built in a temporary sibling and renamed: a folder appears whole or not at all (a full disk)
            with staged_folder(work / role, overwrite=True) as tmp:
                write_snapshot(layout, tmp, seed=ROLES.index(role),
                               bos_token="<|endoftext|>" if role == "prm" else None)
                (tmp / marker.name).write_text(json.dumps(dataclasses.asdict(layout)))
        except (OSError, SafetensorError) as e:
            raise OutputError(f"cannot write {work / role}: {getattr(e, 'strerror', None) or e}; free space "
                              f"or choose another --work") from None
        print(f"wrote {work / role} in {time.time() - start:.0f} s", file=sys.stderr, flush=True)


class PeakRSS:
    """The peak resident memory of this process while the block runs (sampled every 5 ms), and at its start."""

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = _rss()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def per_device_bytes(model) -> dict:
    """Bytes of the model's weights on each device."""
    import jax

    total: dict = {}
    for x in jax.tree.leaves(model.params):
        for shard in x.addressable_shards:
            total[shard.device] = total.get(shard.device, 0) + shard.data.nbytes
    return total


def shard_fractions(model) -> dict[str, float]:
    """Each weight's fraction held by one device (1.0: replicated)."""
    import jax

    flat = jax.tree_util.tree_flatten_with_path(model.pure_dict())[0]
    return {jax.tree_util.keystr(path): x.addressable_shards[0].data.size / x.size for path, x in flat}


def weight_bytes(model) -> int:
    import jax

    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(model.params))


def load_one(cfg, config_file: str, mesh, role: str) -> tuple[dict, object]:
    """models.<role> loaded into its shardings on `mesh`: (figures, the model)."""
    from rsd_jax.loading import load_ref

    gc.collect()
    with PeakRSS() as rss:
        start = time.time()
        model = load_ref(getattr(cfg.models, role), role, config_file, mesh)
        seconds = time.time() - start
    size, devices = weight_bytes(model), per_device_bytes(model)
    return {"role": role, "mesh": dict(mesh.shape), "seconds": round(seconds, 1), "model_gib": size / GiB,
            "rss_growth_gib": rss.growth / GiB, "rss_growth_vs_model": rss.growth / size,
            "max_gib_per_device": max(devices.values()) / GiB,
            "max_per_device_vs_model": max(devices.values()) / size}, model


def load_section(cfg, config_file: str) -> list[dict]:
    """Each model into the config's mesh, one at a time; then the 1.5B draft over a model axis of 8."""
    import jax

    from rsd_jax import sharding
    from rsd_jax.loading import kv_heads_of

    rows = []
    kv_heads = kv_heads_of(cfg, config_file)
    mesh = sharding.make_mesh(-1, cfg.mesh.width(len(jax.devices()), kv_heads), kv_heads=kv_heads)
    for role in ROLES:
        row, model = load_one(cfg, config_file, mesh, role)
        rows.append(row)
        del model
    draft_8 = sharding.make_mesh(1, 8, kv_heads=kv_heads_of(cfg, config_file)[:1])
    row, model = load_one(cfg, config_file, draft_8, "draft")
    fractions = shard_fractions(model)
    row["sharded_fraction"] = sorted({round(f, 4) for f in fractions.values() if f < 1.0})
    row["replicated"] = sorted(k for k, f in fractions.items() if f == 1.0)
    rows.append(row)
    del model
    gc.collect()
    return rows


def decode_section(cfg, config_file: str, problems: int, new_tokens: int) -> dict:
    """The short run in float32: compile seconds, first-step latency, tokens per second."""
    import dataclasses as dc

    from rsd_jax.api import generate
    from rsd_jax.data.problems import load_items
    from rsd_jax.loading import kv_heads_of, load_engine, load_tokenizers, start_devices

    mesh = start_devices(cfg.mesh, kv_heads_of(cfg, config_file))
    tokenizers = load_tokenizers(cfg, config_file)
    items = load_items(cfg.data, config_file, tokenizers[0])[:problems]
    longest = max(len(tokenizers[0].encode(i.prompt)) for i in items)
    decoding = cfg.decoding.spec().replace(max_new_tokens=longest + new_tokens)  # the budget counts the prompt
    method = cfg.rsd.method_value("rsd")
    start = time.time()
    engine = load_engine(cfg, config_file, mesh, tokenizers)
    loaded = time.time() - start
    data = dict(mesh.shape)["data"]
    batch = -(-len(items) // data) * data

    def run(max_steps: int) -> tuple[float, list]:
        begin = time.time()
        results = generate(engine, [i.prompt for i in items], questions=[i.question for i in items], method=method,
                           decoding=dc.replace(decoding, max_steps=max_steps), pad_batch_to=batch)
        return time.time() - begin, results

    first_step_cold, _ = run(1)
    first_step, _ = run(1)
    cold, _ = run(decoding.max_steps)
    warm, results = run(decoding.max_steps)
    tokens = sum(len(r.token_ids) for r in results)
    return {"mesh": dict(mesh.shape), "rows": batch, "problems": len(items), "load_seconds": round(loaded, 1),
            "compile_seconds": round(cold - warm, 1), "first_step_seconds": round(first_step, 2),
            "first_step_compile_seconds": round(first_step_cold - first_step, 1), "decode_seconds": round(warm, 1),
            "tokens": tokens, "tokens_per_second": round(tokens / warm, 2),
            "steps": sum(len(r.steps) for r in results), "errors": sum(r.error is not None for r in results)}


def run_config(args, overrides: list[str]):
    """The config at --config with the models' paths in the work folder (and the section's overrides)."""
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import load_config

    paths = [f"models.{role}.path={Path(args.work).absolute() / role}" for role in ROLES]
    return load_config(RunConfig, args.config, paths + overrides)


def report(result: dict) -> str:
    lines = ["| load (shipped config) | mesh | seconds | model GiB | peak RSS growth / model | max per device / model |",
             "|---|---|---|---|---|---|"]
    for r in result.get("load", []):
        mesh = "x".join(map(str, r["mesh"].values()))
        lines.append(f"| {r['role']} | {mesh} | {r['seconds']} | {r['model_gib']:.2f} | {r['rss_growth_vs_model']:.2f}x "
                     f"| {r['max_per_device_vs_model']:.3f} |")
    if "decode" in result:
        d = result["decode"]
        lines += ["", "| decode (float32) | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in d.items()]
    return "\n".join(lines)


def run_all(args) -> int:
    """write, load and decode, each in its own process; their figures together."""
    result = {}
    for section in ("write", "load", "decode"):
        out = Path(args.work) / f"{section}.json"
        cmd = [sys.executable, "-m", "rsd_jax.rehearse", section, "--config", args.config, "--work", args.work,
               "--target-layers", str(args.target_layers), "--problems", str(args.problems), "--new-tokens",
               str(args.new_tokens), "--out", str(out)]
        if subprocess.run(cmd).returncode != 0:
            print(f"error: the {section} section failed (its output is above)", file=sys.stderr)
            return 2
        if section != "write":
            result.update(json.loads(out.read_text()))
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")  # whole or not at all
    print(report(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import add_config_flags, describe_if_asked, print_config_if_asked
    from rsd_jax.errors import RSDError

    parser = argparse.ArgumentParser(prog="python -m rsd_jax.rehearse", description=__doc__.split("\n")[0])
    parser.add_argument("section", nargs="?", choices=("all", "write", "load", "decode"), default="all")
    parser.add_argument("--config", default="configs/paper/qwen25_math_1.5b_7b_skywork1.5b.yaml")
    parser.add_argument("--work", default="runs/rehearsal", help="where the snapshots are written and kept")
    parser.add_argument("--target-layers", type=int, default=2, help="layers of the 7B-wide target (of 28)")
    parser.add_argument("--problems", type=int, default=2, help="decode: problems of the short run")
    parser.add_argument("--new-tokens", type=int, default=24, help="decode: tokens after the longest prompt")
    parser.add_argument("--out", help="write the figures as JSON")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    if describe_if_asked(args, RunConfig):
        return 0
    from rsd_jax import exits
    from rsd_jax.outputs import check_output_dir

    for flag, value in (("--target-layers", args.target_layers), ("--problems", args.problems),
                        ("--new-tokens", args.new_tokens)):
        if value < 1:
            return exits.error(f"{flag} must be a positive integer, got {value}")
    if args.target_layers > 28:
        return exits.error(f"--target-layers must be at most 28 (Qwen2.5-Math-7B's layers), got {args.target_layers}")
    try:
        cfg = run_config(args, [])  # a bad config is one line before any section starts
        check_output_dir(args.work, "--work", create=args.section in ("all", "write"))  # before any section
        if print_config_if_asked(args, cfg):
            return 0
        if args.section == "all":
            return run_all(args)
        if args.section == "write":
            write(Path(args.work), args.target_layers)
            return 0
        result = {"config": args.config, "target_layers": args.target_layers}
        if args.section == "load":
            result["load"] = load_section(cfg, args.config)
        if args.section == "decode":
            overrides = [f"models.{role}.dtype=float32" for role in ROLES] + ["mesh.data=1", "mesh.model=8"]
            result["decode"] = decode_section(run_config(args, overrides), args.config, args.problems,
                                              args.new_tokens)
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")  # whole or not at all
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
