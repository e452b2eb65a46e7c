"""Messages, panes and the app's screen updates, with scripted frames (pure UI, no model):
streamed replies render what a full parse renders, the screen matches a full re-layout, a
streaming pane's title is not redrawn on every frame, and the last reply's end is shown at once."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

import pytest
from chat_trees import ChatTrees
from test_tui_snapshots import ScriptedSource
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.widget import Widget

from core import ContextParams, SamplingParams
from core.chat import ChatConfig, ChatDelta, FrameStats
from tui.app import PanechatApp
from tui.bindings import APP_BINDINGS
from tui.config import AppConfig
from tui.messages import FrameUpdate
from tui.widgets.chat_message import ChatMessage
from tui.widgets.chat_pane import ChatPane


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


async def test_title_figures_refresh_at_most_once_an_interval_while_streaming() -> None:
    class QuickPane(ChatPane):
        TITLE_INTERVAL = 0.2  # the app's is 1 s

    class PaneApp(App[None]):
        def compose(self) -> ComposeResult:
            yield QuickPane("p", ChatConfig("Pane", "", SamplingParams()), 2048)

    app = PaneApp()
    async with app.run_test() as pilot:
        pane = app.query_one(QuickPane)
        title = pane.title_bar
        chats = ChatTrees()
        await pane.apply(
            replace(chats.turn("p", "Hello", "Hi"), generating=True, tokens_per_second=9)
        )
        assert title.generating and title.tokens_per_second == 9  # a start shows at once
        await pane.apply(replace(chats.stream("p", " there"), tokens_per_second=20))
        assert title.tokens_per_second == 9  # within the interval: not redrawn
        # The reply's widget draws the tree's text as it grows, each piece once.
        assert [m.text for m in pane.query(".-assistant")] == ["Hi there"]  # type: ignore[attr-defined]
        await asyncio.sleep(QuickPane.TITLE_INTERVAL)
        await pane.apply(replace(chats.stream("p", "."), tokens_per_second=21))
        assert title.tokens_per_second == 21
        await pane.apply(replace(chats.end("p"), tokens_per_second=22, context_used=40))
        assert not title.generating and title.tokens_per_second == 22  # an end shows at once
        assert title.context_used == 40
        await pilot.pause()
        assert pane.last_reply == "Hi there."


def four_pane_config() -> AppConfig:
    pane = ChatConfig("Pane", "", SamplingParams())
    return AppConfig(
        theme="panechat-dusk",
        model_path=None,
        template="auto",
        n_gpu_layers=0,
        context=ContextParams(n_ctx=2048, n_batch=64, n_seq_max=4),
        pane_defaults=pane,
        panes=tuple(replace(pane, name=f"Pane {i}") for i in range(4)),
    )


async def test_streamed_panes_show_what_a_full_relayout_shows() -> None:
    """Messages skip Textual's second layout pass and its repaint when they grow
    (``virtual_size`` in chat_message.py); the screen must still be up to date."""

    def screen_text(app: PanechatApp) -> str:
        svg = re.sub(r"(?s)<style.*?</style>", "", app.export_screenshot())
        return re.sub(r"<[^>]+>", "", svg).replace("&#160;", " ")

    app = PanechatApp(four_pane_config(), ScriptedSource(), persist_theme=False)
    async with app.run_test(size=(120, 30)) as pilot:
        chats = ChatTrees()
        for n in range(80):  # enough to scroll every pane, with paragraph breaks
            text = f" w{n}" + ("\n\n" if n % 23 == 22 else "")
            deltas = {p.pane_id: streamed(chats, p.pane_id, text, n == 0) for p in app.panes}
            app.post_message(FrameUpdate(deltas, FrameStats(frame=n, generating=4)))
            await pilot.pause(0.01)
        await pilot.pause(0.5)
        shown = screen_text(app)
        assert "w79" in shown and "w78" in shown
        for p in app.panes:
            for message in p.transcript.children:
                message.refresh(layout=True)
        app.screen.refresh(layout=True)
        await pilot.pause(0.5)
        assert screen_text(app) == shown


async def test_the_end_of_the_last_reply_is_shown_without_waiting_for_the_interval() -> None:
    # A long interval (2 s with 8 panes streaming), so that a busy machine's slow steps
    # cannot let frame 1's update fall due before it is checked.
    config = replace(four_pane_config(), update_interval=2.0)
    app = PanechatApp(config, ScriptedSource(), persist_theme=False)
    async with app.run_test(size=(120, 30)) as pilot:
        panes = app.panes
        chats = ChatTrees()

        def frame(
            n: int, streaming: int, *, started: bool = False, ended: bool = False
        ) -> FrameUpdate:
            deltas = {
                p.pane_id: streamed(chats, p.pane_id, f" w{n}", started, ended) for p in panes
            }
            return FrameUpdate(deltas, FrameStats(frame=n, generating=streaming))

        app.post_message(frame(0, 8, started=True))
        while (
            not app.frames.buffer.last_update
        ):  # the first frame after a quiet spell is shown at once
            await pilot.pause(0.01)
        app.post_message(frame(1, 8))  # with 8 streaming: in 2 s
        await pilot.pause()
        due = app.frames.buffer.due_at
        assert due is not None and due > time.monotonic()
        last = frame(2, 0, ended=True)
        app.post_message(last)
        while app.frames.seen[-1] is not last:
            await asyncio.sleep(0.001)
        # Due now, not at the interval frame 1 set: nothing more is coming.
        due = app.frames.buffer.due_at
        assert due is None or due <= time.monotonic()
        await pilot.pause()
        assert all(p.finished_replies == 1 for p in panes)
        assert all(p.last_reply == "w0 w1 w2" for p in panes)


@pytest.mark.parametrize(("interval", "streaming", "expected"), [(1.0, 8, 1.0), (1.0, 4, 0.5)])
async def test_screen_updates_follow_the_configured_interval(
    interval: float, streaming: int, expected: float
) -> None:
    """``[ui] update_interval`` is the time between screen updates with 8 panes streaming;
    fewer streaming panes update proportionally sooner."""
    config = replace(four_pane_config(), update_interval=interval)
    app = PanechatApp(config, ScriptedSource(), persist_theme=False)
    async with app.run_test(size=(120, 30)) as pilot:
        panes = app.panes
        chats = ChatTrees()

        def frame(n: int, *, started: bool = False) -> FrameUpdate:
            deltas = {p.pane_id: streamed(chats, p.pane_id, f" w{n}", started) for p in panes}
            return FrameUpdate(deltas, FrameStats(frame=n, generating=streaming))

        app.post_message(frame(0, started=True))
        while not app.frames.buffer.last_update:
            await pilot.pause(0.01)
        app.post_message(frame(1))
        while app.frames.buffer.due_at is None:
            await pilot.pause(0.01)
        assert app.frames.buffer.due_at - app.frames.buffer.last_update == pytest.approx(expected)
        assert app.frames.buffer.interval(1) == pytest.approx(interval / 8)  # one streaming pane


def streamed(
    chats: ChatTrees, pane_id: str, text: str, started: bool = False, ended: bool = False
) -> ChatDelta:
    """One frame of a reply streaming into a pane: its first (a turn taken), its next, or
    its last, as the engine's frames carry them."""
    if started:
        delta = chats.turn(pane_id, "Tell me a story", text)
    elif ended:
        return chats.end(pane_id, text=text)
    else:
        delta = chats.stream(pane_id, text)
    delta.generating = True
    return delta


def bottom_lines(app: PanechatApp) -> tuple[str, str]:
    """The status line and the footer as the screen shows them (Textual has no public way
    to read the screen's text but an SVG screenshot)."""
    strips = app.screen._compositor.render_strips()
    return strips[-2].text, strips[-1].text


async def test_the_footer_shows_whole_keys_at_any_width_and_always_the_palette_key() -> None:
    """Issue #25: at 155 columns the footer ended ``alt+b Choose f▏^p palette``."""
    app = PanechatApp(four_pane_config(), ScriptedSource(), persist_theme=False)
    async with app.run_test(size=(155, 30)) as pilot:
        whole = {f"{app.get_key_display(b)} {b.description}" for b in APP_BINDINGS}
        shown: dict[int, list[str]] = {}
        for width in (155, 120, 80, 155):  # and back: a wider terminal shows them again
            await pilot.resize_terminal(width, 30)
            await pilot.pause(0.1)
            footer = bottom_lines(app)[1]
            assert len(footer) == width
            keys, bar, palette = footer.partition("▏")
            assert bar and palette.strip() == "^p palette", footer
            shown[width] = keys.strip().split("  ")
            assert set(shown[width]) <= whole, footer  # every key whole, the last one too
        assert 4 <= len(shown[80]) < len(shown[120]) < len(shown[155])
        assert shown[80][0] == "^n New pane"  # the most used first, whatever is focused


async def test_the_status_line_before_the_first_reply_says_ready_and_the_kv_size() -> None:
    """Issue #25: before the first message it read ``KV 0/0``."""
    app = PanechatApp(
        four_pane_config(), ScriptedSource(), model_name="Gemma 3 270m", persist_theme=False
    )
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        status = bottom_lines(app)[0].strip()
        assert status == "Gemma 3 270m · CPU · ready · KV 0/2048"
        app.post_message(
            FrameUpdate({}, FrameStats(frame=1, batch_tokens=3, kv_used=30, kv_total=2048))
        )
        await pilot.pause(0.3)
        status = bottom_lines(app)[0].strip()
        assert status.startswith("Gemma 3 270m · CPU · generating 0 · batch 3 tok")
        assert status.endswith("KV 30/2048")
