"""Prompt templates: what the draft and the target read for a question (the PRM reads the raw question).

"plain" is the question and a newline (the embedded task's format); "qwen25-math-cot" is the paper's prompt, the
Qwen2.5-Math chain-of-thought template the official RSD code sends to both models; "chat" renders the tokenizer's
own chat template (tokenizer_config.json's `chat_template`, or chat_template.jinja) for one user turn with the
assistant's turn opened, as transformers' `apply_chat_template(..., add_generation_prompt=True)` does.
"""

from __future__ import annotations

import functools
import json

from rsd_jax.errors import ConfigError, InputError

TEMPLATES = ("plain", "qwen25-math-cot", "chat")
QWEN25_MATH_COT = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
                   "<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")


def format_prompt(question: str, template: str, tokenizer=None) -> str:
    """The draft's and target's prompt for a question; "chat" needs the tokenizer whose template it renders."""
    if template == "plain":
        return question + "\n"
    if template == "qwen25-math-cot":
        return QWEN25_MATH_COT.replace("{question}", question)
    if template == "chat":
        source = getattr(tokenizer, "chat_template", None)
        if not source:
            raise InputError("data.template=chat: the draft's tokenizer has no chat template (tokenizer_config.json's "
                             "chat_template, or chat_template.jinja); use plain or qwen25-math-cot")
        return render_chat(source, [{"role": "user", "content": question}])
    raise ConfigError(f"data.template must be one of {', '.join(TEMPLATES)}; got {template!r}")


def render_chat(source: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """A chat template (Jinja) rendered in a sandbox, with the globals and filters HF chat templates use."""
    import jinja2

    try:
        return _compiled(source).render(messages=messages, add_generation_prompt=add_generation_prompt, tools=None,
                                        documents=None)
    except jinja2.TemplateError as e:
        raise InputError(f"the tokenizer's chat template cannot be rendered ({e})") from None


@functools.lru_cache(maxsize=8)
def _compiled(source: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise InputError(f"the tokenizer's chat template is not valid Jinja (line {e.lineno}: {e.message})") from None
