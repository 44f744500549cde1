"""Convert an HF snapshot folder to an orbax checkpoint: `python -m rsd_jax.convert SRC DST [--dtype bfloat16]`.

SRC is a folder or a hub id (`org/name`, `org/name@revision`, or `--revision`; see rsd_jax.weights.sources).

The tokenizer files of SRC (tokenizer.json, tokenizer_config.json) are copied beside the checkpoint, so DST
can be used as a model path on its own. Loading the orbax copy is faster and can restore straight into a
sharding (rsd_jax.weights.restore_model).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rsd_jax.errors import RSDError
from rsd_jax.weights import load_hf_model, save_model
from rsd_jax.weights.sources import model_folder

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def convert(src: Path, dst: Path, dtype: str = "bfloat16", head: str | None = None) -> Path:
    model = load_hf_model(src, dtype=dtype, **({"head": head} if head else {}))
    save_model(model, dst, metadata={"converted_from": str(src)})
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.convert", description=__doc__.split("\n")[0])
    parser.add_argument("src", help="HF snapshot folder (config.json + *.safetensors) or hub id org/name[@revision]")
    parser.add_argument("dst", type=Path, help="output folder")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--revision", help="hub ids: branch, tag or commit hash")
    parser.add_argument("--head", choices=("value", "token_logit"), help="PRM head override")
    args = parser.parse_args(argv)
    try:
        out = convert(model_folder(args.src, revision=args.revision), args.dst, args.dtype, args.head)
    except RSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
