"""One call to run a config: `rsd_jax.run(config, overrides=[...])` and `rsd_jax.load(config, ...)`.

    import rsd_jax
    records, summary = rsd_jax.run("configs/arith_tiny.yaml", ["data.n=16"])
    loaded = rsd_jax.load("configs/arith_tiny.yaml", ["data.n=16"])   # the engine and the problems, once
    for delta in (0.5, 0.9):                                          # δ is traced: one compilation
        print(loaded.run([f"rsd.delta={delta}"]).summary["accuracy"])

The start-up is the one `python -m rsd_jax.decode` runs (it calls these functions), in this order:
`start` (multi-host: join the other processes before anything else uses JAX; then the mesh, its tensor-parallel
width factored by the models' KV heads), then `load_parts` (the tokenizers, the problems in the draft's chat
template, then the weights, each read straight into its sharding on the mesh). Between the two, decode claims its
output folder, so that a bad folder costs nothing.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import jax

from rsd_jax.config import RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.data.problems import Item, load_items
from rsd_jax.engine import Engine
from rsd_jax.errors import InputError
from rsd_jax.loading import kv_heads_of, load_engine, load_tokenizers, start_devices
from rsd_jax.runner import run_method
from rsd_jax.summary import summarize

# the sections a loaded engine and its problems were built from: Loaded.run may not change them
FIXED_SECTIONS = ("models", "data", "mesh")


class Run(NamedTuple):
    """What `run` returns: one JSON-ready record per problem (rsd_jax.runner.to_record: steps with their source and
    reward, the accounting, the grade) and their summary (rsd_jax.summary.summarize: accuracy with its 95%
    interval, the draft's acceptance, tokens by model, FLOPs against target-only decoding)."""

    records: list[dict]
    summary: dict


def read_config(config: str | Path | RunConfig | None, overrides: Sequence[str] = ()) -> RunConfig:
    """The run's config: a YAML file (or None: the defaults) with `key.path=value` overrides, or a RunConfig."""
    if isinstance(config, RunConfig):
        if overrides:
            raise InputError("overrides are for a config file; apply them to a RunConfig with dataclasses.replace")
        return config
    if isinstance(overrides, str):
        raise InputError(f"overrides must be a list of 'key.path=value' strings, got the string {overrides!r}")
    return load_config(RunConfig, config, list(overrides))


def start(cfg: RunConfig, config_file: str | None) -> jax.sharding.Mesh | None:
    """Devices first: joins a multi-host run (mesh.distributed) before anything else uses JAX, then builds the
    configured ("data", "model") mesh (None on one device)."""
    return start_devices(cfg.mesh, kv_heads_of(cfg, config_file))


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A config's engine (the three models on `mesh`, their tokenizers and device tables) and its problems, ready
    to decode; `run` decodes them (again, with other decoding or rsd settings) without reloading anything."""

    config: RunConfig
    config_file: str | None
    overrides: tuple[str, ...]
    mesh: jax.sharding.Mesh | None
    engine: Engine
    problems: list[Item]
    from_object: bool = False  # the config was given as a RunConfig, not read from a file

    def batches(self, done: frozenset[str] = frozenset()) -> Iterator[list[dict]]:
        """The records of each batch of problems as it is decoded (decoding.batch_size each), with the config's
        rsd.method; `done`: the uids already decoded (a resume), whose batches are skipped."""
        return run_method(self.engine, self.problems, self.config.rsd.method, self.config, done=done)

    def run(self, overrides: Sequence[str] = ()) -> Run:
        """Decodes every problem; `overrides` change the rsd and decoding sections for this call (e.g.
        "rsd.delta=0.9", "rsd.method=target_only"), never models, data or mesh (those need `load` again)."""
        loaded = self.with_overrides(overrides) if overrides else self
        start_time = time.time()
        records = [r for batch in loaded.batches() for r in batch]
        return Run(records, summarize(records, wall_seconds=time.time() - start_time))

    def with_overrides(self, overrides: Sequence[str]) -> "Loaded":
        """The same engine and problems under the config read again with more overrides (of the rsd and decoding
        sections; a config given as a RunConfig takes none: change it with dataclasses.replace and `load` it)."""
        if self.from_object:
            raise InputError("Loaded.run(overrides) needs a config loaded from a file (or None): this one was given "
                             "as a RunConfig; load a changed copy (dataclasses.replace) instead")
        cfg = read_config(self.config_file, [*self.overrides, *overrides])
        for section in FIXED_SECTIONS:
            if getattr(cfg, section) != getattr(self.config, section):
                raise InputError(f"Loaded.run cannot change the {section} section (the engine and problems are "
                                 f"loaded): call rsd_jax.load again with those overrides")
        return dataclasses.replace(self, config=cfg, overrides=(*self.overrides, *overrides))


def load_parts(cfg: RunConfig, config_file: str | None, mesh: jax.sharding.Mesh | None,
               overrides: Sequence[str] = (), from_object: bool = False) -> Loaded:
    """After `start`: the tokenizers, the problems (in the draft's chat template), then the weights, each read into
    its sharding on `mesh` (and, for RSD on an accelerator mesh, moved once into its compiled layout)."""
    tokenizers = load_tokenizers(cfg, config_file)
    problems = load_items(cfg.data, config_file, tokenizers[0])
    engine = load_engine(cfg, config_file, mesh, tokenizers)
    return Loaded(cfg, config_file, tuple(overrides), mesh, engine, problems, from_object)


def load(config: str | Path | RunConfig | None, overrides: Sequence[str] = ()) -> Loaded:
    """A config (a YAML file with `key.path=value` overrides, or a RunConfig) loaded as decode loads it: devices and
    mesh, tokenizers, problems, weights. Returns the engine and the problems (`Loaded`)."""
    cfg = read_config(config, overrides)
    from_object = isinstance(config, RunConfig)
    config_file = None if config is None or from_object else str(config)
    return load_parts(cfg, config_file, start(cfg, config_file), overrides, from_object)


def run(config: str | Path | RunConfig | None, overrides: Sequence[str] = ()) -> Run:
    """Decodes a config's problems with its method, as `python -m rsd_jax.decode --config FILE key=value ...`
    does without --out: returns the records and their summary (`Run`; unpacks as `records, summary`). It writes
    nothing (the config's `output` folder is decode's: write `records` where you like, or use the command)."""
    return load(config, overrides).run()


def experiment(config: str | Path, overrides: Sequence[str] = (), out: str | Path = "runs/theory") -> dict:
    """One of the theory experiments, as `python -m rsd_jax.theory --config FILE --out DIR key=value ...` runs it
    (that command's own code): writes DIR/report.md, its figures and DIR/summary.json, and returns the summary."""
    import json

    from rsd_jax.theory.__main__ import main

    if isinstance(overrides, str):
        raise InputError(f"overrides must be a list of 'key.path=value' strings, got the string {overrides!r}")
    code = main(["--config", str(config), "--out", str(out), *overrides])
    if code != 0:
        raise InputError(f"the theory experiment of {config} failed (exit {code}): its error is printed above")
    return json.loads((Path(out) / "summary.json").read_text())
