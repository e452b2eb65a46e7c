"""One message in a pane's transcript: a role label and Markdown that can stream."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream


class ChatMessage(Vertical):
    """A user turn or a reply. Replies stream through ``MarkdownStream``, which batches
    fragments so a fast stream costs one Markdown update per refresh, not one per token."""

    def __init__(self, role: str, text: str = "", *, notice: bool = False) -> None:
        classes = f"message -{role}" + (" -notice" if notice else "")
        super().__init__(classes=classes)
        self.role = role
        self.text = text
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        if self.role != "notice":
            yield Static("You" if self.role == "user" else "Reply", classes="role")
        yield Markdown(self.text)

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    async def append(self, fragment: str) -> None:
        if not fragment:
            return
        if not self.text:
            fragment = fragment.lstrip()
            if not fragment:
                return
        self.text += fragment
        if self._stream is None:
            self._stream = Markdown.get_stream(self.markdown)
        await self._stream.write(fragment)

    async def finish(self) -> None:
        """End the stream, then render the whole text once (as oterm's ``finish_stream``)."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        await self.markdown.update(self.text.strip() or "_(no reply)_")
