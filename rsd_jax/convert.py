"""Convert an HF snapshot folder to an orbax checkpoint: `python -m rsd_jax.convert SRC DST [--dtype bfloat16]
[--quantize int8|int4]`.

SRC is a folder or a hub id (`org/name`, `org/name@revision`, or `--revision`; see rsd_jax.weights.sources).
The tokenizer files of SRC (tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.json,
merges.txt) and its generation_config.json (the EOS ids) are copied beside the checkpoint, so DST can be used as
a model path on its own. Loading the orbax copy is faster and can restore straight into a sharding
(rsd_jax.weights.restore_model). An existing non-empty DST is refused unless --overwrite; the checkpoint is
built in a temporary sibling and renamed to DST when complete, so DST never holds half a model.
--quantize stores int8 / int4 weights (quantized shard by shard as they are read; rsd_jax.models.quantize), which a
run restores as they are (its models.<role>.quantize left unset).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rsd_jax import exits
from rsd_jax.errors import RSDError
from rsd_jax.outputs import check_destination, staged_folder
from rsd_jax.weights import load_hf_model, save_model
from rsd_jax.weights.integrity import write_checksums
from rsd_jax.weights.sources import model_folder

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "chat_template.jinja")
SIDE_FILES = TOKENIZER_FILES + ("generation_config.json",)


def convert(src: Path, dst: Path, dtype: str = "bfloat16", head: str | None = None, overwrite: bool = False,
            quantize: str = "none") -> Path:
    check_destination(dst, "DST", overwrite, "--overwrite")  # before the weights are read
    model = load_hf_model(src, dtype=dtype, quantize=quantize, **({"head": head} if head else {}))
    with staged_folder(dst, overwrite) as tmp:
        save_model(model, tmp, metadata={"converted_from": str(src)})
        for name in SIDE_FILES:
            if (src / name).is_file():
                shutil.copy(src / name, tmp / name)
        write_checksums(tmp)  # checksums.sha256: the loaders check every file against it (weights.integrity)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsd_jax.convert", description=__doc__.split("\n")[0])
    parser.add_argument("src", help="HF snapshot folder (config.json + *.safetensors) or hub id org/name[@revision]")
    parser.add_argument("dst", type=Path, help="output folder (refused when it exists and is not empty)")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--revision", help="hub ids: branch, tag or commit hash")
    parser.add_argument("--head", choices=("value", "token_logit"), help="PRM head override")
    parser.add_argument("--quantize", default="none", choices=("none", "int8", "int4"),
                        help="weight-only quantization of the stored copy (docs/quantization.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    args = parser.parse_args(argv)
    try:
        out = convert(model_folder(args.src, revision=args.revision), args.dst, args.dtype, args.head,
                      args.overwrite, args.quantize)
    except RSDError as e:
        return exits.error(e)
    except OSError as e:
        return exits.os_error(e)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
