"""No chat format at all: a completion's prompt is decoded as the text it is (the API's
``/v1/completions``), and the reply continues it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import TemplateError
from core.text.reasoning import ReasoningMarkers

if TYPE_CHECKING:
    from core.templates.chat_template import ChatMessage
    from core.templates.template_capabilities import Adaptation


@dataclass(frozen=True, slots=True)
class RawPrompt:
    """A :class:`~core.templates.chat_template.ChatFormat` for a chat of one user message,
    rendered verbatim: no turn markers, no system prompt, no stop strings of its own."""

    name: str = "raw"
    stop_strings: tuple[str, ...] = ()

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        if len(messages) != 1 or messages[0].role != "user":
            raise TemplateError("a raw prompt is one text: it has no turns to render")
        return messages[0].content

    def system_prefix(self, system: str) -> str | None:
        return None

    def with_stops(self, extra: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(extra))

    def reply_content(self, text: str) -> str:
        return text

    def adaptations(self, messages: Sequence[ChatMessage]) -> tuple[Adaptation, ...]:
        return ()

    @property
    def reasoning_markers(self) -> ReasoningMarkers:
        return ReasoningMarkers()


RAW_PROMPT = RawPrompt()
