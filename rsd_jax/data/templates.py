"""Prompt templates: what the draft and the target read for a question (the PRM reads the raw question).

"plain" is the question and a newline (the embedded task's format); "qwen25-math-cot" is the paper's prompt, the
Qwen2.5-Math chain-of-thought template the official RSD code sends to both models; "chat" renders the tokenizer's
own chat template (tokenizer_config.json's `chat_template`, or chat_template.jinja) for one user turn with the
assistant's turn opened, as transformers' `apply_chat_template(..., add_generation_prompt=True)` does.

A chat template is code from the model's folder, so it runs in Jinja's immutable sandbox with bounds on what it
can make: at most MAX_ITERATIONS steps over `range` in one rendering (a single range is also capped by the
sandbox), strings and lists built by `*` or numbers by `**` of at most MAX_CHARS, the width arguments of
`center`, `indent` and `format` likewise, and a rendered prompt of at most MAX_CHARS characters. Each overflow is
one InputError line, raised before the memory is taken or the time spent.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import threading

from rsd_jax.errors import ConfigError, InputError

TEMPLATES = ("plain", "qwen25-math-cot", "chat")
MAX_ITERATIONS = 1_000_000  # range steps in one rendering
MAX_CHARS = 1_000_000  # the rendered prompt, and any one string, list or number a template builds
_budget = threading.local()
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

    _budget.left = MAX_ITERATIONS
    pieces, length = [], 0
    try:
        for piece in _compiled(source).generate(messages=messages, add_generation_prompt=add_generation_prompt,
                                                tools=None, documents=None):
            length += len(piece)
            if length > MAX_CHARS:
                raise TemplateBound(f"it renders more than {MAX_CHARS:,} characters")
            pieces.append(piece)
    except TemplateBound as e:
        raise InputError(f"the tokenizer's chat template is refused: {e}; fix the template "
                         f"(chat_template.jinja or tokenizer_config.json), or use data.template=plain") from None
    except (jinja2.TemplateError, OverflowError, MemoryError, RecursionError, ArithmeticError, TypeError,
            ValueError) as e:
        raise InputError(f"the tokenizer's chat template cannot be rendered ({type(e).__name__}: {e})") from None
    return "".join(pieces)


class TemplateBound(Exception):
    """A chat template went past one of the bounds (see the module doc)."""


def _counted_range(*args: int):
    """The sandbox's range, counted against the rendering's MAX_ITERATIONS."""
    from jinja2.sandbox import safe_range

    for value in safe_range(*args):
        _budget.left -= 1
        if _budget.left < 0:
            raise TemplateBound(f"its loops take more than {MAX_ITERATIONS:,} range steps")
        yield value


def _size(value) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 1


def _bounded_binop(left, op: str, right):
    """`*` and `**` with their result's size checked first (a string or list repeated, a power's digits)."""
    if op == "*":
        count, item = (right, left) if isinstance(right, int) else (left, right)
        if isinstance(count, int) and isinstance(item, (str, list, tuple)) and _size(item) * max(count, 0) > MAX_CHARS:
            raise TemplateBound(f"it builds a string or list longer than {MAX_CHARS:,}")
        return operator.mul(left, right)
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1 and \
            right * max(abs(left).bit_length(), 1) > MAX_CHARS * 4:
        raise TemplateBound(f"it computes a number of more than {MAX_CHARS:,} digits")
    return operator.pow(left, right)


def _bounded_width(filter_fn, position: int):
    """A filter whose argument at `position` (after the value) is a width: refused above MAX_CHARS."""
    def bounded(value, *args, **kwargs):
        width = args[position] if len(args) > position else kwargs.get("width")
        if isinstance(width, int) and width > MAX_CHARS:
            raise TemplateBound(f"it asks for a width of {width:,} (more than {MAX_CHARS:,})")
        return filter_fn(value, *args, **kwargs)

    return bounded


_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+)|\.(\d+)")


def _bounded_format(filter_fn):
    def bounded(value, *args, **kwargs):
        widths = [int(n) for pair in _FORMAT_WIDTH.findall(str(value)) for n in pair if n]
        if widths and max(widths) > MAX_CHARS:
            raise TemplateBound(f"its format asks for a width of {max(widths):,} (more than {MAX_CHARS:,})")
        return filter_fn(value, *args, **kwargs)

    return bounded


@functools.lru_cache(maxsize=8)
def _compiled(source: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.TemplateError(message)

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator_: str, left, right):
            return _bounded_binop(left, operator_, right)

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
    env.globals["range"] = _counted_range
    env.filters["center"] = _bounded_width(env.filters["center"], 0)
    env.filters["indent"] = _bounded_width(env.filters["indent"], 0)
    env.filters["format"] = _bounded_format(env.filters["format"])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise InputError(f"the tokenizer's chat template is not valid Jinja (line {e.lineno}: {e.message})") from None
