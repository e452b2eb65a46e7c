"""Chat messages to prompt text, one turn at a time, so a chat never re-renders its history.

A template is a set of turn markers. Rendering turn by turn (rather than the whole chat through
Jinja) gives the exact text to append after a reply that is already in the KV cache: the
closing marker of the reply and the opening of the next user turn. Models whose GGUF carries a
chat template get the built-in template of the same family; models without one (like the
embedded Gemma 3 270M, a base model) get a plain transcript that base models continue well.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from core.errors import TemplateError

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


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

    def next_turn(self, user_content: str, *, after_reply: bool) -> str:
        """Text that closes the reply in the KV cache (if any) and asks for the next one."""
        closing = self.assistant_suffix if after_reply else ""
        return closing + self.user_turn(user_content) + self.assistant_prefix

    def with_stops(self, extra: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.stop_strings, *extra)))


TRANSCRIPT = ChatTemplate(
    name="transcript",
    system_format="{system}\n\n",
    user_prefix="User: ",
    user_suffix="\n",
    assistant_prefix="Assistant:",
    assistant_suffix="\n",
    stop_strings=("\nUser:", "\nAssistant:", "\n\n\n"),
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
_FAMILY_MARKERS = (
    ("<start_of_turn>", GEMMA),
    ("<|im_start|>", CHATML),
    ("<|start_header_id|>", LLAMA3),
)


def template_for(model_template: str | None, name: str = "auto") -> ChatTemplate:
    """Pick a template: a built-in by ``name``, or for ``auto`` the family of the model's own
    Jinja template, falling back to the plain transcript (models without a template)."""
    if name != "auto":
        try:
            return BUILTIN_TEMPLATES[name]
        except KeyError:
            known = ", ".join(["auto", *BUILTIN_TEMPLATES])
            raise TemplateError(f"unknown chat template {name!r} — use one of: {known}") from None
    if model_template:
        for marker, template in _FAMILY_MARKERS:
            if marker in model_template:
                return template
    return TRANSCRIPT
