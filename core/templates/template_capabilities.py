"""What a model's chat template can render, found by trial renders, and how a chat is adapted
to what it cannot.

Many templates refuse a system message (Gemma 2's raises "System role not supported"; older
Mistral ones insist that roles alternate), and a few read each message's content as a list of
typed parts (``[{"type": "text", "text": ...}]``). llama.cpp's ``--jinja`` (minja) asks the
template itself, once, with messages carrying a needle: a template that does not write the
needle back does not support that shape. A chat is then adapted as minja adapts it, so such a
model answers a pane with a persona instead of refusing it: the system text goes at the head of
the first user message after it (joined by a newline), or becomes a user message of its own
when no user message follows. The probes never look at the model's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from core.templates.chat_template import ChatMessage

#: Texts no real chat contains, to find whether a template writes a message back.
SYSTEM_NEEDLE = "<System Needle>"
USER_NEEDLE = "<User Needle>"


class Adaptation(Enum):
    """One way a chat is changed for a template, with the words ``--show-prompt`` says."""

    SYSTEM_IN_FIRST_USER = (
        "the template has no system role: the system text goes at the head of the first "
        "user message"
    )
    TYPED_CONTENT = 'the template reads content as typed parts: [{"type": "text", ...}]'

    @property
    def description(self) -> str:
        return str(self.value)


class ProbeStopped(Exception):
    """A trial render was stopped by a limit: the template is not probed further."""


#: One trial render: messages and whether content goes as typed parts; None when the template
#: refused or failed it; raises :class:`ProbeStopped` when a limit stopped it.
TrialRender = Callable[[Sequence[ChatMessage], bool], "str | None"]


@dataclass(frozen=True, slots=True)
class TemplateCapabilities:
    """What a template renders as it is; the defaults (system role, plain content) are what
    a template that could not be probed is taken to render."""

    system_role: bool = True
    typed_content: bool = False

    @classmethod
    def probe(cls, trial: TrialRender) -> TemplateCapabilities | None:
        """Asks the template, as minja does: typed content first (it decides the shape of
        every later probe), then the system role. None when a limit stopped a trial render
        (a template that hangs, or no render process), so nothing can be said."""
        user = [ChatMessage("user", USER_NEEDLE)]
        try:
            plain = trial(user, False)
            typed = False
            if plain is None or USER_NEEDLE not in plain:
                typed_render = trial(user, True)
                typed = typed_render is not None and USER_NEEDLE in typed_render
            with_system = trial([ChatMessage("system", SYSTEM_NEEDLE), *user], typed)
        except ProbeStopped:
            return None
        return cls(
            system_role=with_system is not None and SYSTEM_NEEDLE in with_system,
            typed_content=typed,
        )

    def adaptations(self, messages: Sequence[ChatMessage]) -> tuple[Adaptation, ...]:
        """What :meth:`adapted` changes in this chat (nothing for a chat it renders as is)."""
        found: list[Adaptation] = []
        if not self.system_role and any(m.role == "system" for m in messages):
            found.append(Adaptation.SYSTEM_IN_FIRST_USER)
        if self.typed_content:
            found.append(Adaptation.TYPED_CONTENT)
        return tuple(found)

    def adapted(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The chat as this template can render it (typed content is the render's part)."""
        if self.system_role:
            return list(messages)
        return system_in_first_user(messages)


def system_in_first_user(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """minja's system-role polyfill: system texts wait for the next user message and go at its
    head; before any other message, or at the end, they become a user message of their own."""
    out: list[ChatMessage] = []
    pending = ""
    for message in messages:
        if message.role == "system":
            pending = f"{pending}\n{message.content}" if pending else message.content
            continue
        if pending and message.role == "user":
            content = f"{pending}\n{message.content}" if message.content else pending
            out.append(ChatMessage("user", content))
            pending = ""
            continue
        if pending:
            out.append(ChatMessage("user", pending))
            pending = ""
        out.append(message)
    if pending:
        out.append(ChatMessage("user", pending))
    return out
