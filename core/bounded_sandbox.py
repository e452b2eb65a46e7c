"""Jinja's immutable sandbox, bounded in time and size, for chat templates from GGUF files.

The sandbox keeps a template from Python's objects, but not from the machine: a template
that loops 100,000 times 100,000 times, multiplies a string by 10**10 or raises 9 to the 9**9
would hang the decode thread or take all memory, and every pane with it. A GGUF is input
like any other, so its template gets limits no real template comes near. Measured here,
the templates of the families in ``tests/test_chat_templates.py`` render a chat in well under
10 ms, and repeat or pad text by tens of characters:

- one render runs for at most :data:`RENDER_SECONDS` (a watchdog raises in the rendering
  thread, between two of Python's bytecodes, so it stops loops but not one C call: those
  are bounded below);
- the prompt it writes is at most :data:`OUTPUT_SLACK` characters longer than the chat it
  was given, times :data:`OUTPUT_FACTOR`;
- repetition (``*``), powers, ``%`` and ``format`` widths, ``center``/``indent`` widths and
  ``replace`` of the empty string are refused past :data:`MAX_ITEMS` items or
  :data:`MAX_INT_BITS` bits; so is any call with an integer argument past ``MAX_ITEMS``;
  ``+``, ``join`` and repetition refuse values past :data:`MAX_VALUE` characters as text.

A template can still build a big value slowly, a step at a time (``~`` in a loop): the time
limit ends that.

What breaks a limit raises :class:`TemplateLimitError`, which the caller reports as the
template's failure in one line.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from jinja2 import Environment, pass_environment, pass_eval_context
from jinja2 import filters as jinja_filters
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: The longest one render may take.
RENDER_SECONDS = 2.0
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
_WIDE_PERCENT = re.compile(r"%[#0\- +]*(?:\d{7,}|\d*\.\d{7,})")
_WIDE_FORMAT = re.compile(r"\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")


class TemplateLimitError(SecurityError):
    """A template went past one of this module's limits."""


class _RenderTimeout(BaseException):
    """Raised in the rendering thread by the watchdog (a BaseException, so that a
    template's own ``except Exception`` in Python code it calls cannot swallow it)."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with the operators and calls that make big values checked
    before they run."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

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


def render_bounded(chunks: Iterable[str], given: int, seconds: float = RENDER_SECONDS) -> str:
    """Join a template's output (``Template.generate``) under the time and size limits;
    ``given`` is the length of the text the template was given."""
    limit = given * OUTPUT_FACTOR + OUTPUT_SLACK
    out: list[str] = []
    size = 0
    try:
        with _Watchdog(seconds):
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TemplateLimitError(
                        f"the template wrote more than {limit:,} characters for a chat of {given:,}"
                    )
                out.append(chunk)
    except _RenderTimeout:
        raise TemplateLimitError(
            f"the template took more than {seconds:g} s to render (a loop that does not end?)"
        ) from None
    return "".join(out)


class _Watchdog:
    """Raises :class:`_RenderTimeout` in the thread that entered it, ``seconds`` later,
    unless it has left by then."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._inside = False
        self._fired = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Watchdog:
        self._inside = True
        self._timer = threading.Timer(self._seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _fire(self) -> None:
        with self._lock:
            if self._inside:
                self._fired = True
                _set_async_exc(self._thread, _RenderTimeout)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._timer is not None
        self._timer.cancel()
        with self._lock:
            self._inside = False
            fired = self._fired
        if fired:
            # It may have fired as the render ended and not have been raised yet: it must
            # not be raised later, elsewhere.
            _set_async_exc(self._thread, None)
            if kind is None:
                raise _RenderTimeout


def _set_async_exc(thread: int, kind: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), ctypes.py_object(kind) if kind is not None else None
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _weight(value: Any, budget: int = MAX_VALUE) -> int:
    """About how long ``value`` is as text, counted no further than past ``budget`` (a list
    may hold one long string many times over)."""
    if isinstance(value, str):
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
    if old == "" and isinstance(new, str) and (len(text) + 1) * len(new) > MAX_ITEMS:
        raise TemplateLimitError("the template replaces text past the size it may")


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
