"""Jinja's immutable sandbox, with checks on size, for chat templates from GGUF files.

The sandbox keeps a template from Python's objects, but not from the machine: a template
that multiplies a string by 10**10 or raises 9 to the 9**9 would take all memory. These
checks refuse the plain ways to make a huge value before it is made, with a message that
says which: repetition (``*``), powers and big products, ``%`` and ``format`` widths,
``center``/``indent`` widths, ``replace`` that multiplies, and any call with an integer
argument past :data:`MAX_ITEMS`; ``+``, ``join``, ``sum``, block captures and repetition
refuse values past :data:`MAX_VALUE` characters as text; a prompt may be at most
:data:`OUTPUT_FACTOR` times the chat plus :data:`OUTPUT_SLACK` characters.

They cannot be complete (a template can build a big value a step at a time, or loop for
ever), so templates are rendered in a process of their own, with a time and a memory limit
(``core.templates.template_process``): these checks only make the common cases fail fast and
clearly. No real template comes near them: the families in ``tests/test_chat_templates.py`` render a
chat in well under 10 ms and pad text by tens of characters.

This module imports nothing of panechat's, so the render process loads it alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2 import Environment, pass_environment, pass_eval_context
from jinja2 import filters as jinja_filters
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Items a repetition, a width or a call's integer argument may ask for.
MAX_ITEMS = 1_000_000
#: Characters a value the template makes may have as text (a list's, counted through it).
MAX_VALUE = 16_000_000
#: Bits an integer a power or product makes may have.
MAX_INT_BITS = 100_000
#: A prompt may be this many times the chat's own text long, plus :data:`OUTPUT_SLACK`.
OUTPUT_FACTOR = 4
OUTPUT_SLACK = 1_000_000

#: A %-conversion or a format spec with a width or precision of 7 digits or more.
_WIDE_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(?:\d{7,}|\d*\.\d{7,})")
#: A format spec with a width of 7 digits or more, or with a field nested in it.
_WIDE_FORMAT = re.compile(r"\{[^{}]*:[^{}]*(?:\d{7,}|\{)")
#: The widest indentation ``tojson`` may ask for.
MAX_JSON_INDENT = 16


class TemplateLimitError(SecurityError):
    """A template went past one of this module's limits."""


def _checked_concat(parts: Iterable[str]) -> str:
    """What a block capture, a macro or a filter block joins (``Environment.concat``)."""
    items = list(parts)
    if sum(len(p) for p in items) > MAX_VALUE:
        raise TemplateLimitError("the template captures text past the size it may")
    return "".join(items)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with the operators and calls that make big values checked
    before they run."""

    intercepted_binops = frozenset({"*", "**", "%", "+", "//"})
    concat = staticmethod(_checked_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters["center"] = _bounded_width(jinja_filters.do_center, "center")
        self.filters["indent"] = _bounded_width(jinja_filters.do_indent, "indent")
        self.filters["format"] = _bounded_format_filter
        self.filters["replace"] = _bounded_replace_filter
        self.filters["join"] = _bounded_join_filter
        self.filters["sum"] = _bounded_sum_filter

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        match operator:
            case "*":
                _check_product(left, right)
            case "**":
                _check_power(left, right)
            case "%":
                if isinstance(left, str):
                    _check_percent(left, right)
                else:
                    _check_int_operands(left, right)
            case "//":
                _check_int_operands(left, right)
            case "+":
                if _sized(left) and _sized(right) and _weight(left) + _weight(right) > MAX_VALUE:
                    raise TemplateLimitError("the template joins values past the size it may")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if _is_int(value) and abs(value) > MAX_ITEMS:
                raise TemplateLimitError(f"the template calls a function with {value}")
        wrapped = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped
        owner = getattr(wrapped, "__self__", None)
        name = getattr(wrapped, "__name__", "")
        if isinstance(owner, str):
            if name in ("format", "format_map") and _WIDE_FORMAT.search(owner):
                raise TemplateLimitError("the template formats text past the width it may")
            if name == "replace" and args:
                _check_replace(owner, args[0], args[1] if len(args) > 1 else "")
            if name == "join" and args:
                items = list(args[0])
                _check_join(owner, items)
                args = (items, *args[1:])
        return super().call(__context, __obj, *args, **kwargs)


def render_bounded(chunks: Iterable[str], given: int) -> str:
    """Join a template's output (``Template.generate``) under the size limit; ``given`` is
    the length of the text the template was given."""
    limit = given * OUTPUT_FACTOR + OUTPUT_SLACK
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TemplateLimitError(
                f"the template wrote more than {limit:,} characters for a chat of {given:,}"
            )
        out.append(chunk)
    return "".join(out)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sized(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _weight(value: Any, budget: int = MAX_VALUE) -> int:
    """About how long ``value`` is as text, counted no further than past ``budget`` (a list
    may hold one long string many times over)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if not isinstance(value, list | tuple):
        return 8
    total = 2
    for item in value:
        total += _weight(item, budget - total) + 2
        if total > budget:
            break
    return total


def _check_product(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if not (_sized(seq) and _is_int(count)) or count <= 1:
            continue
        if len(seq) * count > MAX_ITEMS or _weight(seq) * count > MAX_VALUE:
            raise TemplateLimitError(f"the template repeats a value {count:,} times")
    if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError("the template multiplies numbers past the size it may")


def _check_power(base: Any, exponent: Any) -> None:
    if not (_is_int(base) and _is_int(exponent)) or exponent <= 0 or abs(base) < 2:
        return
    if exponent * max(abs(base).bit_length() - 1, 1) > MAX_INT_BITS:
        raise TemplateLimitError(f"the template raises a number to the power {exponent:,}")


def _check_percent(text: str, values: Any) -> None:
    if _WIDE_PERCENT.search(text):
        raise TemplateLimitError("the template formats text past the width it may")
    if "*" in text:
        items = values if isinstance(values, tuple) else (values,)
        if any(_is_int(v) and abs(v) > MAX_ITEMS for v in items):
            raise TemplateLimitError("the template formats text past the width it may")


def _check_replace(text: str, old: Any, new: Any) -> None:
    if not (isinstance(old, str) and isinstance(new, str)) or len(new) <= len(old):
        return
    count = len(text) + 1 if old == "" else text.count(old)
    if len(text) + count * (len(new) - len(old)) > MAX_VALUE:
        raise TemplateLimitError("the template replaces text past the size it may")


def _check_int_operands(left: Any, right: Any) -> None:
    """``//`` and ``%`` of two integers: each at most :data:`MAX_INT_BITS` bits (a big one
    can come from ``int(base=16)``, which Python's digit limit does not bound)."""
    if (
        _is_int(left)
        and _is_int(right)
        and max(left.bit_length(), right.bit_length()) > MAX_INT_BITS
    ):
        raise TemplateLimitError("the template divides numbers past the size it may")


def _bounded_width(filter_function: Callable[..., str], name: str) -> Callable[..., str]:
    def bounded(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> str:
        if _is_int(width) and abs(width) > MAX_ITEMS:
            raise TemplateLimitError(f"the template's {name} filter asks for width {width:,}")
        if isinstance(width, str) and len(width) > MAX_ITEMS:
            raise TemplateLimitError(f"the template's {name} filter indents past the size it may")
        return filter_function(value, width, *args, **kwargs)

    return bounded


def _bounded_format_filter(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(str(value), args)
    return jinja_filters.do_format(value, *args, **kwargs)


def _check_join(separator: str, items: list[Any]) -> None:
    """A join of ``items`` (each already made, but perhaps one value many times)."""
    size = len(separator) * max(len(items) - 1, 0)
    for item in items:
        size += _weight(item)
        if size > MAX_VALUE:
            raise TemplateLimitError("the template joins text past the size it may")


@pass_eval_context
def _bounded_replace_filter(
    eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None
) -> Any:
    _check_replace(str(s), old, new)
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _bounded_join_filter(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None
) -> Any:
    items = list(value)
    _check_join(str(d), items)
    return jinja_filters.do_join(eval_ctx, items, d, attribute)


@pass_environment
def _bounded_sum_filter(
    environment: Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
) -> Any:
    items = list(iterable)
    sized = attribute is None and all(_sized(i) for i in (*items, start))
    if sized and sum(len(i) for i in (*items, start)) > MAX_ITEMS:
        raise TemplateLimitError("the template sums lists past the size it may")
    return jinja_filters.do_sum(environment, items, attribute, start)


# -- the environment a chat template sees ------------------------------------------------------


class TemplateRefusal(jinja2.exceptions.TemplateError):
    """The template's own ``raise_exception``: it refuses the chat ("roles must alternate"),
    as against a bug of its own or the sandbox's refusal."""


def _raise_exception(message: str) -> None:
    raise TemplateRefusal(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's ``tojson``: unlike Jinja's own, it keeps non-ASCII text and HTML as is."""
    if isinstance(indent, int) and abs(indent) > MAX_JSON_INDENT:
        raise TemplateLimitError(f"the template indents JSON by {indent:,}")
    if _weight(value) > MAX_VALUE:
        raise TemplateLimitError("the template writes JSON past the size it may")
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


class GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}``: Hugging Face marks the assistant's tokens with
    it for training masks (its ``AssistantTracker``) and writes the body unchanged, as here.
    LFM2's templates, among others, use it."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


def _is_none(value: Any) -> bool:
    """``is none`` as llama.cpp's templates read it: an undefined value (``tools`` in a chat
    without tools, a message's missing field) is none there, as in Hugging Face's
    ``tools=None``; Jinja alone says it is not."""
    return value is None or isinstance(value, jinja2.Undefined)


@lru_cache(maxsize=1)
def chat_environment() -> BoundedSandbox:
    """As llama.cpp's ``--jinja`` and Hugging Face's ``apply_chat_template`` set Jinja up."""
    env = BoundedSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, GenerationBlock],
        undefined=jinja2.Undefined,
    )
    env.filters["tojson"] = _tojson
    env.tests["none"] = _is_none
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=16)
def compiled(source: str) -> jinja2.Template:
    """A template's source, parsed once (raises ``jinja2.TemplateSyntaxError``)."""
    return chat_environment().from_string(source)


def render_chat(
    source: str,
    messages: Sequence[tuple[str, str]],
    *,
    add_generation_prompt: bool,
    bos_token: str,
    eos_token: str,
    typed_content: bool = False,
) -> str:
    """A chat (role, content) as the template writes it, special tokens spelled as text.

    ``tools`` is left undefined, as llama.cpp leaves it for a chat without tools: templates
    that test ``tools is defined`` and then iterate it (Phi-4-mini's, Command R+'s and
    Hermes 3's tool_use) would fail on None. ``typed_content`` gives each content as typed
    parts, for templates that read nothing else (``core.templates.template_capabilities``)."""
    chunks = compiled(source).generate(
        messages=[
            {"role": role, "content": [{"type": "text", "text": content}]}
            if typed_content
            else {"role": role, "content": content}
            for role, content in messages
        ],
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    return render_bounded(chunks, sum(len(content) for _, content in messages))
