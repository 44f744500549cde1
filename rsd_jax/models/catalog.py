"""The paper's real architectures, as their hub snapshots describe them (config.json, generation config, special
tokens), without any weights: the source of the capacity tables, the compile reports and the rehearsals.

Qwen2.5-Math-{1.5B,7B,72B}-Instruct (drafts and targets) and Skywork-o1-Open-PRM-Qwen-2.5-{1.5B,7B} (the PRMs: a
Qwen2.5-Math backbone of the same shape plus a value head `v_head.summary`); the general models of Table 2:
Qwen2.5-{1.5B,7B}-Instruct (the Math models' shapes, a 32k context, RoPE base 10^6) and Llama-3.2-1B-Instruct /
Llama-3.1-8B-Instruct (Llama-3 RoPE scaling, 128k context). Every snapshot states
`max_position_embeddings: 4096` and bfloat16 weights; the Qwen2.5 vocabulary has 151,665 tokens, the embeddings
151,936 (1.5B) or 152,064 rows (7B, 72B).
"""

from __future__ import annotations

from typing import Any

from rsd_jax.models import architectures
from rsd_jax.models.config import ModelConfig

QWEN_BOS, QWEN_EOS, QWEN_IM_END = 151643, 151643, 151645  # <|endoftext|> doubles as BOS id and pad; <|im_end|>
LLAMA_BOS, LLAMA_EOS, LLAMA_VOCAB = 128000, (128001, 128008, 128009), 128256  # <|begin_of_text|>; end of text/turn


def _qwen25_math(*, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, vocab: int, tied: bool) -> dict:
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tied, "torch_dtype": "bfloat16", "bos_token_id": QWEN_BOS,
        "eos_token_id": QWEN_IM_END, "sliding_window": 4096, "use_sliding_window": False,
        "max_window_layers": layers, "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
    }


def _qwen25_general(math: dict, sliding_window: int) -> dict:
    """A Qwen2.5-Instruct snapshot: its Math sibling's shapes, a 32,768-token context and RoPE base 10^6."""
    return {**math, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "sliding_window": sliding_window}


def _llama3(*, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, tied: bool, factor: float) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": hidden,
        "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": hidden // heads, "vocab_size": LLAMA_VOCAB,
        "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "rope_scaling": {"factor": factor, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": tied, "torch_dtype": "bfloat16", "bos_token_id": LLAMA_BOS,
        "eos_token_id": list(LLAMA_EOS), "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
    }


def _skywork(backbone: dict) -> dict:
    return {**backbone, "architectures": ["Qwen2ForPrmModel"], "eos_token_id": QWEN_EOS}


_QWEN_1_5B = _qwen25_math(hidden=1536, layers=28, heads=12, kv_heads=2, ffn=8960, vocab=151936, tied=True)
_QWEN_7B = _qwen25_math(hidden=3584, layers=28, heads=28, kv_heads=4, ffn=18944, vocab=152064, tied=False)
_QWEN_72B = _qwen25_math(hidden=8192, layers=80, heads=64, kv_heads=8, ffn=29568, vocab=152064, tied=False)

#: name -> the snapshot's config.json
HF_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen2.5-Math-1.5B-Instruct": _QWEN_1_5B,
    "Qwen2.5-Math-7B-Instruct": _QWEN_7B,
    "Qwen2.5-Math-72B-Instruct": _QWEN_72B,
    "Skywork-o1-Open-PRM-Qwen-2.5-1.5B": _skywork(_QWEN_1_5B),
    "Skywork-o1-Open-PRM-Qwen-2.5-7B": _skywork(_QWEN_7B),
    "Qwen2.5-1.5B-Instruct": _qwen25_general(_QWEN_1_5B, sliding_window=32768),
    "Qwen2.5-7B-Instruct": _qwen25_general(_QWEN_7B, sliding_window=131072),
    "Llama-3.2-1B-Instruct": _llama3(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, tied=True, factor=32.0),
    "Llama-3.1-8B-Instruct": _llama3(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, tied=False,
                                     factor=8.0),
}

#: name -> the hub repository it comes from
HUB_IDS = {
    "Qwen2.5-Math-1.5B-Instruct": "Qwen/Qwen2.5-Math-1.5B-Instruct",
    "Qwen2.5-Math-7B-Instruct": "Qwen/Qwen2.5-Math-7B-Instruct",
    "Qwen2.5-Math-72B-Instruct": "Qwen/Qwen2.5-Math-72B-Instruct",
    "Skywork-o1-Open-PRM-Qwen-2.5-1.5B": "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B",
    "Skywork-o1-Open-PRM-Qwen-2.5-7B": "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B",
    "Qwen2.5-1.5B-Instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen2.5-7B-Instruct": "Qwen/Qwen2.5-7B-Instruct",
    "Llama-3.2-1B-Instruct": "meta-llama/Llama-3.2-1B-Instruct",
    "Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
}

#: generation_config.json of the Qwen2.5-Math-Instruct snapshots (the EOS ids a converted folder must keep)
QWEN_GENERATION_CONFIG = {"bos_token_id": QWEN_BOS, "pad_token_id": QWEN_BOS, "eos_token_id": [QWEN_IM_END, QWEN_EOS],
                          "do_sample": True, "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8,
                          "top_k": 20}

#: the Qwen2.5-Math-Instruct chat template: a system turn (by default the step-by-step instruction the paper's
#: qwen25-math-cot prompt carries), then each message, then an opened assistant turn
QWEN25_MATH_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}"
    "{% else %}{% set system = 'Please reason step by step, and put your final answer within \\\\boxed{}.' %}"
    "{% set rest = messages %}{% endif %}"
    "{{ '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}"
    "{% for message in rest %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def model_config(name: str, *, dtype: str = "bfloat16", **overrides: Any) -> ModelConfig:
    """The ModelConfig of a catalogued architecture (overrides: e.g. num_layers for a shallower copy)."""
    return architectures.config_from_hf(HF_CONFIGS[name], dtype=dtype, **overrides)


def is_prm(name: str) -> bool:
    return architectures.resolve(HF_CONFIGS[name]["architectures"][0])[1] == "value"
