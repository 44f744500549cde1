"""Tiny random HF transformers models (torch CPU) saved as snapshot folders: the parity reference."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=512)


def qwen2_config(**kw) -> transformers.Qwen2Config:
    args = {**TINY, "num_key_value_heads": 2, "rope_theta": 1_000_000.0, "tie_word_embeddings": True, **kw}
    return transformers.Qwen2Config(**args)


def llama_config(**kw) -> transformers.LlamaConfig:
    args = {**TINY, "num_key_value_heads": 1, "rope_theta": 500_000.0, "tie_word_embeddings": False, **kw}
    return transformers.LlamaConfig(**args)


def qwen3_config(**kw) -> transformers.Qwen3Config:
    """Qwen3: q/k RMSNorm per head, no q/k/v bias, and a head_dim (24) that is not hidden / heads (16)."""
    args = {**TINY, "num_key_value_heads": 2, "head_dim": 24, "rope_theta": 1_000_000.0,
            "tie_word_embeddings": False, **kw}
    return transformers.Qwen3Config(**args)


CAUSAL_LMS = {"qwen2": transformers.Qwen2ForCausalLM, "llama": transformers.LlamaForCausalLM,
              "qwen3": transformers.Qwen3ForCausalLM}


def save_causal_lm(config, folder: Path, seed: int = 0, max_shard_size: str | None = None):
    """Builds a random model of the config's family, perturbs its norms and biases (zero/one defaults
    would hide bugs), saves it with safetensors, returns the torch model in eval mode."""
    torch.manual_seed(seed)
    model = CAUSAL_LMS[config.model_type](config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kw)
    return model


def save_skywork_prm(folder: Path, seed: int = 0, **config_overrides):
    """A Skywork-o1-Open-PRM-shaped folder: Qwen2 backbone + `v_head.summary`; returns (backbone, v_head)."""
    config = qwen2_config(**{"tie_word_embeddings": False, **config_overrides})
    torch.manual_seed(seed)
    lm = save_causal_lm(config, folder, seed)
    v_head = torch.nn.Linear(config.hidden_size, 1)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors["v_head.summary.weight"] = v_head.weight.detach().clone()
    tensors["v_head.summary.bias"] = v_head.bias.detach().clone()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["Qwen2ForPrmModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    return lm, v_head
