"""Tiny models in the hub's layout of the paper's checkpoints (rsd_jax.hub_layout: real configs but narrow and
shallow, real Qwen2.5 tokenizer files), whose greedy decoding is robust to bfloat16 rounding.

A "cycle" LM follows a fixed successor map over a few Qwen tokens (every other token leads to the first one): its
embeddings put each cycle token on its own axis, the first layer's MLP maps axis i onto axis succ(i) with a large
gain, attention and later layers add nothing, and the LM head reads the embeddings (tied, or an untied copy). The
greedy next token then wins by a margin of several logits, so bfloat16 on either side cannot flip it, while the
steps still end in the merged tokens the PRM protocol must handle ("$" + ".\\n\\n", ":\\n\\n", EOS).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rsd_jax.hub_layout import Layout, write_snapshot

TINY = (("hidden_size", 64), ("intermediate_size", 128), ("num_attention_heads", 4), ("num_key_value_heads", 2))
DRAFT_CYCLE = ("We", " have", " $", "x", "$", ".\n\n", "Then", " y", " =", " two", ":\n\n", "So", " answer", " is",
               " five", "<|im_end|>")
TARGET_CYCLE = ("Let", " us", " compute", ":\n\n", "First", ",", " a", " =", " one", ".\n\n", "Next", " b", " is",
                " three", ")\n\n")


def cycle_lm(name: str, folder: Path, cycle: tuple[str, ...], tokenizer, layers: int = 2) -> Path:
    """A cycle LM of catalogued architecture `name` in `folder` (see the module docstring)."""
    write_snapshot(Layout(name, TINY + (("num_hidden_layers", layers),)), folder, seed=len(cycle))
    ids = [tokenizer.encode(piece) for piece in cycle]
    assert all(len(i) == 1 for i in ids), "every cycle piece must be one token"
    ids = [i[0] for i in ids]
    config = json.loads((folder / "config.json").read_text())
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    start = len(ids)  # the axis of every token outside the cycle: it leads to the first cycle token
    assert start < hidden
    embed = np.zeros((vocab, hidden), np.float32)
    embed[:, start] = 1.0
    for axis, token in enumerate(ids):
        embed[token] = 0.0
        embed[token, axis] = 1.0
    successor = {axis: (axis + 1) % len(ids) for axis in range(len(ids))} | {start: 0}
    gate = np.zeros((config["intermediate_size"], hidden), np.float32)
    gate[:, :start + 1] = 5.0 / np.sqrt(hidden)  # silu(5) ≈ 5 for every embedding axis after the RMS norm
    up = np.zeros((config["intermediate_size"], hidden), np.float32)
    up[:hidden, :hidden] = np.eye(hidden)
    down = np.zeros((hidden, config["intermediate_size"]), np.float32)
    for axis, nxt in successor.items():
        down[nxt, axis] = 1.0
    for shard in sorted(folder.glob("model-*.safetensors")):
        tensors = load_file(str(shard))
        for key in tensors:
            value = None
            if key in ("model.embed_tokens.weight", "lm_head.weight"):
                value = embed
            elif key.endswith("norm.weight"):
                value = np.ones(tensors[key].shape, np.float32)
            elif key.endswith(("o_proj.weight", "o_proj.bias")) or (".mlp." in key and ".layers.0." not in key):
                value = np.zeros(tensors[key].shape, np.float32)
            elif key.endswith("layers.0.mlp.gate_proj.weight"):
                value = gate
            elif key.endswith("layers.0.mlp.up_proj.weight"):
                value = up
            elif key.endswith("layers.0.mlp.down_proj.weight"):
                value = down
            if value is not None:
                tensors[key] = torch.from_numpy(value).to(torch.bfloat16)
        save_file(tensors, str(shard), metadata={"format": "pt"})
    return folder


def skywork_prm(folder: Path, layers: int = 1) -> Path:
    """A random Skywork-layout PRM whose tokenizer has a BOS, as the official protocol reads it."""
    return write_snapshot(Layout("Skywork-o1-Open-PRM-Qwen-2.5-1.5B", TINY + (("num_hidden_layers", layers),)),
                          folder, seed=7, scale=0.05, bos_token="<|endoftext|>")


def cycle_text(cycle: tuple[str, ...], n_tokens: int) -> list[str]:
    return [cycle[i % len(cycle)] for i in range(n_tokens)]
