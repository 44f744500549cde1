"""Merge two checkpoints: `python -m rsd_jax.merge --a CKPT --b CKPT --weight w --out DIR`.

A linear merge w·A + (1 − w)·B of two models of one architecture (rsd_jax.weights.merging): shapes are checked
(an error names the first parameter that differs), a parameter only one side has (a PRM's value head, an untied
LM head) is kept from that side, and the merged model has both sides' heads (an LM merged with a value-head PRM
is an "lm+value" model: it writes steps and scores them). The result is an orbax checkpoint the loaders read, with
A's tokenizer beside it and a manifest recording the command, the sources and the weight. An existing non-empty
DIR is refused unless --overwrite. Paper Table 4 merges draft+PRM and target+PRM this way (configs/arith_merged_*).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from rsd_jax import exits
from rsd_jax.errors import InputError, RSDError
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


def merge_checkpoints(a: Path, b: Path, weight: float, out: Path, *, overwrite: bool = False,
                      command: str = "") -> dict:
    """Merges the orbax checkpoints a and b into out; returns the manifest written beside the model."""
    if not 0.0 <= weight <= 1.0:  # before any model is read (NaN fails this too)
        raise InputError(f"--weight must be in [0, 1], got {weight}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.merge", description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="checkpoint A (orbax folder, e.g. checkpoints/arith_draft)")
    parser.add_argument("--b", required=True, help="checkpoint B, of A's architecture")
    parser.add_argument("--weight", type=float, required=True, help="w in w·A + (1 − w)·B, in [0, 1]")
    parser.add_argument("--out", required=True, help="the merged checkpoint's folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    args = parser.parse_args(argv)
    command = "python -m rsd_jax.merge " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    try:
        manifest = merge_checkpoints(Path(args.a), Path(args.b), args.weight, Path(args.out),
                                     overwrite=args.overwrite, command=command)
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    print(json.dumps({"out": args.out, "head": manifest["model"]["head"], "params": manifest["params"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
