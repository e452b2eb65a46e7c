"""A model's own chat template: the Jinja text in its GGUF, rendered as llama.cpp's ``--jinja``
and Hugging Face's ``apply_chat_template`` render it.

The template sees what those give it: ``messages`` (role and content), ``add_generation_prompt``,
``bos_token``, ``eos_token``, ``tools=None``, and the globals ``raise_exception`` and
``strftime_now``. It runs in Jinja's immutable sandbox, so a hostile template cannot reach
Python objects or mutate its inputs, and with limits on time and size
(``core.bounded_sandbox``), so it cannot hang the decode thread or take the machine's memory
either. The engine renders the whole chat at every turn and decodes only what differs from
the tokens already in the KV cache, so a template may rewrite earlier turns (drop an old
reply's reasoning, say) and stay correct.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext

from core.bounded_sandbox import BoundedSandbox, TemplateLimitError, render_bounded
from core.chat_template import ChatMessage
from core.errors import TemplateError, one_line
from core.reasoning import ReasoningMarkers

#: A user message no real chat contains, to find where a template puts user text.
_PROBE = "\x00panechat-probe\x00"


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


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
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=1)
def _environment() -> BoundedSandbox:
    env = BoundedSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
        undefined=jinja2.Undefined,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class JinjaTemplate:
    """A chat format defined by a Jinja template (a GGUF's ``tokenizer.chat_template``).

    Replies end at the model's end-of-generation tokens, so there are no stop strings of the
    template's own; ``render`` raises :class:`TemplateError` (one line) when the template
    refuses a chat, e.g. "roles must alternate".
    """

    def __init__(
        self, source: str, *, bos_token: str = "", eos_token: str = "", name: str = "jinja"
    ) -> None:
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(
                f"the model's chat template does not parse (line {e.lineno}: {e.message}) — "
                "choose a built-in one with [model] template"
            ) from None
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.stop_strings: tuple[str, ...] = ()
        self.reasoning_markers = ReasoningMarkers.in_template(source)
        self._prefixes: dict[str, str | None] = {}

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The whole chat as prompt text, special tokens spelled as text."""
        try:
            chunks = self._template.generate(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=None,
            )
            return render_bounded(chunks, sum(len(m.content) for m in messages))
        except TemplateLimitError as e:
            raise TemplateError(
                f"the model's chat template was stopped: {e} — "
                "choose a built-in one with [model] template"
            ) from None
        except jinja2.TemplateError as e:
            reason = " ".join(str(e).split())
            raise TemplateError(
                f"the model's chat template refused this chat: {reason} — "
                "choose a built-in one with [model] template"
            ) from None
        except Exception as e:  # a template's own bug (a bad index, a None + str...)
            raise TemplateError(
                f"the model's chat template failed: {one_line(e)} — "
                "choose a built-in one with [model] template"
            ) from None

    def system_prefix(self, system: str) -> str | None:
        """The text before the first user turn for this system prompt, to share between chats;
        None when the template folds the system prompt into the user turn (or has none)."""
        if not system.strip():
            return None
        if system not in self._prefixes:
            self._prefixes[system] = self._find_system_prefix(system)
        return self._prefixes[system]

    def _find_system_prefix(self, system: str) -> str | None:
        messages = [ChatMessage("system", system)]
        try:
            alone = self.render(messages, add_generation_prompt=False)
            chat = self.render([*messages, ChatMessage("user", _PROBE)])
        except TemplateError:
            return None
        if not alone or _PROBE in alone or system.strip() not in alone:
            return None
        return alone if chat.startswith(alone) else None

    def with_stops(self, extra: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.stop_strings, *extra)))

    def reply_content(self, text: str) -> str:
        """A saved reply as the template should see it again."""
        return text.strip()
