"""One chat pane: title bar, streaming transcript, and its own input."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message

from tui.config import PaneConfig
from tui.messages import PaneDelta
from tui.widgets.chat_message import ChatMessage
from tui.widgets.pane_title import PaneTitle
from tui.widgets.prompt_input import PromptInput


class ChatPane(Vertical):
    """A pane shows one conversation. It never talks to the model: it posts
    :class:`ChatPane.Sent` and renders the :class:`PaneDelta` the decode loop sends back."""

    ALLOW_MAXIMIZE = True

    class Sent(Message):
        def __init__(self, pane: ChatPane, text: str) -> None:
            super().__init__()
            self.pane = pane
            self.text = text

    def __init__(self, pane_id: str, config: PaneConfig, context_size: int) -> None:
        super().__init__(id=pane_id, classes="chat-pane")
        self.pane_id = pane_id
        self.config = config
        self.context_size = context_size
        self.generating = False
        self._reply: ChatMessage | None = None
        self.last_reply = ""
        self.finished_replies = 0

    def compose(self) -> ComposeResult:
        title = PaneTitle()
        title.pane_name = self.config.name
        title.sampler = self.config.sampling.summary()
        title.context_size = self.context_size
        yield title
        with VerticalScroll(classes="transcript"):
            if self.config.system.strip():
                yield ChatMessage("notice", f"_{self.config.system.strip()}_", notice=True)
        yield PromptInput()

    def on_mount(self) -> None:
        # Follow new text, unless the user scrolls up (Textual releases the anchor then).
        self.transcript.anchor()

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one(".transcript", VerticalScroll)

    @property
    def title_bar(self) -> PaneTitle:
        return self.query_one(PaneTitle)

    @property
    def input(self) -> PromptInput:
        return self.query_one(PromptInput)

    def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.send(event.text)

    def send(self, text: str) -> None:
        self.post_message(self.Sent(self, text))

    async def add_user_message(self, text: str) -> None:
        await self.transcript.mount(ChatMessage("user", text))

    async def add_notice(self, text: str) -> None:
        await self.transcript.mount(ChatMessage("notice", text, notice=True))

    async def clear_transcript(self) -> None:
        self._reply = None
        self.last_reply = ""
        await self.transcript.remove_children()

    async def apply(self, delta: PaneDelta) -> None:
        """Render one frame's worth of change (ignored while the pane is being removed or is
        not composed yet: a frame may still be in flight for it)."""
        titles = self.query(PaneTitle)
        if not self.is_mounted or self._closing or not titles:
            return
        self.generating = delta.generating
        if delta.started or (delta.text and self._reply is None):
            self._reply = ChatMessage("assistant")
            await self.transcript.mount(self._reply)
        if delta.text and self._reply is not None:
            await self._reply.append(delta.text)
        if delta.finished is not None and self._reply is not None:
            reply, self._reply = self._reply, None
            self.last_reply = reply.text.strip()
            self.finished_replies += 1
            await reply.finish()
        if delta.notice:
            await self.add_notice(f"⚠ {delta.notice}")
        for title in titles:
            title.generating = delta.generating
            title.tokens_per_second = delta.tokens_per_second
            title.context_used = delta.context_used
