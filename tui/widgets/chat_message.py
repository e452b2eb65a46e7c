"""One message in a pane's transcript: Markdown that can stream, under a role label."""

from __future__ import annotations

import re
from functools import cache

from markdown_it import MarkdownIt
from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import Markdown

from core.chat import Siblings
from core.text.printable import printable
from tui.widgets.reasoning_block import ReasoningBlock

#: A Markdown link reference definition, ``[label]: url``, which can change earlier blocks.
LINK_REFERENCE = re.compile(r"(?m)^ {0,3}\[[^\]]+\]:")
#: The single angle quotes around a message's place among its versions: "2/3" between them.
OPEN, CLOSE = "\u2039", "\u203a"


@cache
def shared_parser() -> MarkdownIt:
    """One parser for every message. Textual's default builds a new ``MarkdownIt`` for each
    streamed fragment (~0.8 ms each, a tenth of a frame's UI work with 8 panes streaming); a
    parser keeps no state between ``parse`` calls, so one can serve them all."""
    return MarkdownIt("gfm-like")


# Textual does not export its paragraph class; ``Markdown.BLOCKS`` is how it lets you swap one.
class SettledParagraph(Markdown.BLOCKS["paragraph_open"]):  # type: ignore[misc,valid-type,name-defined]
    """A paragraph whose growth asks for no second layout pass or repaint (see ChatMessage)."""

    virtual_size = Reactive(Size(0, 0), layout=False, repaint=False)


class ChatMessage(Markdown):
    """A user turn or a reply. Every screen update re-lays out and re-renders each message in
    view, so a message is built to be cheap to lay out (measured with 8 panes streaming):
    - it *is* the Markdown widget, and its role label is the border title: a container plus
      a label widget per message took ~20% of the UI's CPU time;
    - streamed text goes straight to ``Markdown.append`` inside the app's batched update. The
      app already gathers each pane's text per screen update; ``MarkdownStream`` would apply
      it again from a task of its own, after the batch, and every update would then be laid
      out twice (17% vs 15% of a core);
    - growing does not ask Textual for a second layout pass, nor for a second repaint
      (``virtual_size`` below): the pass that grew the message has already placed and
      painted it and everything after it (tested against a forced full re-layout).

    A message with siblings (other versions of it: an edited turn, a regenerated reply) says
    which one it is (``2/3`` between angle quotes); the pane pages through them."""

    virtual_size = Reactive(Size(0, 0), layout=False, repaint=False)
    BLOCKS = {**Markdown.BLOCKS, "paragraph_open": SettledParagraph}

    def __init__(
        self,
        role: str,
        text: str = "",
        *,
        notice: bool = False,
        message_id: int | None = None,
        siblings: Siblings | None = None,
    ) -> None:
        classes = f"message -{role}" + (" -notice" if notice else "")
        text = printable(text)  # untrusted: the model's, the user's, a saved session's
        super().__init__(text, classes=classes, parser_factory=shared_parser)
        self.role = role
        self.text = text
        self.message_id = message_id  # its id in the pane's ChatTree (None: a notice)
        self.thoughts: ReasoningBlock | None = None  # a reply's reasoning, shown above it
        self.streaming = False
        self.versions = siblings
        self.editing = False
        if role != "notice":
            self.border_title = self._label()

    @classmethod
    def for_notice(cls, text: str) -> ChatMessage:
        """A line the pane adds that no one said: a notice, the persona's system prompt."""
        return cls("notice", text, notice=True)

    def _label(self) -> str:
        label = "You" if self.role == "user" else "Reply"
        if self.versions is not None and self.versions.count > 1:
            label += f" {OPEN} {self.versions.index}/{self.versions.count} {CLOSE}"
        if self.editing:
            label += "  [dim]editing: Enter sends a new version, Esc keeps this one[/dim]"
        return label

    def show_editing(self, editing: bool) -> None:
        self.editing = editing
        self.border_title = self._label()

    @property
    def reasoning(self) -> str:
        return self.thoughts.text if self.thoughts is not None else ""

    async def stream(self, fragment: str) -> None:
        """Add streamed text: the app calls this once per pane per screen update."""
        if not fragment:
            return
        if not self.text:
            fragment = fragment.lstrip()
            if not fragment:
                return
        fragment = printable(fragment)
        self.streaming = True
        self.text += fragment
        await self.append(fragment)

    async def show_text(self, text: str) -> None:
        """Show another text (the engine's tree changed this message)."""
        self.text = printable(text)
        await self.update(self.text)

    async def finish(self, text: str | None = None) -> None:
        """End the stream; ``text``: the reply as the engine kept it (its answer), shown in
        place of the streamed text where they differ. What was streamed is otherwise already
        what a full parse gives, with one exception rendered again here: ``Markdown.append``
        re-parses from the start of the last block only, so a link reference defined below
        its use would not resolve. Re-rendering every reply (as oterm's ``finish_stream``
        does) rebuilds all its blocks: ~35 ms of UI time when 8 panes finish together."""
        self.streaming = False
        if text is not None and printable(text).strip() != self.text.strip():
            self.text = printable(text).strip()
            if self.text:
                await self.update(self.text)
                return
        if not self.text.strip():
            await self.update("_(no reply)_")
        elif LINK_REFERENCE.search(self.text):
            await self.update(self.text.strip())
