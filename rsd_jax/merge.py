"""Merge two checkpoints: `python -m rsd_jax.merge --a A --b B --weight w --out DIR`.

A linear merge w·A + (1 − w)·B of two models of one architecture: shapes are checked (an error names the first
parameter that differs), a parameter only one side has (a PRM's value head, an untied LM head) is kept from that
side, and the merged model has both sides' heads (an LM merged with a value-head PRM is an "lm+value" model: it
writes steps and scores them). Paper Table 4 merges draft+PRM and target+PRM this way.

A and B are either both orbax checkpoints (rsd_jax's own: the result is one, with A's tokenizer beside it) or both
hub-layout folders, each given as a folder or a hub id (org/name[@revision]; read from the Hugging Face cache,
downloaded first when online, never with HF_HUB_OFFLINE=1): the result is then a hub-layout folder (config.json,
safetensors shards, tokenizer files) that the loaders, and transformers, read (rsd_jax.weights.hub_merge).

Special tokens: their ids are vocabulary positions, not weights, so they are not merged; the vocabularies must be
the same, and the merged model keeps the special tokens (config.json, generation_config.json, tokenizer) of the side
that writes, the one with an LM head (A on a tie). Merging Qwen2.5-Math-1.5B-Instruct (eos_token_id 151645,
<|im_end|>) with Skywork-o1-Open-PRM-Qwen-2.5-1.5B (151643) gives a model that stops at 151645, as the LM does; the
PRM's tokenizer, whose BOS the official PRM protocol puts first, is kept in DIR/prm_tokenizer for
`models.prm_tokenizer`. DIR gets a manifest (the command, the sources, the weight); an existing non-empty DIR is
refused unless --overwrite. configs/arith_merged_* run the embedded Table 4 rows.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from rsd_jax import exits
from rsd_jax.errors import CheckpointError, InputError, RSDError
from rsd_jax.loading import CHAR_TOKENIZER_FILE
from rsd_jax.outputs import check_destination, staged_folder
from rsd_jax.weights import restore_model, save_model
from rsd_jax.weights.integrity import write_checksums
from rsd_jax.weights.merging import merge_models

#: tokenizer files copied from A's folder when present
TOKENIZER_FILES = (CHAR_TOKENIZER_FILE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _manifest_of(folder: Path) -> dict | None:
    path = folder / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def check_weight(weight: float) -> None:
    """Before any model is read: w in [0, 1] (NaN fails this too)."""
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"--weight must be in [0, 1], got {weight}")


def merge_checkpoints(a: Path, b: Path, weight: float, out: Path, *, overwrite: bool = False,
                      command: str = "") -> dict:
    """Merges the orbax checkpoints a and b into out; returns the manifest written beside the model."""
    check_weight(weight)
    check_destination(out, "--out", overwrite, "--overwrite")
    model = merge_models(restore_model(a), restore_model(b), weight)
    sources = {side: {"path": str(path), "command": (_manifest_of(path) or {}).get("command")}
               for side, path in (("a", a), ("b", b))}
    manifest = {"model": model.config.to_dict(), "params": model.num_params(), "command": command,
                "merge": {"weight_a": weight, "weight_b": 1.0 - weight, **sources}}
    with staged_folder(out, overwrite) as tmp:
        save_model(model, tmp, metadata={"merged_from": [str(a), str(b)], "weight_a": weight})
        for name in TOKENIZER_FILES:
            if (a / name).is_file():
                shutil.copy2(a / name, tmp / name)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        write_checksums(tmp)  # checksums.sha256: the loaders check every file against it (weights.integrity)
    return manifest


def merge_hub(a: Path, b: Path, weight: float, out: Path, *, overwrite: bool = False, command: str = "",
              sources: tuple[str, str] = ("", "")) -> dict:
    """Merges the hub-layout folders a and b into the hub-layout folder out; returns the manifest written beside."""
    from rsd_jax.weights.hub_merge import merge_hub_folders

    check_weight(weight)
    check_destination(out, "--out", overwrite, "--overwrite")
    with staged_folder(out, overwrite) as tmp:
        merged = merge_hub_folders(a, b, weight, tmp)
        manifest = {"command": command, "format": "hub", **merged,
                    "merge": {"weight_a": weight, "weight_b": 1.0 - weight,
                              "a": {"source": sources[0], "path": str(a)}, "b": {"source": sources[1], "path": str(b)}}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        write_checksums(tmp)  # checksums.sha256: the loaders check every file against it (weights.integrity)
    return manifest


def resolve_input(raw: str, flag: str) -> tuple[Path, str]:
    """(the folder of --a / --b, "orbax" or "hub"): a hub id resolved to its cached snapshot."""
    from rsd_jax.weights.hub_merge import is_hub_folder
    from rsd_jax.weights.orbax_io import is_orbax_checkpoint
    from rsd_jax.weights.sources import model_folder

    folder = model_folder(raw)
    if not folder.is_dir():
        raise CheckpointError(f"{flag} {raw}: no such folder")
    if is_orbax_checkpoint(folder):
        return folder, "orbax"
    if is_hub_folder(folder):
        return folder, "hub"
    raise CheckpointError(f"{flag} {folder}: neither an orbax checkpoint (model_config.json) nor a hub-layout folder "
                          "(config.json and *.safetensors)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.merge", description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="checkpoint A: an orbax folder (e.g. checkpoints/arith_draft), a "
                                                   "hub-layout folder or a hub id")
    parser.add_argument("--b", required=True, help="checkpoint B, of A's architecture and kind")
    parser.add_argument("--weight", type=float, required=True, help="w in w·A + (1 − w)·B, in [0, 1]")
    parser.add_argument("--out", required=True, help="the merged checkpoint's folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    args = parser.parse_args(argv)
    command = "python -m rsd_jax.merge " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    try:
        check_weight(args.weight)
        (a, kind_a), (b, kind_b) = resolve_input(args.a, "--a"), resolve_input(args.b, "--b")
        if kind_a != kind_b:
            raise CheckpointError(f"--a is {kind_a} ({a}) and --b is {kind_b} ({b}): give two of a kind (an orbax "
                                  "copy of a hub folder: python -m rsd_jax.convert)")
        if kind_a == "hub":
            manifest = merge_hub(a, b, args.weight, Path(args.out), overwrite=args.overwrite, command=command,
                                 sources=(args.a, args.b))
            print(json.dumps({"out": args.out, "head": manifest["head"], "format": "hub",
                              "eos_token_id": manifest["eos_token_id"]}))
            return 0
        manifest = merge_checkpoints(a, b, args.weight, Path(args.out), overwrite=args.overwrite, command=command)
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    print(json.dumps({"out": args.out, "head": manifest["model"]["head"], "params": manifest["params"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
