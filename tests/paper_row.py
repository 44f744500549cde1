"""A Table 2 row on tiny models: the main setting's `evaluate` command with its model paths replaced by hub-layout
folders (tests/paper_models.py), on two sets, offline. Shared by tests/test_paper_tables.py and runnable as

    python tests/paper_row.py OUT_DIR [--every-method]

which builds the folders under OUT_DIR, runs the command (one device, printed first) and prints the paper's table:
with --every-method, every method of the config's row (the sampling baselines at n=2), the budget row calibrated
on a one-problem Minerva Math file written under OUT_DIR (RSD_DATA_DIR), two problems per set.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "configs" / "paper" / "qwen25_math_1.5b_7b_skywork1.5b.yaml"
#: Minerva Math's layout (fields problem, solution): the budget row's calibration split, without the network
MINERVA_ROW = {"problem": "What is $1+1$?", "solution": "So it is $\\boxed{2}$.", "type": "Arithmetic", "idx": 0}


def sharpen(folder: Path, gain: float) -> Path:
    """The model's logits times `gain` (its final norm's weight scaled): greedy decoding is unchanged, and its
    samples at the baselines' temperature follow the cycle (steps end, as a real model's do) instead of drawing
    from the 150k other tokens of a cycle LM's flat tail (each such sample runs to the token budget)."""
    import torch
    from safetensors.torch import load_file, save_file

    for shard in folder.glob("model-*.safetensors"):
        tensors = load_file(str(shard))
        tensors["model.norm.weight"] = (tensors["model.norm.weight"].float() * gain).to(torch.bfloat16)
        save_file(tensors, str(shard), metadata={"format": "pt"})
    return folder


def hub_folders(root: Path) -> dict[str, Path]:
    """The main setting's three checkpoints as tiny hub-layout folders under root, the draft sharpened."""
    sys.path.insert(0, str(Path(__file__).parent))
    import paper_models
    from rsd_jax.qwen_vocabulary import qwen_tokenizer

    tok = qwen_tokenizer()
    draft = paper_models.cycle_lm("Qwen2.5-Math-1.5B-Instruct", root / "draft", paper_models.DRAFT_CYCLE, tok)
    return {"draft": sharpen(draft, 4.0),
            "target": paper_models.cycle_lm("Qwen2.5-Math-7B-Instruct", root / "target", paper_models.TARGET_CYCLE,
                                            tok),
            "prm": paper_models.skywork_prm(root / "prm")}


def command(folders: dict, out: Path, methods: list[str], n: int = 1, tokens: int = 300) -> list[str]:
    """The main setting's command on the folders: two sets, n problems each, a short budget (`tokens` counting the
    prompt, 3 steps), one problem a batch, one device, Minerva Math's first problem as a calibration split."""
    return [sys.executable, "-m", "rsd_jax.evaluate", "--config", str(MAIN),
            *(f"models.{k}.path={v}" for k, v in folders.items()), "data.sources=[math500,gsm8k]", f"data.n={n}",
            f"decoding.max_new_tokens={tokens}", "decoding.max_steps=3", "decoding.patience=0", "decoding.batch_size=1",
            "mesh.model=1", "rsd.calibration_n=1", f"rsd.methods=[{','.join(json.dumps(m) for m in methods)}]",
            "--out", str(out)]


def environment(data_dir: Path | None = None) -> dict[str, str]:
    """Offline, one CPU device (speculative decoding runs on one device only), this checkout's rsd_jax."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", RSD_OFFLINE="1", HF_HUB_OFFLINE="1")
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "minerva_math.jsonl").write_text(json.dumps(MINERVA_ROW) + "\n")
        env["RSD_DATA_DIR"] = str(data_dir)
    return env


def every_method() -> list[str]:
    """The main config's methods, the sampling baselines at n=2 instead of 16."""
    from rsd_jax.config import RunConfig
    from rsd_jax.configlib import load_config

    return [m.replace("n=16", "n=2") for m in load_config(RunConfig, MAIN).rsd.methods]


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    methods = every_method() if "--every-method" in argv else ["rsd", "target", "draft", "speculative"]
    sys.path.insert(0, str(ROOT))
    folders = hub_folders(out / "hub")
    cmd = command(folders, out / "run", methods, n=2)
    print("$ python " + shlex.join(cmd[1:]), flush=True)
    start = time.time()
    done = subprocess.run(cmd, env=environment(out / "data"))
    print(f"exit {done.returncode} after {time.time() - start:.0f} s")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
