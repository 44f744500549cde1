"""Preflight of a run on this machine: `python -m rsd_jax.doctor [--config X] [key=value ...] [--memory-gib G]`.

One screen, one line per check, each `ok`, `warn` or `FAIL`:
- devices: what JAX sees (platform, kind, count) and each device's memory (the runtime's `bytes_limit`; CPU devices
  report none, so host RAM shared by the CPU devices; `--memory-gib` sets it instead);
- jax: jax, jaxlib and, where installed, libtpu and the CUDA plugins, each against jax's own requirement of it (its
  package metadata, extras `tpu` and `cuda12`/`cuda13` included); JAX seeing only CPU devices on a machine with an
  accelerator (a device file, or libtpu / a CUDA plugin installed) is a warning;
- mesh: the tensor-parallel width the run would take on these devices (`mesh.model`, rsd_jax.mesh_axes);
- memory: the per-device estimate of the decode loop (`rsd_jax.capacity.estimate`: weights, KV caches, buffers,
  one forward's activations) against the device memory; where it does not fit, the setting to change and to what
  (a wider `mesh.model`, a smaller `decoding.batch_size`, or more devices);
- draft, target, prm (and a tokenizer given by hub id): a local folder and whether it exists, or a hub id and
  whether the Hugging Face cache holds its revision with weights (huggingface_hub's `scan_cache_dir`: read from
  disk, nothing is downloaded). Not cached is a failure offline (HF_HUB_OFFLINE=1), a warning online;
- data: the config's evaluation set(s) and every known set that can be read here without the network.
Without --config (and overrides), only the install is checked: devices, versions, the models in the hub cache,
the sets readable here.

Exit 0 when every check passes (warnings allowed); 2 when the run would fail on this machine (a FAIL line; or a bad
config, as every command: one `error:` line). Nothing is allocated on the devices and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable

import jax

from rsd_jax import exits
from rsd_jax.config import RunConfig
from rsd_jax.errors import RSDError

GiB = 2**30
ROLES = ("draft", "target", "prm")
#: packages whose version jax pins (in its requirements or its extras'), checked when installed
PINNED = ("jaxlib", "libtpu", "jax-cuda12-plugin", "jax-cuda13-plugin", "jax-cuda12-pjrt", "jax-cuda13-pjrt")


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the report: a topic, "ok" | "warn" | "fail", and what was found (and the way out)."""

    topic: str
    status: str
    text: str


# ------------------------------------------------------------------------------------------------ devices, versions
def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_checks(version_of: Callable[[str], str | None] = installed_version,
                   requires_of: Callable[[str], list[str]] = lambda name: metadata.requires(name) or []) -> list[Check]:
    """jax and each installed package of PINNED against what jax requires of it: its base requirements, and those of
    the extras the installed wheels stand for (`tpu` with libtpu, `cuda12` / `cuda13` with a CUDA plugin, whose own
    requirement of its PJRT wheel is checked too)."""
    from packaging.requirements import Requirement

    extras = [e for e, wheel in (("tpu", "libtpu"), ("cuda12", "jax-cuda12-plugin"), ("cuda13", "jax-cuda13-plugin"))
              if version_of(wheel)]
    requirements = [Requirement(r) for r in requires_of("jax")]
    for plugin in ("jax-cuda12-plugin", "jax-cuda13-plugin"):
        if version_of(plugin):
            requirements += [Requirement(r) for r in requires_of(plugin)]
    applies = [r for r in requirements if r.specifier and (r.marker is None or any(r.marker.evaluate({"extra": e})
                                                                                   for e in extras))]
    found, problems = [f"jax {version_of('jax')}"], []
    for name in PINNED:
        version = version_of(name)
        if version is None:
            continue
        specs = sorted({str(r.specifier) for r in applies if r.name == name})
        found.append(f"{name} {version}" + (f" (jax needs {' and '.join(specs)})" if specs else ""))
        problems += [f"{name} {version} does not satisfy {s}" for s in specs
                     if not Requirement(f"{name}{s}").specifier.contains(version, prereleases=True)]
    if problems:
        return [Check("jax", "fail", "; ".join(problems) + f" ({', '.join(found)}): install matching versions, "
                                                           "e.g. pip install -U 'rsd_jax[tpu]' or 'rsd_jax[cuda]'")]
    absent = [label for label, wheels in (("libtpu", ("libtpu",)), ("CUDA plugin", PINNED[2:4]))
              if not any(version_of(w) for w in wheels)]
    return [Check("jax", "ok", ", ".join(found) + "".join(f"; {a}: not installed" for a in absent))]


def accelerator_hint(version_of: Callable[[str], str | None] = installed_version) -> str | None:
    """What suggests an accelerator JAX does not see: a device file or an accelerator wheel (None: nothing)."""
    dev = Path("/dev")
    if (dev / "nvidia0").exists():
        return "/dev/nvidia0 exists (an NVIDIA GPU)"
    if any(dev.glob("accel*")) or any(dev.glob("vfio/[0-9]*")):
        return "TPU device files exist (/dev/accel* or /dev/vfio)"
    wheels = [n for n in PINNED[1:] if version_of(n)]
    return f"{', '.join(wheels)} installed" if wheels else None


def device_memory(device, memory_gib: float | None, count: int) -> tuple[int, str]:
    """(bytes one device may use, where that figure comes from)."""
    if memory_gib is not None:
        return int(memory_gib * GiB), "--memory-gib"
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), "the runtime's bytes_limit"
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return host // count, f"host RAM {host / GiB:.1f} GiB shared by {count} device(s)"


def device_checks(memory_gib: float | None) -> tuple[list[Check], int | None]:
    """The devices line (and a warning when JAX sees only CPUs on an accelerator machine); bytes per device (None:
    JAX could not start a backend, a FAIL line says why)."""
    try:
        devices = jax.devices()
    except RuntimeError as e:  # e.g. JAX_PLATFORMS=tpu where libtpu cannot open the chips
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return [Check("devices", "fail", f"JAX cannot start its devices ({first}): check JAX_PLATFORMS and the "
                                         "install (README, \"On a TPU VM or a GPU machine\")")], None
    kinds = sorted({d.device_kind for d in devices})
    limit, origin = device_memory(devices[0], memory_gib, len(devices))
    hosts = f" on {jax.process_count()} hosts" if jax.process_count() > 1 else ""
    checks = [Check("devices", "ok", f"{len(devices)} x {', '.join(kinds)} ({jax.default_backend()}){hosts}, "
                                     f"{limit / GiB:.2f} GiB each ({origin})")]
    hint = accelerator_hint() if jax.default_backend() == "cpu" else None
    if hint:
        checks.append(Check("devices", "warn", f"JAX sees only CPU devices but {hint}: the install does not see its "
                                               "accelerator (README, \"On a TPU VM or a GPU machine\"; expected "
                                               "where libtpu is only for compiling: rsd_jax[tpu-aot])"))
    return checks, limit


# ------------------------------------------------------------------------------------------------ models
def hub_cache_index() -> tuple[dict, str, list[str]]:
    """(repo id -> huggingface_hub CachedRepoInfo of the models in the hub cache, the cache folder, its warnings),
    read from disk by `scan_cache_dir`."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

    from rsd_jax.weights.sources import _cache_dir

    cache = _cache_dir() or constants.HF_HUB_CACHE
    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return {}, cache, []
    except CorruptedCacheException as e:
        return {}, cache, [f"the hub cache {cache} cannot be read ({e})"]
    return {r.repo_id: r for r in info.repos if r.repo_type == "model"}, cache, [str(w) for w in info.warnings]


def cached_revision(repo, revision: str | None):
    """The CachedRevisionInfo of `revision` (a ref such as main, or a commit hash) in a cached repo, or None."""
    want = revision or "main"
    for rev in repo.revisions:
        if want in rev.refs or rev.commit_hash == want:
            return rev
    return None


def model_checks(cfg: RunConfig, config_file: str | None) -> tuple[list[Check], dict[str, Path]]:
    """One line per model (and per tokenizer given by hub id or path); the local folder of each model found here."""
    from rsd_jax.loading import ref_of
    from rsd_jax.weights.sources import _offline, parse_source

    index, cache, warnings = hub_cache_index()
    offline = _offline()
    checks = [Check("hub cache", "warn", w) for w in warnings[:1]]
    folders: dict[str, Path] = {}
    refs = [(role, ref_of(cfg.models, role).path, ref_of(cfg.models, role).revision) for role in ROLES]
    refs += [(key, getattr(cfg.models, key), None) for key in ("tokenizer", "prm_tokenizer")
             if getattr(cfg.models, key) not in (None, "qwen")]
    for role, raw, revision in refs:
        topic = role if role in ROLES else f"models.{role}"
        if role == "prm" and cfg.models.prm.self_scoring:
            checks.append(Check(topic, "ok", "the draft (models.prm.self_scoring)"))
            continue
        if not raw:
            checks.append(Check(topic, "fail", f"models.{role}.path is empty"))
            continue
        source = parse_source(raw, config_file, revision)
        if isinstance(source, Path):
            if source.is_dir() or (role not in ROLES and source.is_file()):  # a tokenizer may be one file
                folders[role] = source
                checks.append(Check(topic, "ok", f"local {'folder' if source.is_dir() else 'file'} {source}"))
            else:
                checks.append(Check(topic, "fail", f"{raw}: no such {'folder' if role in ROLES else 'file or folder'} "
                                                   f"{source} (models.{role})"))
            continue
        checks.append(_hub_check(topic, source, index, cache=cache, offline=offline, folders=folders, role=role))
    return checks, folders


def _hub_check(topic: str, hub, index: dict, *, cache: str, offline: bool, folders: dict, role: str) -> Check:
    """The line of a model given by hub id; its snapshot folder goes into `folders` when it is cached with weights."""
    rev = cached_revision(index[hub.repo], hub.revision) if hub.repo in index else None
    if rev is not None:
        names = {f.file_name for f in rev.files}
        weights = any(n.endswith(".safetensors") for n in names) or "model_config.json" in names
        if weights or role not in ROLES:
            folders[role] = Path(rev.snapshot_path)
            return Check(topic, "ok", f"{hub}: cached ({rev.commit_hash[:12]}, {rev.size_on_disk / 1e9:.2f} GB, "
                                      f"{rev.nb_files} files)")
        what = f"{hub}: cached without weights (only {', '.join(sorted(names))})"
    else:
        have = [f"{', '.join(sorted(r.refs)) or r.commit_hash[:12]}" for r in index[hub.repo].revisions] \
            if hub.repo in index else []
        what = f"{hub}: not in the hub cache {cache}" + (f" (cached revisions: {'; '.join(have)})" if have else "")
    if offline:
        return Check(topic, "fail", f"{what}, and HF_HUB_OFFLINE=1: download it once online, or give a local folder")
    return Check(topic, "warn", f"{what}: the run downloads it first")


# ------------------------------------------------------------------------------------------------ memory
def with_folders(cfg: RunConfig, folders: dict[str, Path]) -> RunConfig:
    """The config with each model given by hub id replaced by its cached snapshot folder (for the estimate)."""
    models = cfg.models
    for role in ROLES:
        if role in folders and not (role == "prm" and models.prm.self_scoring):
            ref = dataclasses.replace(getattr(models, role), path=str(folders[role]), revision=None)
            models = dataclasses.replace(models, **{role: ref})
    return dataclasses.replace(cfg, models=models)


def fit_checks(cfg: RunConfig, config_file: str | None, limit: int) -> list[Check]:
    """The mesh the run would take on these devices, and whether its decode loop fits their memory (with the
    setting to change when it does not)."""
    from rsd_jax import abstract_run, capacity, sharding
    from rsd_jax.api import prompt_shapes
    from rsd_jax.mesh_axes import DATA, kv_compatible, width_name

    devices = jax.devices()
    batch = cfg.decoding.batch_size
    base = abstract_run.abstract_inputs(cfg, batch, config_file=config_file)

    def inputs(rows: int):  # the abstract models once; only the prompts' shapes follow the rows
        return dataclasses.replace(base, prompts=prompt_shapes(base.spec, rows))

    kv = tuple(m.config.num_kv_heads for m in base.models)
    try:
        width = cfg.mesh.width(len(devices), kv)
    except RSDError as e:
        return [Check("mesh", "fail", str(e))]
    mesh = sharding.make_mesh(cfg.mesh.data, width, devices=devices, kv_heads=kv)
    shape = " x ".join(f"{name} {size}" for name, size in mesh.shape.items())
    checks = [Check("mesh", "ok", f"{shape} (mesh.model={width_name(cfg.mesh.model, cfg.mesh.model_max)}, "
                                  f"the models' KV heads {kv})")]

    def estimate(rows: int, on=mesh):
        return capacity.estimate(inputs(math.lcm(rows, on.shape[DATA])), on)

    rows = math.lcm(batch, mesh.shape[DATA])
    est = estimate(rows)
    parts = (f"weights {est.weights / GiB:.2f}, KV caches {est.caches / GiB:.2f}, buffers {est.buffers / GiB:.2f}, "
             f"activations {est.activations / GiB:.2f}")
    text = f"{est.total / GiB:.2f} GiB per device at batch {rows} ({parts}; estimate) of {limit / GiB:.2f} GiB"
    if est.total <= limit:
        return checks + [Check("memory", "ok", text)]
    fixes = []
    if cfg.mesh.data == -1:
        n = len(devices)
        for w in (w for w in range(width + 1, n + 1) if n % w == 0 and kv_compatible(w, kv)):
            wide = sharding.make_mesh(-1, w, devices=devices, kv_heads=kv)
            if estimate(batch, wide).total <= limit:
                key = "mesh.model_max" if cfg.mesh.model == "auto" else "mesh.model"
                fixes.append(f"set {key}={w}")
                break
    smaller = largest_batch(estimate, rows, mesh.shape[DATA], limit)
    if smaller:
        fixes.append(f"set decoding.batch_size={smaller} ({estimate(smaller).total / GiB:.2f} GiB, estimate)")
    if not fixes:
        least = estimate(mesh.shape[DATA]).total
        fixes.append(f"a batch of {mesh.shape[DATA]} still needs {least / GiB:.2f} GiB per device: use more devices "
                     "or devices with more memory (python -m rsd_jax.capacity lists the slices each config fits)")
    return checks + [Check("memory", "fail", f"{text}: does not fit; " + ", or ".join(fixes))]


def largest_batch(estimate: Callable, rows: int, data: int, limit: int) -> int | None:
    """The largest multiple of `data` rows whose estimate fits `limit` (the estimate is linear in the rows but for
    one forward's activations: extrapolated from two points, then checked), or None when not even `data` fit."""
    one, two = estimate(rows).total, estimate(2 * rows).total
    per_row = (two - one) / rows
    guess = int((limit - (one - per_row * rows)) / per_row) // data * data if per_row > 0 else 0
    guess = min(guess, rows - data)
    while guess >= data and estimate(guess).total > limit:
        guess -= data
    return guess if guess >= data else None


# ------------------------------------------------------------------------------------------------ data
def config_sets(cfg: RunConfig) -> tuple[str, ...]:
    """The evaluation sets the config reads (data.sources where the config has that key, else data.source)."""
    return tuple(getattr(cfg.data, "sources", None) or ()) or (cfg.data.source,)


def data_checks(cfg: RunConfig | None, config_file: str | None) -> list[Check]:
    """The config's set(s) (a FAIL where the run could not read one), and every known set readable here."""
    from rsd_jax.data import sources
    from rsd_jax.paths import resolve_path

    off = sources.offline_variable()
    checks = []
    for name in config_sets(cfg) if cfg is not None else ():
        if cfg.data.path:
            path = resolve_path(cfg.data.path, config_file)
            status = "ok" if path.is_file() else "fail"
            checks.append(Check("data", status, f"{name}: data.path {path}" + ("" if path.is_file() else " not found")))
        elif name in sources.SOURCES:
            where = sources.local_copy(name)
            if where:
                checks.append(Check("data", "ok", f"{name}: {where}"))
            elif off:
                checks.append(Check("data", "fail", f"{name}: not here and downloads are off ({off}=1): "
                                                    f"{sources.way_out(name)}"))
            else:
                checks.append(Check("data", "warn", f"{name}: not here: the run downloads it first (checksum pinned)"))
        elif name == "prompts" and cfg.data.prompts_file not in (None, "-"):
            path = resolve_path(cfg.data.prompts_file, config_file)
            checks.append(Check("data", "ok" if path.is_file() else "fail", f"prompts file {path}"
                                + ("" if path.is_file() else " not found")))
        else:
            checks.append(Check("data", "ok", f"{name}: " + ("the config's prompts" if name == "prompts" else
                                                             "the embedded task, generated")))
    here = [n for n in sources.NAMES if sources.local_copy(n)]
    away = [n for n in sources.NAMES if n not in here]
    later = f"downloads are off ({off}=1)" if off else "downloaded on first use"
    checks.append(Check("sets", "ok", f"readable here: {', '.join(here) or 'none'}"
                                      + (f"; not here ({later}): {', '.join(away)}" if away else "")))
    return checks


# ------------------------------------------------------------------------------------------------ command
def cache_check() -> Check:
    """Which models the hub cache holds (from disk)."""
    index, cache, _ = hub_cache_index()
    sizes = sorted(((r.size_on_disk, name) for name, r in index.items()), reverse=True)
    shown = ", ".join(f"{name} ({size / 1e9:.1f} GB)" for size, name in sizes[:6])
    more = f" and {len(sizes) - 6} more" if len(sizes) > 6 else ""
    return Check("hub cache", "ok", f"{cache}: " + (f"{len(sizes)} model(s): {shown}{more}" if sizes else "no models"))


def run_checks(cfg: RunConfig | None, config_file: str | None, memory_gib: float | None) -> list[Check]:
    """Every check; without a config (cfg None) the install's alone: devices, versions, the hub cache, the sets
    readable here."""
    checks, limit = device_checks(memory_gib)
    checks += version_checks()
    if limit is None:
        return checks
    if cfg is None:
        return checks + [cache_check()] + data_checks(None, None)
    if cfg.mesh.distributed:
        checks.append(Check("devices", "warn", "mesh.distributed: this host's devices only (the doctor does not "
                                               "join the other processes); run it on each host"))
    models, folders = model_checks(cfg, config_file)
    try:
        checks += fit_checks(with_folders(cfg, folders), config_file, limit)
    except RSDError as e:
        checks.append(Check("memory", "fail", f"cannot estimate: {e}"))
    return checks + models + data_checks(cfg, config_file)


def render(checks: list[Check], config_file: str | None) -> str:
    failed = [c for c in checks if c.status == "fail"]
    lines = [f"rsd_jax doctor: {config_file or 'no --config: the install alone'}"]
    lines += [f"  {c.status.upper() if c.status == 'fail' else c.status:<4}  {c.topic:<9}  {c.text}" for c in checks]
    lines.append(f"doctor: {len(failed)} check(s) failed: the run would fail here" if failed else
                 "doctor: every check passed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from rsd_jax.configlib import add_config_flags, describe_if_asked, load_config, print_config_if_asked

    parser = argparse.ArgumentParser(prog="python -m rsd_jax.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="the run config to check (none: the install alone)")
    parser.add_argument("--memory-gib", type=float, help="memory per device in GiB (default: what the runtime says)")
    add_config_flags(parser)
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    args = parser.parse_args(argv)
    if describe_if_asked(args, RunConfig):
        return 0
    if args.memory_gib is not None and not args.memory_gib > 0:
        return exits.error(f"--memory-gib must be positive, got {args.memory_gib}")
    try:
        cfg = load_config(RunConfig, args.config, args.overrides) if args.config or args.overrides else None
        if print_config_if_asked(args, cfg or RunConfig()):
            return 0
        checks = run_checks(cfg, args.config, args.memory_gib)
    except RSDError as e:
        return exits.error(e)
    print(render(checks, args.config))
    return exits.BAD_INPUT if any(c.status == "fail" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
