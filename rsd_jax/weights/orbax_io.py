"""Orbax save / restore of a `Model`: `DIR/model_config.json` plus `DIR/params` (an orbax checkpoint).

Restore builds the abstract tree from the config (shapes, dtypes and, when given, shardings), so arrays are
read straight into their target devices, never whole onto one device first.

Save writes `DIR/checksums.sha256` over the config and every file of the params; restore checks the files
against it before reading any (rsd_jax.weights.integrity): a flipped byte is one line naming the file. A
checkpoint saved before checksums existed loads as before, with a one-line notice (once per folder) saying how
to write them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from rsd_jax import signals
from rsd_jax.errors import CheckpointError
from rsd_jax.models import architectures
from rsd_jax.outputs import write_text_atomic
from rsd_jax.models.config import ModelConfig
from rsd_jax.models.model import Model
from rsd_jax.weights.integrity import CHECKSUM_FILE, verify_files, write_checksums

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_model(model: Model, directory: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Writes the model to `directory` (created; an existing params checkpoint is replaced)."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    record = {"model": model.config.to_dict(), **({"metadata": metadata} if metadata else {})}
    write_text_atomic(directory / CONFIG_FILE, json.dumps(record, indent=2) + "\n")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / PARAMS_DIR, model.pure_dict(), force=True)
    checkpointer.wait_until_finished()
    if jax.process_index() == 0:  # restore verifies every file against it
        write_checksums(directory, [directory / CONFIG_FILE, *(directory / PARAMS_DIR).rglob("*")])
    return directory


def read_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"not an rsd_jax checkpoint: {path} is missing")
    try:
        return ModelConfig.from_dict(json.loads(path.read_text())["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: malformed model config ({e})") from None


def is_orbax_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file()


def restore_model(directory: str | Path, *, shardings: Any = None, dtype: str | None = None,
                  config: ModelConfig | None = None, **config_overrides: Any) -> Model:
    """Restores a model saved by `save_model`.

    shardings: optional params-shaped tree (nnx.State or pure dict) of `jax.sharding.Sharding`s; each array
    is restored straight into its sharding; a float checkpoint restored into a config with `quantize` int8 / int4 is
    read into host memory and quantized parameter by parameter into them. dtype: cast to this dtype on restore (default: as saved).
    config: the config to restore into when already read (`model_config`); config_overrides replace fields
    (e.g. max_position_embeddings).
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {directory}")
    if config is None:
        config = read_config(directory).replace(**config_overrides)
        if dtype is not None:
            config = config.replace(dtype=dtype)
    if isinstance(shardings, nnx.State):
        shardings = nnx.to_pure_dict(shardings)
    saved = read_config(directory).quantize if (directory / CONFIG_FILE).is_file() else config.quantize
    if config.quantize != saved:
        return _restore_quantizing(directory, config, saved, shardings)
    abstract = nnx.to_pure_dict(Model.abstract(config).params)
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    params_dir = directory / PARAMS_DIR
    if not params_dir.is_dir():
        raise CheckpointError(f"checkpoint {directory} has no {PARAMS_DIR}/ folder")
    checked = (directory / CHECKSUM_FILE).is_file()
    if checked:
        verify_files(directory)  # against its checksums.sha256 (save_model writes one)
    _quiet_closed_loop_errors()
    try:
        pure = ocp.StandardCheckpointer().restore(params_dir, target)
    except Exception as e:  # orbax and TensorStore raise bare Exception for damaged OCDBT data
        signals.raise_if_interrupted()  # a restore cut by SIGINT / SIGTERM is an interruption, not a corrupt file
        raise CheckpointError(f"checkpoint {directory} is incomplete or corrupt ({_first_line(e)}): convert or "
                              f"copy it again") from None
    if not checked:
        _notice_unchecked(directory)  # after the restore: a failed one is its error line alone
    return Model.from_pure_dict(config, pure)


_NOTICED: set[Path] = set()


def _notice_unchecked(directory: Path) -> None:
    """One line on stderr, once per folder: a checkpoint saved before save_model wrote checksums loads unchecked."""
    if directory not in _NOTICED:
        _NOTICED.add(directory)
        print(f"notice: {directory} has no {CHECKSUM_FILE} (saved before rsd_jax wrote one), so a damaged byte in it "
              f"would go unnoticed; add one with `python -m rsd_jax.checksums --write {directory}`",
              file=sys.stderr)


def _restore_quantizing(directory: Path, config: ModelConfig, saved: str, shardings: Any) -> Model:
    """A float checkpoint restored into host memory, then quantized parameter by parameter into `shardings`
    (rsd_jax.weights.quantized); a quantized checkpoint cannot be restored at another precision."""
    from rsd_jax.weights.param_paths import leaves
    from rsd_jax.weights.quantized import quantized_params

    if saved != "none":
        raise CheckpointError(f"checkpoint {directory} holds {saved}-quantized weights and the run asks for "
                              f"quantize={config.quantize!r}: leave the model's quantize unset (or {saved!r}), or "
                              f"give the float checkpoint")
    host = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    float_config = config.replace(quantize="none")
    floats = restore_model(directory, config=float_config,
                           shardings=jax.tree.map(lambda _: host, nnx.to_pure_dict(Model.abstract(float_config).params)))
    flat = dict(leaves(floats.pure_dict()))
    placement = dict(leaves(shardings or {}))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    pure = quantized_params(config, lambda path, index: np.asarray(flat[path][index], np.float32), placement, device)
    return Model.from_pure_dict(config, pure)


def _first_line(e: Exception) -> str:
    """The head of a TensorStore or orbax message: its first line, without the JSON spec TensorStore appends."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text.split(" [tensorstore_spec")[0][:400]


def _quiet_closed_loop_errors() -> None:
    """A failed orbax restore leaves TensorStore callbacks that report "Event loop is closed" through
    sys.unraisablehook, as tracebacks after the clear CheckpointError; drop exactly those (once installed,
    every other unraisable exception still reaches the previous hook)."""
    previous = sys.unraisablehook
    if getattr(previous, "_rsd_jax_quiet", False):
        return

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    hook._rsd_jax_quiet = True
    sys.unraisablehook = hook


def model_config(path: str | Path, *, dtype: str | None = None, head: str | None = None,
                 **overrides: Any) -> ModelConfig:
    """The config of the model in an orbax checkpoint or an HF snapshot folder (nothing else is read), with the
    dtype, the PRM head and any other field overridden (e.g. max_position_embeddings)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model folder not found: {path}")
    if is_orbax_checkpoint(path):
        config = read_config(path).replace(**overrides)
        return config.replace(dtype=dtype) if dtype is not None else config
    return architectures.config_from_folder(path, dtype=dtype or "float32", head=head, **overrides)


def load_model(path: str | Path, *, config: ModelConfig | None = None, shardings: Any = None, **kw: Any) -> Model:
    """An orbax checkpoint written by `save_model`, or an HF snapshot folder; config (default: read with `kw` as
    in `model_config`) and shardings (default: the first device) as in `restore_model` / `load_hf_model`."""
    from rsd_jax.weights.hf import load_hf_model

    path = Path(path)
    config = config or model_config(path, **kw)
    if is_orbax_checkpoint(path):
        return restore_model(path, shardings=shardings, config=config)
    return load_hf_model(path, shardings=shardings, config=config)
