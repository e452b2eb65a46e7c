"""A model's own chat template: the Jinja text in its GGUF, rendered as llama.cpp's ``--jinja``
and Hugging Face's ``apply_chat_template`` render it.

The template sees what llama.cpp gives it: ``messages`` (role and content),
``add_generation_prompt``, ``bos_token``, ``eos_token``, the globals ``raise_exception`` and
``strftime_now``, and no ``tools`` (undefined, as llama.cpp leaves it for a chat without tools).
What the template cannot render (a system message, plain-text content) is found once by trial
renders and the chat adapted, as llama.cpp adapts it (``core.templates.template_capabilities``).

It runs in Jinja's immutable sandbox, so a hostile template cannot reach
Python objects or mutate its inputs, in a process of its own with a time and a memory limit
(``core.templates.template_process``), so it cannot hang the decode thread or take the machine's
memory either. The engine renders the whole chat at every turn and decodes only what differs from
the tokens already in the KV cache, so a template may rewrite earlier turns (drop an old
reply's reasoning, say) and stay correct.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jinja2

from core.errors import TemplateError
from core.templates.chat_template import ChatMessage
from core.templates.template_capabilities import Adaptation, ProbeStopped, TemplateCapabilities
from core.templates.template_process import shared_template_process
from core.templates.template_sandbox import compiled
from core.templates.template_worker import Outcome, RenderReply, RenderRequest
from core.text.reasoning import ReasoningMarkers

#: The longest template read: the largest real ones (tool-calling, reasoning) are ~20,000
#: characters, and a long one takes seconds to parse.
MAX_TEMPLATE_CHARS = 256_000
#: A user message no real chat contains, to find where a template puts user text.
_PROBE = "\x00panechat-probe\x00"


class JinjaTemplate:
    """A chat format defined by a Jinja template (a GGUF's ``tokenizer.chat_template``).

    Replies end at the model's end-of-generation tokens, so there are no stop strings of the
    template's own; ``render`` raises :class:`TemplateError` (one line) when the template
    refuses a chat, e.g. "roles must alternate".
    """

    def __init__(
        self, source: str, *, bos_token: str = "", eos_token: str = "", name: str = "jinja"
    ) -> None:
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(
                f"the model's chat template is {len(source):,} characters long (real ones are "
                f"a few thousand; at most {MAX_TEMPLATE_CHARS:,} are read) — choose a built-in "
                "one with [model] template"
            )
        try:
            compiled(source)  # parsing runs nothing of the template's: here, to fail at load
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(
                f"the model's chat template does not parse (line {e.lineno}: {e.message}) — "
                "choose a built-in one with [model] template"
            ) from None
        except RecursionError:
            raise TemplateError(
                "the model's chat template nests too deep to parse — "
                "choose a built-in one with [model] template"
            ) from None
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.stop_strings: tuple[str, ...] = ()
        self.reasoning_markers = ReasoningMarkers.in_template(source)
        self._prefixes: dict[str, str | None] = {}
        self._capabilities: TemplateCapabilities | None = None

    @property
    def capabilities(self) -> TemplateCapabilities:
        """What the template renders as it is: probed at the first render, and kept once a
        probe has run to its end (one stopped by a limit is asked again next time; until then
        the template is taken at its word)."""
        if self._capabilities is None:
            found = TemplateCapabilities.probe(self._trial_render)
            if found is None:
                return TemplateCapabilities()
            self._capabilities = found
        return self._capabilities

    def adaptations(self, messages: Sequence[ChatMessage]) -> tuple[Adaptation, ...]:
        """How :meth:`render` changes this chat for the template (``--show-prompt`` says)."""
        return self.capabilities.adaptations(messages)

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The whole chat as prompt text, special tokens spelled as text."""
        capabilities = self.capabilities
        return self._render(
            capabilities.adapted(messages), add_generation_prompt, capabilities.typed_content
        )

    def _trial_render(self, messages: Sequence[ChatMessage], typed_content: bool) -> str | None:
        """A probe's render: None when the template refused or failed it; a render that was
        stopped (a time or memory limit) ends the probing, and the chat's own render says why."""
        reply = self._reply(messages, False, typed_content)
        match reply.outcome:
            case Outcome.TEXT:
                return reply.text
            case Outcome.REFUSED | Outcome.FAILED | Outcome.SYNTAX:
                return None
        raise ProbeStopped(reply.text)

    def _reply(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool, typed_content: bool
    ) -> RenderReply:
        request = RenderRequest(
            self.source,
            tuple((m.role, m.content) for m in messages),
            add_generation_prompt,
            self.bos_token,
            self.eos_token,
            typed_content,
        )
        return shared_template_process().render(request)

    def _render(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool, typed_content: bool
    ) -> str:
        reply = self._reply(messages, add_generation_prompt, typed_content)
        match reply.outcome:
            case Outcome.TEXT:
                return reply.text
            case Outcome.LIMIT | Outcome.MEMORY:
                what = f"was stopped: {reply.text}"
            case Outcome.REFUSED:
                what = f"refused this chat: {reply.text}"
            case Outcome.SYNTAX:
                what = f"does not parse ({reply.text})"
            case Outcome.FAILED:
                what = f"failed: {reply.text}"
            case Outcome.UNAVAILABLE:
                raise TemplateError(
                    f"panechat could not render the model's chat template: {reply.text} — "
                    "choose a built-in one with [model] template"
                )
        raise TemplateError(
            f"the model's chat template {what} — choose a built-in one with [model] template"
        )

    def system_prefix(self, system: str) -> str | None:
        """The text before the first user turn for this system prompt, to share between chats;
        None when the template folds the system prompt into the user turn (or has none)."""
        if not system.strip() or not self.capabilities.system_role:
            return None  # none, or folded into the first user message (adapted)
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
        """A saved reply as the template should see it again: its reasoning between this
        model's markers (a reply saved mid-stream has the common ones)."""
        return self.reasoning_markers.in_own_markers(text.strip())
