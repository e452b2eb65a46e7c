"""One chat pane: title bar, streaming transcript, and its own input."""

from __future__ import annotations

import time
from dataclasses import replace

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message

from core import StopReason
from core.chat import ChatConfig, ChatDelta
from core.reasoning import ReasoningMarkers, split_reply
from tui.bindings import KeyNames
from tui.export import PaneTranscript
from tui.notice_text import notice_text
from tui.screens.compare_screen import ReplySummary
from tui.widgets.chat_message import ChatMessage
from tui.widgets.pane_title import PaneTitle
from tui.widgets.prompt_input import PromptInput
from tui.widgets.reasoning_block import ReasoningBlock


class ChatPane(Vertical):
    """A pane shows one conversation. It never talks to the model: it posts
    :class:`ChatPane.Sent` and renders the :class:`ChatDelta` the decode loop sends back."""

    ALLOW_MAXIMIZE = True
    #: While a reply streams, the title's tok/s and context figures change every frame.
    #: Redrawing eight titles on every screen update took ~10% of the UI's time, so while
    #: streaming they are refreshed at most this often (and at once when a reply starts or ends).
    TITLE_INTERVAL = 1.0

    class Sent(Message):
        def __init__(self, pane: ChatPane, text: str) -> None:
            super().__init__()
            self.pane = pane
            self.text = text

    def __init__(
        self,
        pane_id: str,
        config: ChatConfig,
        context_size: int,
        keys: KeyNames | None = None,
        model_label: str = "",
    ) -> None:
        super().__init__(id=pane_id, classes="chat-pane")
        self.pane_id = pane_id
        self.keys = keys or KeyNames({})  # the keys its notices name
        self.config = config
        self.context_size = context_size
        self.model_label = model_label  # the model's name in titles and exports
        self.generating = False
        self._reply: ChatMessage | None = None
        self._last_reply_message: ChatMessage | None = None
        self.last_reply = ""
        self.finished_replies = 0
        self.branched_from = ""  # "name after N turns" when this pane is a fork
        self.in_broadcast_set = False  # ctrl+b sends to the chosen panes when any is chosen
        self.last_reply_tokens = 0
        self.last_reply_rate = 0.0
        self.last_stop: StopReason | None = None
        self._title_at = 0.0  # when the title's figures were last refreshed
        # Kept, not queried: every streamed frame touches them, and a DOM query walks the tree.
        self.title_bar = PaneTitle()
        self.transcript = VerticalScroll(classes="transcript")
        self.input = PromptInput()

    def compose(self) -> ComposeResult:
        title = self.title_bar
        title.pane_name = self.config.name
        title.model = self.model_label
        title.sampler = self.config.sampling.summary()
        title.context_size = self.context_size
        title.origin = self.branched_from
        yield title
        with self.transcript:
            if self.config.system.strip():
                yield ChatMessage("notice", f"_{self.config.system.strip()}_", notice=True)
        yield self.input

    def on_mount(self) -> None:
        # Follow new text, unless the user scrolls up (Textual releases the anchor then).
        self.transcript.anchor()

    def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.send(event.text)

    def send(self, text: str) -> None:
        self.post_message(self.Sent(self, text))

    async def add_user_message(self, text: str) -> None:
        await self.transcript.mount(ChatMessage("user", text))

    async def add_notice(self, text: str) -> None:
        await self.transcript.mount(ChatMessage("notice", text, notice=True))

    def messages(self, *, reasoning: bool = False) -> list[tuple[str, str]]:
        """The transcript as (role, text) pairs, user turns and replies (newest versions);
        with ``reasoning``, a reply's reasoning too, between its markers."""
        join = ReasoningMarkers().join
        return [
            (m.role, join(m.reasoning, m.text) if reasoning and m.reasoning else m.text)
            for m in self.transcript.query(ChatMessage)
            if m.role in ("user", "assistant")
        ]

    async def _remove_last_turn(self) -> None:
        """Drop the last user message and everything shown after it."""
        children = list(self.transcript.children)
        users = [
            i for i, c in enumerate(children) if isinstance(c, ChatMessage) and c.role == "user"
        ]
        if not users:
            return
        await self.transcript.remove_children(children[users[-1] :])
        replies = [c for c in self.transcript.query(ChatMessage) if c.role == "assistant"]
        self._last_reply_message = replies[-1] if replies else None
        self.last_reply = replies[-1].text.strip() if replies else ""

    def messages_text(self) -> list[str]:
        """Every message's text, notices included."""
        return [m.text for m in self.transcript.query(ChatMessage)]

    async def add_messages(self, messages: list[tuple[str, str]]) -> None:
        """Show a transcript copied from another pane (a fork) or a saved session; a saved
        reply's reasoning goes into its folded block."""
        widgets: list[ChatMessage | ReasoningBlock] = []
        for role, text in messages:
            if role != "assistant":
                widgets.append(ChatMessage(role, text))
                continue
            split = split_reply(text)
            message = ChatMessage(role, split.answer)
            if split.reasoning and self.config.show_reasoning:
                message.thoughts = ReasoningBlock(split.reasoning, settled=True)
                widgets.append(message.thoughts)
            widgets.append(message)
        await self.transcript.mount_all(widgets)
        replies = [w for w in widgets if isinstance(w, ChatMessage) and w.role == "assistant"]
        if replies:
            self._last_reply_message = replies[-1]
            self.last_reply = replies[-1].text.strip()

    def transcript_for_export(self, *, reasoning: bool = False) -> PaneTranscript:
        return PaneTranscript(
            self.config.name,
            self.config.sampling.summary(),
            self.config.system,
            self.messages(reasoning=reasoning),
            self.branched_from,
            self.model_label,
        )

    def reply_summary(self) -> ReplySummary:
        """The last reply and its figures, for the compare screen."""
        return ReplySummary(
            self.config.name,
            self.config.sampling.summary(),
            self.last_reply,
            self.last_reply_tokens,
            self.last_reply_rate,
            self.last_stop,
            self.model_label,
        )

    def answer_with(self, model: str, label: str, context_size: int) -> None:
        """The chat now answers with ``model`` (its title, exports and saved config say so)."""
        self.config = replace(self.config, model=model)
        self.model_label, self.context_size = label, context_size
        self.title_bar.model, self.title_bar.context_size = label, context_size

    def toggle_broadcast_set(self) -> bool:
        self.in_broadcast_set = not self.in_broadcast_set
        self.title_bar.chosen = self.in_broadcast_set
        return self.in_broadcast_set

    async def _think(self, reply: ChatMessage, text: str) -> None:
        """Stream reasoning into the reply's block (mounted above it when the first comes)."""
        if reply.thoughts is None:
            if not text.strip():
                return
            reply.thoughts = ReasoningBlock()
            await self.transcript.mount(reply.thoughts, before=reply)
        reply.thoughts.stream(text)

    async def page_last_reply(self, step: int) -> bool:
        if self._last_reply_message is None or self._reply is not None:
            return False
        return await self._last_reply_message.show_version(step)

    async def clear_transcript(self) -> None:
        self._last_reply_message = None
        self._reply = None
        self.last_reply = ""
        await self.transcript.remove_children()

    async def apply(self, delta: ChatDelta) -> None:
        """Render one frame's worth of change (ignored while the pane is being removed or is
        not composed yet: a frame may still be in flight for it)."""
        if not self.is_mounted or self._closing or not self.title_bar.is_attached:
            return
        self.generating = delta.generating
        if delta.replaces_last and self._last_reply_message is not None:
            self._reply = self._last_reply_message
            await self._reply.new_version()
        elif delta.started or (delta.text and self._reply is None):
            self._reply = ChatMessage("assistant")
            await self.transcript.mount(self._reply)
        if delta.reasoning and self._reply is not None and self.config.show_reasoning:
            await self._think(self._reply, delta.reasoning)
        if delta.text and self._reply is not None:
            if self._reply.thoughts is not None and delta.text.strip():
                self._reply.thoughts.settle()  # the answer begins: fold the thoughts away
            await self._reply.stream(delta.text)
        if delta.finished is not None and self._reply is not None:
            reply, self._reply = self._reply, None
            self._last_reply_message = reply
            self.last_reply = reply.text.strip()
            self.last_reply_tokens = delta.reply_tokens
            self.last_reply_rate = delta.tokens_per_second
            self.last_stop = delta.finished
            self.finished_replies += 1
            if reply.thoughts is not None:
                reply.thoughts.settle()
            await reply.finish()
        if delta.taken_back is not None:
            await self._remove_last_turn()
            self.input.load_text(delta.taken_back)
            self.input.focus()
        if delta.notice is not None:
            await self.add_notice(f"⚠ {notice_text(delta.notice, self.keys)}")
        title, now = self.title_bar, time.monotonic()
        if (
            title.generating != delta.generating
            or not delta.generating
            or now - self._title_at >= self.TITLE_INTERVAL
        ):
            self._title_at = now
            title.generating = delta.generating
            title.tokens_per_second = delta.tokens_per_second
            title.context_used = delta.context_used
