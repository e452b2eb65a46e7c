"""One message in a pane's transcript: a role label and Markdown that can stream."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream


class ChatMessage(Vertical):
    """A user turn or a reply. Replies stream through ``MarkdownStream``, which batches
    fragments so a fast stream costs one Markdown update per refresh, not one per token.

    A regenerated reply keeps its earlier versions: the newest is what the conversation
    continues from, the others can be paged through (``show_version``)."""

    def __init__(self, role: str, text: str = "", *, notice: bool = False) -> None:
        classes = f"message -{role}" + (" -notice" if notice else "")
        super().__init__(classes=classes)
        self.role = role
        self.text = text
        self.versions: list[str] = []  # earlier versions of a regenerated reply, oldest first
        self.shown: int | None = None  # index into versions while paging, None: the newest
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        if self.role != "notice":
            yield Static(self._label(), classes="role")
        yield Markdown(self.text)

    def _label(self) -> str:
        label = "You" if self.role == "user" else "Reply"
        if self.versions:
            total = len(self.versions) + 1
            index = total if self.shown is None else self.shown + 1
            newest = "" if self.shown is None else " · the chat goes on from the newest"
            label += f" {index}/{total}  [dim](alt+← / alt+→){newest}[/dim]"
        return label

    async def new_version(self) -> None:
        """Keep the current text as an earlier version and start streaming a new one."""
        await self.finish_stream()
        self.versions.append(self.text)
        self.text, self.shown = "", None
        self.query_one(".role", Static).update(self._label())
        await self.markdown.update("")

    async def show_version(self, step: int) -> bool:
        """Page to an older (step < 0) or newer (step > 0) version; False at either end."""
        if not self.versions or self._stream is not None:
            return False
        current = len(self.versions) if self.shown is None else self.shown
        target = current + step
        if not 0 <= target <= len(self.versions):
            return False
        self.shown = None if target == len(self.versions) else target
        text = self.text if self.shown is None else self.versions[self.shown]
        self.query_one(".role", Static).update(self._label())
        await self.markdown.update(text.strip() or "_(no reply)_")
        return True

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

    async def finish_stream(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None

    async def finish(self) -> None:
        """End the stream, then render the whole text once (as oterm's ``finish_stream``)."""
        await self.finish_stream()
        await self.markdown.update(self.text.strip() or "_(no reply)_")
