"""Which config of the paper's setting fits the devices JAX finds: `paper_plan()` (notebook 03's choice).

    plan = rsd_jax.paper_plan()            # asks JAX: platform, device count, memory per device
    print(plan.description)                # what it found and what it will run
    records, summary = rsd_jax.run(plan.config, [*plan.overrides, "data.n=64"])

The choice (`choose`, a pure function of `Devices`, so that it is tested without devices or the configs' files):
- a CPU runtime (or offline=True): the offline mode, tiny random models in the hub's layout with the real
  tokenizers, configs and protocol (written under `workdir`; no download);
- one device of 38 GiB or more (an A100 80 GB, an H100): the bfloat16 config on it (the three models' weights are
  19.9 GiB; about 36 GiB per device at batch 32 by `python -m rsd_jax.capacity`'s estimate);
- a slice whose device count is a multiple of 4 (Kaggle's TPU v5e-8, 4 or 8 GPUs): the bfloat16 config, tensor
  parallel over 4 devices (7.8 of 15.75 GiB per v5e chip at batch 32);
- otherwise one 16-24 GB chip (Colab's TPU v5e-1, a T4, an L4; several of them split the batch): the single-chip
  config with quantized weights, SINGLE_CHIP_CONFIG.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rsd_jax.errors import InputError

BF16_CONFIG = "configs/paper/qwen25_math_1.5b_7b_skywork1.5b.yaml"
SINGLE_CHIP_CONFIG = "configs/paper/qwen25_math_1.5b_7b_skywork1.5b_v5e1.yaml"
BF16_ONE_DEVICE_GIB = 38.0  # one device this large holds the bfloat16 setting (about 36 GiB at batch 32, estimated)
TENSOR_PARALLEL = 4  # the bfloat16 config's model axis on a slice (its KV heads: 2 and 4)
GIB = 1 << 30
HUB_NAMES = {"draft": "Qwen2.5-Math-1.5B-Instruct", "target": "Qwen2.5-Math-7B-Instruct",
             "prm": "Skywork-o1-Open-PRM-Qwen-2.5-1.5B"}


@dataclasses.dataclass(frozen=True)
class Devices:
    """What JAX finds: its platform ("cpu", "tpu", "gpu"), the first device's kind (e.g. "TPU v5 lite"), how many
    devices, and the memory one device offers (bytes; None where JAX does not say, as on CPU)."""

    platform: str
    kind: str
    count: int
    bytes_per_device: int | None = None

    def __str__(self) -> str:
        memory = f", {self.bytes_per_device / GIB:.2f} GiB each" if self.bytes_per_device else ""
        return f"{self.count} x {self.kind} ({self.platform}{memory})"


@dataclasses.dataclass(frozen=True)
class Plan:
    """A setting of the paper's main experiment: its name ("offline", "single_chip", "one_device", "sharded"),
    the config file and the overrides to run it with, and a sentence saying what was found and what will run."""

    setting: str
    config: str
    overrides: tuple[str, ...]
    description: str


def devices_found() -> Devices:
    """Asks JAX which platform and devices this process has (jax.default_backend, jax.devices, memory_stats)."""
    import jax

    devices = jax.devices()
    stats = devices[0].memory_stats() if jax.default_backend() != "cpu" else None
    limit = (stats or {}).get("bytes_limit")
    return Devices(jax.default_backend(), devices[0].device_kind, len(devices), int(limit) if limit else None)


def choose(devices: Devices, offline: bool | None = None) -> Plan:
    """The setting that fits `devices` (module docstring); offline=None: offline exactly on a CPU runtime."""
    offline = devices.platform == "cpu" if offline is None else offline
    if offline:
        model = max(m for m in (1, 2, TENSOR_PARALLEL) if devices.count % m == 0)
        return Plan("offline", BF16_CONFIG, (f"mesh.model={model}",), f"found {devices}: will run the offline mode (tiny random models in "
                    "the hub's layout, the real tokenizers and protocol; no download)")
    if devices.platform == "cpu":
        raise InputError(f"found {devices}, no accelerator: the paper's models need a TPU or GPU runtime; run the "
                         "offline mode (OFFLINE = True) or pick a TPU runtime (Runtime > Change runtime type)")
    gib = (devices.bytes_per_device or 0) / GIB
    if gib >= BF16_ONE_DEVICE_GIB:
        return Plan("one_device", BF16_CONFIG, ("mesh.model=1",),
                    f"found {devices}: will run {BF16_CONFIG} in bfloat16, each device holding all three models")
    if devices.count % TENSOR_PARALLEL == 0:
        return Plan("sharded", BF16_CONFIG, (f"mesh.model={TENSOR_PARALLEL}",),
                    f"found {devices}: will run {BF16_CONFIG} in bfloat16, tensor parallel over {TENSOR_PARALLEL} "
                    f"devices and data parallel over {devices.count // TENSOR_PARALLEL}")
    return Plan("single_chip", SINGLE_CHIP_CONFIG, (),
                f"found {devices}: will run {SINGLE_CHIP_CONFIG}, quantized weights that fit one 16 GB chip"
                + (f" (the batch split over the {devices.count} devices)" if devices.count > 1 else ""))


def tiny_hub_models(root: str | Path) -> tuple[str, ...]:
    """Writes tiny random draft, target and PRM in the hub's layout (the real configs' shapes shrunk, the real
    Qwen2.5 tokenizer files) under `root`, once; returns the overrides that run the paper's config on them (float32,
    a 32-token budget not counting the prompt, batch 4)."""
    from rsd_jax.hub_layout import Layout, write_snapshot

    tiny = (("hidden_size", 64), ("intermediate_size", 128), ("num_attention_heads", 4), ("num_key_value_heads", 2),
            ("num_hidden_layers", 1))
    overrides = []
    for role, name in HUB_NAMES.items():
        folder = Path(root) / role
        if not (folder / "config.json").is_file():
            write_snapshot(Layout(name, tiny), folder, seed=len(role), scale=0.3,
                           bos_token="<|endoftext|>" if role == "prm" else None)
        overrides += [f"models.{role}.path={folder.resolve()}", f"models.{role}.dtype=float32"]
    return (*overrides, "decoding.budget_includes_prompt=false", "decoding.max_new_tokens=32", "decoding.batch_size=4")


def paper_plan(offline: bool | None = None, workdir: str | Path = "runs/tiny_hub") -> Plan:
    """`choose` for the devices JAX finds; the offline mode's tiny models are written under `workdir` first."""
    plan = choose(devices_found(), offline)
    if plan.setting == "offline":
        plan = dataclasses.replace(plan, overrides=(*plan.overrides, *tiny_hub_models(workdir)))
    return plan
