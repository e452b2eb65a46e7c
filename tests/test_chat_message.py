"""A streamed reply renders what a full parse of its text renders (pure UI, no model)."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.widget import Widget

from tui.widgets.chat_message import ChatMessage


class MessagesApp(App[None]):
    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")


def rendered(message: ChatMessage) -> list[tuple[str, str]]:
    """Each block, depth first: its type and the text it shows."""
    out: list[tuple[str, str]] = []

    def walk(widget: Widget) -> None:
        for child in widget.children:
            shown = child.render()  # Content for text blocks; layout widgets render a blank
            out.append((type(child).__name__, getattr(shown, "plain", type(shown).__name__)))
            walk(child)

    walk(message)
    return out


REPLIES = [
    "Paris is the capital.\n\nIt lies on the *Seine*, and:\n\n- has museums\n- has cafés\n",
    "Title\n=====\n\nSome `code` and a fence:\n\n```python\nprint('hi')\n```\n\nDone.",
    # A link reference defined two blocks below its use: the incremental parse misses it.
    "See [the docs].\n\nMore text here.\n\n[the docs]: https://example.com\n",
]


@pytest.mark.parametrize("text", REPLIES)
async def test_streamed_reply_renders_like_a_full_parse(text: str) -> None:
    app = MessagesApp()
    async with app.run_test(size=(80, 60)) as pilot:
        transcript = app.query_one("#transcript")
        streamed, whole = ChatMessage("assistant"), ChatMessage("assistant", text.strip())
        await transcript.mount_all([streamed, whole])
        for start in range(0, len(text), 7):  # fragments that split words and lines
            await streamed.stream(text[start : start + 7])
        assert streamed.streaming
        await streamed.finish()
        await pilot.pause()
        assert not streamed.streaming
        assert streamed.text == text
        assert rendered(streamed) == rendered(whole)
        assert rendered(streamed)  # something was rendered at all


async def test_an_empty_reply_says_so() -> None:
    app = MessagesApp()
    async with app.run_test() as pilot:
        message = ChatMessage("assistant")
        await app.query_one("#transcript").mount(message)
        await message.stream("  \n")
        await message.finish()
        await pilot.pause()
        assert any("(no reply)" in text for _, text in rendered(message))
