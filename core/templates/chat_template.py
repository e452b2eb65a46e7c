"""Chat messages to prompt text: what every chat format offers (:class:`ChatFormat`), and the
built-in formats, sets of turn markers.

Models whose GGUF carries a chat template get that template (``core.templates.jinja_template``); the
built-ins serve models without one (like the embedded Gemma 3 270M, a base model, which
continues a plain transcript well) and users who choose one by name. Either way the engine
renders the whole chat at each turn and decodes only what the KV cache does not hold yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from core.errors import TemplateError
from core.text.reasoning import ReasoningMarkers

if TYPE_CHECKING:
    from core.templates.template_capabilities import Adaptation

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


class ChatFormat(Protocol):
    """How a chat becomes prompt text: a built-in :class:`ChatTemplate` or a model's own
    :class:`core.templates.jinja_template.JinjaTemplate`."""

    @property
    def name(self) -> str: ...

    @property
    def stop_strings(self) -> tuple[str, ...]: ...

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The whole chat as prompt text (raises TemplateError when the format refuses it)."""
        ...

    def system_prefix(self, system: str) -> str | None:
        """The text a chat with this system prompt starts with, before its first user turn
        (decoded once and shared between chats); None when there is none to share."""
        ...

    def with_stops(self, extra: Iterable[str]) -> tuple[str, ...]:
        """The format's own stop strings and ``extra``."""
        ...

    def reply_content(self, text: str) -> str:
        """A saved reply's text as the format expects it back in a message."""
        ...

    def adaptations(self, messages: Sequence[ChatMessage]) -> tuple[Adaptation, ...]:
        """How ``render`` changes this chat for what the format cannot render as it is."""
        ...

    @property
    def reasoning_markers(self) -> ReasoningMarkers:
        """Where a reasoning model's thoughts begin and end in its replies."""
        ...


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """Turn markers of one chat format. ``{system}`` in ``system_format`` receives the persona;
    models without a system role fold it into the first user turn (``system_in_user``)."""

    name: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    system_format: str = ""
    system_in_user: bool = False
    stop_strings: tuple[str, ...] = ()

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The whole chat as prompt text (for a first prompt or a re-prefill)."""
        parts: list[str] = []
        system = ""
        for i, message in enumerate(messages):
            if message.role == "system":
                if i != 0:
                    raise TemplateError("a system message may only come first")
                if self.system_in_user:
                    system = message.content.strip()
                else:
                    parts.append(self.system_format.format(system=message.content.strip()))
            elif message.role == "user":
                content = message.content
                if system:
                    content, system = f"{system}\n\n{content}", ""
                parts.append(self.user_turn(content))
            elif message.role == "assistant":
                parts.append(self.assistant_prefix + message.content + self.assistant_suffix)
            else:  # pragma: no cover - Literal keeps this out
                raise TemplateError(f"unknown chat role {message.role!r}")
        if add_generation_prompt:
            parts.append(self.assistant_prefix)
        return "".join(parts)

    def system_prefix(self, system: str) -> str | None:
        """The text a chat with this system prompt starts with, before any user turn; None
        when there is none to share (no system prompt, or the model folds it into the first
        user turn). ``render`` starts with exactly this text."""
        if not system.strip() or self.system_in_user:
            return None
        return self.system_format.format(system=system.strip())

    def user_turn(self, content: str) -> str:
        return self.user_prefix + content.strip() + self.user_suffix

    def reply_content(self, text: str) -> str:
        """A reply as the model wrote it: after a prefix like ``Assistant:`` it began with a
        space, so the saved text gets it back and renders the tokens the KV cache holds."""
        space = "" if self.assistant_prefix[-1:].isspace() else " "
        return space + text.strip()

    def with_stops(self, extra: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.stop_strings, *extra)))

    def adaptations(self, messages: Sequence[ChatMessage]) -> tuple[Adaptation, ...]:
        """None: a built-in format renders every chat as it is (``system_in_user`` is its
        own way to write a system prompt)."""
        return ()

    @property
    def reasoning_markers(self) -> ReasoningMarkers:
        return ReasoningMarkers()


TRANSCRIPT = ChatTemplate(
    name="transcript",
    system_format="{system}\n\n",
    user_prefix="User: ",
    user_suffix="\n",
    assistant_prefix="Assistant:",
    assistant_suffix="\n",
    # A base model continuing a transcript ends its answer well at a blank line; a model
    # with a chat template of its own ends at its end-of-generation token instead.
    stop_strings=("\nUser:", "\nAssistant:", "\n\n"),
)
GEMMA = ChatTemplate(
    name="gemma",
    user_prefix="<start_of_turn>user\n",
    user_suffix="<end_of_turn>\n",
    assistant_prefix="<start_of_turn>model\n",
    assistant_suffix="<end_of_turn>\n",
    system_in_user=True,
    stop_strings=("<end_of_turn>", "<start_of_turn>"),
)
CHATML = ChatTemplate(
    name="chatml",
    system_format="<|im_start|>system\n{system}<|im_end|>\n",
    user_prefix="<|im_start|>user\n",
    user_suffix="<|im_end|>\n",
    assistant_prefix="<|im_start|>assistant\n",
    assistant_suffix="<|im_end|>\n",
    stop_strings=("<|im_end|>", "<|im_start|>"),
)
LLAMA3 = ChatTemplate(
    name="llama3",
    system_format="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
    user_prefix="<|start_header_id|>user<|end_header_id|>\n\n",
    user_suffix="<|eot_id|>",
    assistant_prefix="<|start_header_id|>assistant<|end_header_id|>\n\n",
    assistant_suffix="<|eot_id|>",
    stop_strings=("<|eot_id|>", "<|start_header_id|>"),
)

BUILTIN_TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t for t in (TRANSCRIPT, GEMMA, CHATML, LLAMA3)
}
